"""The two engine graphs, built from a classifier's forward graph.

A *forward graph* (`ForwardGraph`) takes ``image`` ``[B, 3, H, W]`` (RGB in [0, 1];
normalisation and any layout change are inside) and returns ``logits`` ``[B, C]`` and
``activations`` ``[B, K, h, w]`` (the target's output read as a map: channels-last and
token outputs are mapped inside the graph, see `feature_map`). From it:

* ``features`` = forward + class choice (``-1`` -> top-1, inside the graph) + the head's
  backward (`backward.head_backward`) with respect to the target tensor, read through the
  same map: ``(image, class_index) -> (logits, activations, gradients, resolved_class_index)``.
  Tensors of the head that do not depend on the target (a skip around it) are held at
  their forward values, so ``gradients`` is the partial derivative autograd gives at the
  hooked output;
* ``scores`` = ``softmax(f(image[image_index] * up(masks)))[class_index]`` with ``up``
  bilinear, half-pixel centres, inside the graph.

Both declare true shapes on every input and output: the batch axes symbolic (``batch``;
``images`` and ``masks`` in ``scores``), every other axis concrete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UnionCamError
from ..method.ops import bilinear_matrix
from ..sources.target_map import TargetMap
from .backward import bypass_join, head_backward, head_nodes
from .feature_map import emit_feature_map
from .onnx_graph import Emitter, GraphReader, TensorProto, helper, onnx, run_onnx, tensor_info

FEATURES_INPUTS = ("image", "class_index")
FEATURES_OUTPUTS = ("logits", "activations", "gradients", "resolved_class_index")
SCORES_INPUTS = ("image", "masks", "image_index", "class_index")
SCORES_OUTPUTS = ("probs",)
RESERVED = set(FEATURES_INPUTS + FEATURES_OUTPUTS + SCORES_INPUTS + SCORES_OUTPUTS)
FIXED_BATCH = ("exported for a fixed batch of 1; re-export it with a dynamic batch axis (torch.onnx.export(..., "
               "dynamo=True, dynamic_shapes=({0: torch.export.Dim('batch')},)), or dynamic_axes with the TorchScript "
               "exporter)")


@dataclass
class ForwardGraph:
    """A classifier as one ONNX graph: ``image -> (logits, activations)``.

    Attributes:
        model: the ``ModelProto`` (weights inline or in external data beside ``directory``).
        target: the tensor the head consumes and the backward differentiates (``activations``
            itself, its NHWC original, or the copy of a torch module's output).
        target_layout: ``"nchw"``, ``"nhwc"`` when ``activations`` is a transpose of it, or
            ``"tokens"`` (see ``target_map``).
        input_size: (H, W).
        directory: where the model's external data lies (None: inline).
        shapes: static shapes of head tensors (``None`` for the batch axis), by `measure`.
        label: the target layer as the user named it (for messages).
        float_tensors: names of the floating-point tensors among them.
        constants: values of head inputs computed from constants alone (e.g. a Pad's
            pads built by Concat/Cast nodes), or integer shape arithmetic that is the same at
            batch 1 and 2, measured with the shapes.
        target_map: how the target reads as ``activations`` (torch models; None: by
            ``target_layout``, ``nchw`` or ``nhwc``).
        bypass: where a path around the target joins the head (a node name), or None:
            the gradient is then the partial derivative with that path held fixed.
    """

    model: "onnx.ModelProto"
    target: str
    target_layout: str
    input_size: tuple[int, int]
    directory: Path | None = None
    label: str | None = None
    shapes: dict[str, tuple] = field(default_factory=dict)
    float_tensors: set[str] = field(default_factory=set)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    target_map: TargetMap | None = None
    bypass: str | None = None

    @property
    def num_classes(self) -> int:
        return int(self.shapes["logits"][1])

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.shapes["activations"][1:])

    def measure(self) -> None:
        """Run the graph at batch 1 and 2 and record every head tensor's shape and type.

        Raises a one-line error where the network rejects the input size, the output is
        not ``[B, classes]``, or ``activations`` is not 4-D.
        """
        reader = GraphReader(self.model.graph, self.directory)
        self.bypass = bypass_join(reader, "image", self.target, "logits")
        candidates, _ = head_nodes(reader, self.target, "logits", set(reader.producer) | {self.target})
        names = ["logits", "activations", self.target]
        for node in candidates:
            names += [n for n in (*node.input, *node.output) if n and not reader.is_constant(n)]
        names = list(dict.fromkeys(names))
        height, width = self.input_size
        runs = []
        for batch in (1, 2):
            image = np.random.default_rng(batch).random((batch, 3, height, width)).astype(np.float32)
            try:
                runs.append(run_onnx(self.model, {"image": image}, names, self.directory))
            except Exception as exc:  # ONNX Runtime's own error types
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if batch == 2:
                    raise UnionCamError(f"the graph runs one image but not two ({first[:200]}): it was {FIXED_BATCH}") \
                        from None
                raise UnionCamError(f"the network rejects input size {height}x{width} at batch {batch} "
                                    f"({first[:300]})") from None
        from_image = reader.reachable_from(["image"])
        from_values = reader.reachable_from(["image"], values_only=True)
        for name in names:
            one, two = np.asarray(runs[0][name]), np.asarray(runs[1][name])
            if name not in from_image or (name not in from_values and one.dtype.kind in "iu"
                                          and one.shape == two.shape and np.array_equal(one, two)):
                # constants, and shape arithmetic that the batch size does not change (a Slice's
                # ends from Shape(x)[1] in Swin's window padding)
                self.constants[name] = one
            if one.ndim != two.ndim:
                raise UnionCamError(f"tensor {name!r} changes rank with the batch size")
            self.shapes[name] = tuple(None if a != b else int(a) for a, b in zip(one.shape, two.shape))
            if one.dtype.kind == "f":
                self.float_tensors.add(name)
        logits = self.shapes["logits"]
        if len(logits) == 2 and logits[0] == 1 and "logits" in self.float_tensors:
            raise UnionCamError(f"the graph's logits stay [1, classes] when it is fed 2 images: it was {FIXED_BATCH}")
        if len(logits) != 2 or logits[0] is not None or "logits" not in self.float_tensors:
            raise UnionCamError(f"the model's output must be float logits [batch, classes]; it is {_show(logits)}")
        acts = self.shapes["activations"]
        if len(acts) != 4 or acts[0] is not None:
            raise UnionCamError(f"target {self.target!r} has shape {_show(self.shapes[self.target])}; it must be a "
                                "4-D feature map [batch, K, h, w]")
        for name, shape in self.shapes.items():
            if name in self.float_tensors and sum(d is None for d in shape) > 1:
                raise UnionCamError(f"head tensor {name!r} {_show(shape)}: only one axis may change with the batch")


def _show(shape) -> str:
    return "[" + ", ".join("batch" if d is None else str(d) for d in shape) + "]"


def _declare(graph, inputs: dict[str, tuple], outputs: dict[str, tuple]) -> None:
    """Replace the graph's input/output declarations by true shapes; drop stale value_info."""
    del graph.input[:]
    del graph.output[:]
    del graph.value_info[:]
    for name, (elem, dims) in inputs.items():
        graph.input.append(tensor_info(name, elem, dims))
    for name, (elem, dims) in outputs.items():
        graph.output.append(tensor_info(name, elem, dims))


def _prune(graph, outputs: list[str]) -> None:
    """Keep only the nodes and initializers the outputs need."""
    reader = GraphReader(graph)
    needed = set()
    for name in outputs:
        needed |= reader.ancestors(name)
    keep = [n for n in graph.node if any(o in needed for o in n.output)]
    del graph.node[:]
    graph.node.extend(keep)
    used = {i for n in keep for i in n.input} | set(outputs)
    initializers = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def _copy(model) -> "onnx.ModelProto":
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _opset(model) -> int:
    from .onnx_graph import model_opset

    return model_opset(model)


def features_graph(forward: ForwardGraph) -> "onnx.ModelProto":
    """``features``: forward pass, top-1 choice and the head's backward, in one graph."""
    model = _copy(forward.model)
    graph = model.graph
    emit = Emitter(_opset(model), prefix="uc_f/")
    classes = forward.num_classes
    top1 = emit.op("ArgMax", ["logits"], axis=1, keepdims=0, select_last_index=0)
    wanted = emit.op("Less", ["class_index", emit.const(0, np.int64)])
    emit.nodes.append(helper.make_node("Where", [wanted, top1, "class_index"], ["resolved_class_index"],
                                       name="uc_f/resolve_class"))
    chosen = emit.unsqueeze("resolved_class_index", [1])
    seed = emit.mask(emit.op("Equal", [emit.ints(np.arange(classes).reshape(1, classes)), chosen]))
    grad = head_backward(graph, forward.target, "logits", seed, forward.shapes, forward.float_tensors, emit,
                         forward.directory, forward.constants)
    if forward.target_map is not None:
        emit_feature_map(emit, grad, forward.target_map, output="gradients")
    else:
        if forward.target_layout == "nhwc":
            grad = emit.op("Transpose", [grad], perm=[0, 3, 1, 2])
        emit.nodes.append(helper.make_node("Identity", [grad], ["gradients"], name="uc_f/gradients"))
    graph.node.extend(emit.nodes)
    graph.initializer.extend(emit.initializers)
    k, h, w = forward.feature_shape
    height, width = forward.input_size
    _declare(graph,
             {"image": (TensorProto.FLOAT, ["batch", 3, height, width]), "class_index": (TensorProto.INT64, ["batch"])},
             {"logits": (TensorProto.FLOAT, ["batch", classes]),
              "activations": (TensorProto.FLOAT, ["batch", k, h, w]),
              "gradients": (TensorProto.FLOAT, ["batch", k, h, w]),
              "resolved_class_index": (TensorProto.INT64, ["batch"])})
    _prune(graph, list(FEATURES_OUTPUTS))
    graph.name = "unioncam_features"
    return model


def scores_graph(forward: ForwardGraph) -> "onnx.ModelProto":
    """``scores``: ``softmax(f(image[image_index] * up(masks)))[class_index]``."""
    model = _copy(forward.model)
    graph = model.graph
    emit = Emitter(_opset(model), prefix="uc_s/")
    height, width = forward.input_size
    k, h, w = forward.feature_shape
    # the bilinear upsampling (align_corners=False, as ONNX Resize linear / half_pixel) as two
    # constant matmuls, rows then columns: the same numbers as Resize (within float rounding),
    # and OpenVINO runs them faster (a bf16 masked pass of Lite0: 2.25 -> 1.68 ms; README: Speed)
    rows = emit.op("MatMul", [emit.const(bilinear_matrix(h, height), hint="upsample_rows"), "masks"])
    up = emit.op("MatMul", [rows, emit.const(bilinear_matrix(w, width).T, hint="upsample_columns")],
                 hint="upsampled_masks")
    picked = emit.op("Gather", ["image", "image_index"], axis=0)
    masked = emit.op("Mul", [picked, up], hint="masked_image")
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == "image":
                node.input[i] = masked
    network = list(graph.node)
    del graph.node[:]
    graph.node.extend(emit.nodes + network)  # the masking runs before the network
    emit.nodes = []
    probs = emit.op("Softmax", ["logits"], axis=1)
    row = emit.op("GatherElements", [probs, emit.unsqueeze("class_index", [1])], axis=1)
    emit.nodes.append(helper.make_node("Squeeze", [row, emit.ints([1])], ["probs"], name="uc_s/probs"))
    graph.node.extend(emit.nodes)
    graph.initializer.extend(emit.initializers)
    _declare(graph,
             {"image": (TensorProto.FLOAT, ["images", 3, height, width]),
              "masks": (TensorProto.FLOAT, ["masks", 1, h, w]),
              "image_index": (TensorProto.INT64, ["masks"]),
              "class_index": (TensorProto.INT64, ["masks"])},
             {"probs": (TensorProto.FLOAT, ["masks"])})
    _prune(graph, list(SCORES_OUTPUTS))
    graph.name = "unioncam_scores"
    return model
