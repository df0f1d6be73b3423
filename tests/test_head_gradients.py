"""Every head operator family: the exported features graph (ONNX Runtime) against torch
autograd, for a torch module exported directly and for the same module shipped as ONNX."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from unioncam_rt.compare import compare  # noqa: E402
from unioncam_rt.exporting.pipeline import ExportConfig, export_model  # noqa: E402
from unioncam_rt.runtime.exported import ExportedEngine  # noqa: E402
from unioncam_rt.sources.torch_source import build_classifier  # noqa: E402

from . import heads  # noqa: E402
from .independent import logits_and_leaf_activations  # noqa: E402

TOL = 1e-4
SIZE = (16, 16)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def autograd(net, images, classes):
    """Logits, activations and d logit[c] / d A by autograd, independent of the package."""
    model = build_classifier(net, target_layer="features", input_size=SIZE)
    x = torch.from_numpy(images)
    logits, acts = logits_and_leaf_activations(model, x)
    resolved = torch.where(torch.from_numpy(classes) < 0, logits.argmax(1), torch.from_numpy(classes))
    (grads,) = torch.autograd.grad(logits.gather(1, resolved[:, None]).sum(), acts)
    return logits.detach().numpy(), acts.detach().numpy(), grads.numpy(), resolved.numpy()


def check_against_autograd(directory, net, backend="onnxruntime"):
    if backend == "openvino":
        pytest.importorskip("openvino")
        engine = ExportedEngine(directory, backend="openvino")  # fp32 forced
    else:
        engine = ExportedEngine(directory, providers=["CPUExecutionProvider"])
    images = np.random.default_rng(4).random((3, 3, *SIZE)).astype(np.float32)
    for classes in (np.array([-1, -1, -1]), np.array([0, 2, 4])):
        got = engine.features(images, classes)
        logits, acts, grads, resolved = autograd(net, images, classes)
        for name, want in (("logits", logits), ("activations", acts), ("gradients", grads)):
            result = compare(name, getattr(got, name), want, TOL)
            assert result.ok, result
        assert got.class_index.tolist() == resolved.tolist()


def graph_ops(directory) -> set[str]:
    ops = set()
    for name in ("features.onnx", "scores.onnx"):
        ops |= {n.op_type for n in onnx.load(str(directory / name), load_external_data=False).graph.node}
    return ops


@pytest.mark.parametrize("head", sorted(heads.HEADS))
def test_torch_module_head_gradients_match_autograd(tmp_path, head):
    net = heads.build(head)
    export_model(ExportConfig(net, tmp_path / head, target_layer="features", input_size=SIZE))
    check_against_autograd(tmp_path / head, net)
    assert graph_ops(tmp_path / head) <= ALLOWED_OPS, graph_ops(tmp_path / head) - ALLOWED_OPS


@pytest.mark.parametrize("head", sorted(heads.HEADS))
def test_openvino_runs_every_head_gradient_like_autograd(tmp_path, head):
    """OpenVINO's CPU plugin once gave VGG16's head gradient uncorrelated with autograd: a
    square weight shared by a forward Gemm (transB=1) and its backward Gemm (transB=0) was
    packed once for both. Every head runs through OpenVINO fp32 too."""
    net = heads.build(head)
    export_model(ExportConfig(net, tmp_path / head, target_layer="features", input_size=SIZE))
    check_against_autograd(tmp_path / head, net, backend="openvino")


@pytest.mark.parametrize("head", sorted(heads.HEADS))
def test_the_same_module_as_an_onnx_classifier(tmp_path, head):
    net = heads.build(head)
    path = tmp_path / f"{head}.onnx"
    torch.onnx.export(heads.WithFeatures(net), (torch.rand(2, 3, *SIZE),), str(path), input_names=["input"],
                      output_names=["out", "feat"], dynamic_axes={"input": {0: "n"}, "out": {0: "n"}, "feat": {0: "n"}},
                      opset_version=17, dynamo=False)
    report = export_model(ExportConfig(str(path), tmp_path / "engine", target_layer="feat", mean=IMAGENET_MEAN,
                                       std=IMAGENET_STD))
    assert any("central differences" in c.name for c in report.parity)
    check_against_autograd(tmp_path / "engine", net)


# Operators the two graphs may contain: standard ONNX that TensorRT's ONNX parser and
# OpenVINO read (onnx-tensorrt docs/operators.md); no MaxPool Indices, no ScatterND.
ALLOWED_OPS = {
    "Add", "And", "ArgMax", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "ConvTranspose", "Div", "Equal", "Erf", "Exp", "Expand", "Flatten", "Gather",
    "GatherElements", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater", "HardSigmoid", "HardSwish",
    "Identity", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "MatMul", "Max", "MaxPool", "Mul",
    "Neg", "Not", "Or", "Pad", "Pow", "Range", "Reciprocal", "ReduceMax", "ReduceMean", "ReduceSum", "Relu",
    "Reshape", "Resize", "Shape", "Sigmoid", "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh",
    "Transpose", "Unsqueeze", "Where",
}
