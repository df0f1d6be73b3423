"""``ForwardFromOnnx``: ONNX classifiers from any framework, read, checked and wrapped
as a forward graph.

An ONNX file is explainable when it has one float image input (NCHW, or NHWC as graphs
converted from TensorFlow/Keras often declare) and one 2-D float output. Around the
user's graph we put: the mean/std normalisation of [0, 1] RGB (``--mean/--std``), a
transpose to NHWC where the model takes NHWC, the logits before a final
Softmax/LogSoftmax, and the chosen intermediate tensor as ``activations``.
Needs the ``export`` extra (onnx).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError, UnionCamError, require
from ..manifest import sha256_file
from ..sources import ModelSource
from .graphs import RESERVED, ForwardGraph
from .onnx_graph import MIN_OPSET, GraphReader, TensorProto, helper, model_opset, rename_tensor, run_onnx
from .onnx_targets import TargetTensor, default_target, target_tensors

onnx = require("onnx", "export")

FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)


@dataclass
class OnnxClassifier:
    """An ONNX classifier ready to export.

    Attributes:
        name: the file's stem.
        forward: the forward graph (``image -> logits, activations``).
        original: the user's model, unchanged (for the parity check).
        input_name: its image input; logits_name: the logits tensor in it.
        layout: ``nchw`` or ``nhwc`` (of the user's input).
        mean, std: normalisation applied before the user's graph.
        target_layer: the target tensor's name.
        sha256: the file's hash.
        source_info: what the manifest records.
    """

    name: str
    forward: ForwardGraph
    original: "onnx.ModelProto"
    input_name: str
    logits_name: str
    layout: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    target_layer: str
    sha256: str
    source_info: dict


def read_model(path: Path) -> "onnx.ModelProto":
    """Load an ONNX file (external data included), upgraded to opset 13 if older."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ONNX file {path} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None
    try:
        opset = model_opset(model)
    except UnionCamError:
        raise ModelError(f"{path}: imports no default ONNX opset") from None
    if opset < MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, MIN_OPSET)
        except Exception as exc:
            raise ModelError(f"{path}: opset {opset} could not be upgraded to {MIN_OPSET} ({exc})") from None
    return model


def _dims(value) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value.type.tensor_type.shape.dim]


def image_input(model, path) -> tuple[str, list]:
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelError(f"{path} is not an image classifier: it takes {len(inputs)} inputs "
                         f"({', '.join(i.name for i in inputs)}); one image input is needed")
    value = inputs[0]
    dims = _dims(value)
    if value.type.tensor_type.elem_type not in FLOAT_TYPES or len(dims) != 4:
        raise ModelError(f"{path}: input {value.name} is not a 4-D float image tensor ({dims})")
    if value.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ModelError(f"{path}: input {value.name} must be float32")
    return value.name, dims


def detect_layout(dims: list, given: str | None, path) -> str:
    if given:
        return given
    channels_first, channels_last = dims[1] == 3, dims[3] == 3
    if channels_first and not channels_last:
        return "nchw"
    if channels_last and not channels_first:
        return "nhwc"
    if channels_first:
        return "nchw"
    raise ModelError(f"{path}: cannot tell the input layout from its shape {dims}; pass --layout nchw or nhwc")


def logits_output(model, path) -> str:
    """The single 2-D float output, or the input of the Softmax that produces it."""
    outputs = [o for o in model.graph.output
               if o.type.tensor_type.elem_type in FLOAT_TYPES and len(_dims(o)) == 2]
    if len(outputs) != 1:
        listed = ", ".join(f"{o.name} {_dims(o)}" for o in model.graph.output)
        raise ModelError(f"{path} is not a classifier: it needs exactly one 2-D float output [batch, classes]; "
                         f"outputs: {listed}")
    name = outputs[0].name
    reader = GraphReader(model.graph)
    node = reader.producer.get(name)
    while node is not None and node.op_type == "Identity":
        node = reader.producer.get(node.input[0])
    if node is not None and node.op_type in ("Softmax", "LogSoftmax"):
        return node.input[0]  # explain the logits before the softmax
    return name


def tensor_names(model) -> list[str]:
    return [o for node in model.graph.node for o in node.output if o]


def check_target(model, target: str, path) -> None:
    names = tensor_names(model)
    if target not in names:
        close = difflib.get_close_matches(target, names, n=4, cutoff=0.4)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise UnionCamError(f"target tensor {target!r} is not computed in {path}{hint}; "
                            f"list candidates with: unioncam-rt inspect {path}")


def _fix_batch_one_reshapes(model) -> None:
    """A graph exported at batch 1 often reshapes to ``[1, ...]``: make that ``[0, ...]``
    (copy the batch dimension) so the graph runs at any batch."""
    reader = GraphReader(model.graph)
    for node in model.graph.node:
        if node.op_type != "Reshape" or any(a.name == "allowzero" and a.i for a in node.attribute):
            continue
        shape = reader.initializers.get(node.input[1])
        if shape is None:
            continue
        values = onnx.numpy_helper.to_array(shape)
        if values.ndim == 1 and len(values) >= 2 and values[0] == 1:
            fixed = values.copy()
            fixed[0] = 0
            shape.CopyFrom(onnx.numpy_helper.from_array(fixed.astype(values.dtype), shape.name))


def forward_graph(model, input_name: str, dims: list, logits: str, target: str, input_size, mean, std,
                  layout: str, target_layout: str) -> ForwardGraph:
    """Wrap the user's graph: ``image`` (NCHW, [0, 1]) -> normalise -> (transpose) -> model."""
    graph = model.graph
    for name in list(dict.fromkeys([*tensor_names(model), *(i.name for i in graph.input),
                                    *(i.name for i in graph.initializer)])):
        if name in RESERVED or name.startswith(("uc_f/", "uc_s/", "uc_in/")):
            rename_tensor(graph, name, f"user/{name}")
            input_name = f"user/{name}" if input_name == name else input_name
            logits = f"user/{name}" if logits == name else logits
            target = f"user/{name}" if target == name else target
    if dims[0] == 1:
        _fix_batch_one_reshapes(model)
    for value in list(graph.input):
        if value.name == input_name:
            graph.input.remove(value)
    height, width = input_size
    graph.input.append(helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, height, width]))
    mean_c = onnx.numpy_helper.from_array(np.asarray(mean, np.float32).reshape(1, 3, 1, 1), "uc_in/mean")
    std_c = onnx.numpy_helper.from_array(np.asarray(std, np.float32).reshape(1, 3, 1, 1), "uc_in/std")
    graph.initializer.extend([mean_c, std_c])
    prefix = [helper.make_node("Sub", ["image", "uc_in/mean"], ["uc_in/centred"], name="uc_in/sub"),
              helper.make_node("Div", ["uc_in/centred", "uc_in/std"],
                               ["uc_in/normalised" if layout == "nhwc" else input_name], name="uc_in/div")]
    if layout == "nhwc":
        prefix.append(helper.make_node("Transpose", ["uc_in/normalised"], [input_name], perm=[0, 2, 3, 1],
                                       name="uc_in/to_nhwc"))
    suffix = [helper.make_node("Identity", [logits], ["logits"], name="uc_out/logits")]
    if target_layout == "nhwc":
        suffix.append(helper.make_node("Transpose", [target], ["activations"], perm=[0, 3, 1, 2], name="uc_out/acts"))
    else:
        suffix.append(helper.make_node("Identity", [target], ["activations"], name="uc_out/acts"))
    nodes = prefix + list(graph.node) + suffix
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info("logits", TensorProto.FLOAT, None),
                         helper.make_tensor_value_info("activations", TensorProto.FLOAT, None)])
    del graph.value_info[:]
    return ForwardGraph(model, target=target, target_layout=target_layout, input_size=(height, width))


def list_tensors(path: Path, input_size=None, layout: str | None = None) -> list[TargetTensor]:
    """Every 4-D float tensor computed from the image on the way to the logits, in graph
    order, with its layout: the candidate target layers (see `onnx_targets`)."""
    model = read_model(path)
    input_name, dims = image_input(model, path)
    layout = detect_layout(dims, layout, path)
    size = _input_size(dims, layout, input_size, path)
    logits = logits_output(model, path)
    reader = GraphReader(model.graph)
    needed = reader.ancestors(logits)
    names = [o for node in model.graph.node for o in node.output if o in needed and reader.constant(o) is None]
    feed = np.zeros((1, 3, *size) if layout == "nchw" else (1, *size, 3), np.float32)
    values = run_onnx(model, {input_name: feed}, names)  # weights inline: a temporary file anywhere
    return target_tensors(model, input_name, layout, logits, values, size)


def _input_size(dims, layout, given, path) -> tuple[int, int]:
    spatial = dims[2:4] if layout == "nchw" else dims[1:3]
    if given:
        return tuple(given)
    if all(isinstance(d, int) and d > 0 for d in spatial):
        return int(spatial[0]), int(spatial[1])
    raise ModelError(f"{path}: the input declares no fixed size ({dims}); pass --input-size H,W")


def load_onnx_classifier(source: ModelSource) -> OnnxClassifier:
    """Read an ONNX classifier and wrap it as a forward graph (shapes not yet measured)."""
    path = Path(source.model)
    model = read_model(path)
    original = onnx.ModelProto()
    original.CopyFrom(model)
    input_name, dims = image_input(model, path)
    layout = detect_layout(dims, source.layout, path)
    input_size = _input_size(dims, layout, source.input_size, path)
    logits = logits_output(model, path)
    if source.target_layer is not None:
        check_target(model, source.target_layer, path)
    target, target_layout = choose_target(path, input_size, layout, source.target_layer, source.target_layout)
    mean, std = source.resolved_mean_std()
    forward = forward_graph(model, input_name, dims, logits, target, input_size, mean, std, layout,
                            target_layout)
    sha = sha256_file(path)
    info = {"kind": "onnx", "file": path.name, "sha256": sha}
    return OnnxClassifier(path.stem, forward, original, input_name, logits, layout, mean, std, target, sha, info)


def choose_target(path: Path, input_size, layout: str, given: str | None, given_layout: str | None) -> tuple[str, str]:
    """The target tensor and its layout: ``given`` (checked: a 4-D feature map with more
    than one position, computed from the image) or the default, the last spatial feature
    map before the global pooling."""
    candidates = list_tensors(path, input_size, layout)
    default = default_target(candidates)
    suggestion = f"; e.g. the last spatial feature map {default.describe()}" if default else ""
    if given is None:
        if default is None:
            raise ModelError(f"{path}: no 4-D feature map with more than one position before the logits; pass "
                             "--target-layer (see unioncam-rt inspect) or a larger --input-size")
        return default.name, given_layout or default.layout
    found = next((t for t in candidates if t.name == given), None)
    if found is None:
        raise ModelError(f"target tensor {given!r} must be a 4-D feature map (float, computed from the image, on the "
                         f"way to the logits); it is a constant, of another rank, or off that path{suggestion}; "
                         f"list candidates with: unioncam-rt inspect {path}")
    if given_layout is not None:
        found = TargetTensor(found.name, found.op, found.shape, given_layout)
    if not found.layout:
        raise ModelError(f"target tensor {found.describe()}: cannot tell its layout; pass --target-layout nchw or nhwc")
    if found.positions <= 1:
        raise ModelError(f"target tensor {found.describe()} has one spatial position (it comes after the global "
                         f"pooling): a CAM needs a spatial feature map{suggestion}")
    return found.name, found.layout
