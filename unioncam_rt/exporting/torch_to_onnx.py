"""``OnnxFromTorch``: a torch classifier's forward graph, ``image -> (logits, activations)``.

The whole network (normalisation included) is traced once with torch's TorchScript ONNX
exporter; the target module's output is caught by a forward hook, so any ``forward`` code
works. The rest of the network reads it through a ``TargetCopy`` marker (see
`unioncam_rt.sources.torch_source.TargetCopy`), which becomes an ``Identity`` whose output
is the tensor the head's backward differentiates (`unioncam_rt.exporting.backward`): what
autograd gives at the hooked output, even inside a residual block. The output itself,
read as ``[B, K, h, w]`` (`feature_map`: channels-last and token outputs too), is the
graph's ``activations``.
"""

from __future__ import annotations

import inspect
import io
import warnings
from contextlib import contextmanager

from ..errors import UnionCamError, require
from .feature_map import emit_feature_map
from .graphs import ForwardGraph
from .onnx_graph import Emitter, model_opset, rename_tensor

torch = require("torch", "export")
onnx = require("onnx", "export")


def _adaptive_pool_matrix(size_in: int, size_out: int):
    """``[size_out, size_in]``: row i averages adaptive pooling's window i."""
    matrix = torch.zeros(size_out, size_in)
    for i in range(size_out):
        start, stop = (i * size_in) // size_out, -(-((i + 1) * size_in) // size_out)
        matrix[i, start:stop] = 1.0 / (stop - start)
    return matrix


class _AdaptiveAvgPoolAsMatMul(torch.nn.Module):
    """``AdaptiveAvgPool2d`` for one input size as two constant matrix products, which the
    TorchScript exporter writes (as MatMul) where the output size is not a factor of the
    input size (VGG's and AlexNet's pools at small inputs)."""

    def __init__(self, size_in: tuple[int, int], size_out: tuple[int, int]):
        super().__init__()
        self.register_buffer("rows", _adaptive_pool_matrix(size_in[0], size_out[0]))
        self.register_buffer("cols", _adaptive_pool_matrix(size_in[1], size_out[1]).T.contiguous())

    def forward(self, x):
        return torch.matmul(torch.matmul(self.rows, x), self.cols)


@contextmanager
def exportable_adaptive_pools(classifier):
    """Within the block, every ``AdaptiveAvgPool2d`` whose output size does not divide its
    input size (at the classifier's input size) runs as `_AdaptiveAvgPoolAsMatMul`."""
    seen: dict[torch.nn.Module, tuple[int, int]] = {}
    pools = [m for m in classifier.modules() if isinstance(m, torch.nn.AdaptiveAvgPool2d)]

    def record(module, inputs, output):
        seen.setdefault(module, tuple(inputs[0].shape[-2:]))

    handles = [m.register_forward_hook(record) for m in pools]
    try:
        with torch.no_grad():
            classifier(torch.zeros(1, 3, *classifier.input_size))
    finally:
        for handle in handles:
            handle.remove()
    replaced = []
    for module, size_in in seen.items():
        out = module.output_size
        out = (out, out) if isinstance(out, int) else tuple(o if o is not None else i for o, i in zip(out, size_in))
        if any(i % o for i, o in zip(size_in, out)):
            module.forward = _AdaptiveAvgPoolAsMatMul(size_in, out).forward
            replaced.append(module)
    try:
        yield
    finally:
        for module in replaced:
            del module.forward


@contextmanager
def without_attention_fast_path():
    """Within the block, ``nn.MultiheadAttention`` runs its composite form: without
    gradients it would run the fused ``_native_multi_head_attention`` (torchvision's ViT),
    which the ONNX exporter does not translate."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


class _WithActivations(torch.nn.Module):
    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, image):
        return self.classifier.logits_and_activations(image)


def forward_graph_from_torch(classifier, opset: int = 17) -> ForwardGraph:
    """Trace ``classifier`` (a `TorchClassifier`) into a `ForwardGraph`."""
    height, width = classifier.input_size
    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: no onnxscript needed, stable op set
    buffer = io.BytesIO()
    module = _WithActivations(classifier).eval()
    # Without grad, max_pool2d traces as MaxPool with one output (no Indices).
    with warnings.catch_warnings(), torch.no_grad(), exportable_adaptive_pools(classifier), \
            without_attention_fast_path():
        warnings.simplefilter("ignore")  # tracer warnings about static shapes are expected here
        try:
            torch.onnx.export(
                module, (torch.rand(2, 3, height, width),), buffer, input_names=["image"],
                output_names=["logits", "activations"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "activations": {0: "batch"}},
                opset_version=opset, do_constant_folding=True, **kwargs)
        except UnionCamError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnionCamError(f"torch could not export {classifier.name} to ONNX ({type(exc).__name__}: {first[:300]})") from None
    model = onnx.load_from_string(buffer.getvalue())
    target = _unmark_target(model)
    target_map = classifier.target_map
    if target_map is not None and target_map.layout != "nchw":
        rename_tensor(model.graph, "activations", TARGET_OUTPUT)
        for value in model.graph.output:
            if value.name == TARGET_OUTPUT:
                value.CopyFrom(onnx.helper.make_tensor_value_info("activations", onnx.TensorProto.FLOAT, None))
        emit = Emitter(model_opset(model), prefix="uc_t/")
        emit_feature_map(emit, TARGET_OUTPUT, target_map, output="activations")
        model.graph.node.extend(emit.nodes)
        model.graph.initializer.extend(emit.initializers)
    return ForwardGraph(model, target=target, target_layout=target_map.layout if target_map else "nchw",
                        input_size=(height, width), label=classifier.target_layer, target_map=target_map)


TARGET_OUTPUT = "uc_t/target_output"  # the hooked output where it is not already [B, K, h, w]
MARKER = ("unioncam", "TargetCopy")


def _unmark_target(model) -> str:
    """Turn the one ``TargetCopy`` marker into an ``Identity``; returns its output (the tensor
    the rest of the network reads the target through)."""
    markers = [n for n in model.graph.node if (n.domain, n.op_type) == MARKER]
    if len(markers) != 1:
        raise UnionCamError(f"the traced graph holds {len(markers)} copies of the target's output, not 1; choose a "
                            "module that runs exactly once")
    node = markers[0]
    node.op_type, node.domain = "Identity", ""
    del node.attribute[:]
    for entry in list(model.opset_import):
        if entry.domain == MARKER[0]:
            model.opset_import.remove(entry)
    if node.input[0] != "activations":  # the exporter names the hooked output after the graph output
        raise UnionCamError(f"the traced graph reads the target through {node.input[0]!r}, not its output")
    return node.output[0]
