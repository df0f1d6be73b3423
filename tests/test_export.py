"""Exported graphs against the torch autograd reference."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from unioncam_rt.compare import compare  # noqa: E402
from unioncam_rt.export.head_backward import HeadWithGradient, UnsupportedLayerError  # noqa: E402
from unioncam_rt.export.onnx_export import features_onnx_from_model, scores_onnx_from_model  # noqa: E402
from unioncam_rt.export.pipeline import ExportConfig, export_model  # noqa: E402
from unioncam_rt.images import load_image  # noqa: E402
from unioncam_rt.manifest import EngineDirError, load_manifest  # noqa: E402
from unioncam_rt.runtime.exported import ExportedEngine  # noqa: E402
from unioncam_rt.runtime.onnxruntime_session import OnnxRuntimeSession  # noqa: E402
from unioncam_rt.runtime.torch_engine import TorchEngine  # noqa: E402
from unioncam_rt.zoo import MODELS, build_model, imagenet_classes  # noqa: E402

from .conftest import DEV_IMAGES, dev_rows, tiny_model  # noqa: E402

TOL = 1e-4
nn = torch.nn

# Operators TensorRT 10's ONNX parser imports (onnx-tensorrt docs/operators.md), restricted
# to what these graphs may contain.
TENSORRT_OPS = {
    "Add", "ArgMax", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "Div", "Equal", "Expand", "Flatten", "Gather", "GatherElements",
    "Gemm", "GlobalAveragePool", "Greater", "HardSigmoid", "Identity", "Less", "MatMul", "Max",
    "MaxPool", "Mul", "Neg", "Not", "Pad", "Range", "ReduceMax", "ReduceMean", "Relu", "Reshape",
    "Resize", "ScatterND", "Shape", "Sigmoid", "Slice", "Softmax", "Squeeze", "Sub", "Transpose",
    "Unsqueeze", "Where", "And", "Or", "Min", "Sum", "ReduceSum", "Tile", "Floor",
}


def autograd_reference(model, images, classes):
    return TorchEngine(model, [str(i) for i in range(1000)]).features(images, classes)


# --- the head's explicit backward, in torch -----------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_head_backward_matches_autograd_for_every_zoo_model(name):
    model = build_model(name, None if name == "efficientnet-lite0" else "random:2")
    images = np.random.default_rng(0).random((3, 3, 224, 224)).astype(np.float32)
    classes = np.array([-1, 5, 999])
    ref = autograd_reference(model, images, classes)
    with torch.no_grad():
        logits, grads, resolved = HeadWithGradient(model.head)(torch.from_numpy(ref.activations), torch.from_numpy(classes))
    assert compare("logits", logits.numpy(), ref.logits).ok
    assert compare("gradients", grads.numpy(), ref.gradients, TOL).ok
    assert resolved.tolist() == ref.class_index.tolist()


def test_maxpool_backward_sends_tied_windows_to_one_element():
    head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(1), nn.Linear(4 * 2 * 2, 3))
    torch.manual_seed(0)
    acts = torch.zeros(2, 4, 4, 4)
    acts[0, 0, 0, 1] = acts[0, 0, 1, 0] = 2.0  # a tie of two equal non-zero maxima
    acts[1, 2, 2:, 2:] = 1.0  # a window of four equal values
    acts = acts.requires_grad_(True)
    logits = head(acts)
    logits[:, 1].sum().backward()
    with torch.no_grad():
        _, grads, _ = HeadWithGradient(head)(acts.detach(), torch.tensor([1, 1]))
    torch.testing.assert_close(grads, acts.grad, rtol=0, atol=0)
    per_window = (grads != 0).reshape(2, 4, 2, 2, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(2, 4, 2, 2, 4).sum(-1)
    assert per_window.max() <= 1


def test_odd_sized_maxpool_and_adaptive_pool_match_autograd():
    head = nn.Sequential(nn.MaxPool2d(2), nn.AdaptiveAvgPool2d((2, 3)), nn.Flatten(1), nn.Linear(6 * 6, 4))
    acts = torch.relu(torch.randn(2, 6, 7, 9, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    head(acts)[:, 2].sum().backward()
    with torch.no_grad():
        _, grads, _ = HeadWithGradient(head)(acts.detach(), torch.tensor([2, 2]))
    torch.testing.assert_close(grads, acts.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("layer,words", [
    (nn.Sigmoid(), "head.1 (Sigmoid) has no backward rule"),
    (nn.MaxPool2d(3, stride=2), "only non-overlapping max pooling"),
])
def test_unsupported_head_layer_is_named(layer, words):
    with pytest.raises(UnsupportedLayerError, match=words.replace("(", r"\(").replace(")", r"\)")):
        HeadWithGradient(nn.Sequential(nn.Identity(), layer, nn.Flatten(1)))


# --- ONNX graphs on tiny nets (fast) --------------------------------------------------


@pytest.mark.parametrize("head", ["vgg", "dense"])
def test_tiny_graphs_in_onnxruntime_match_torch(tmp_path, tiny_images, head):
    model = tiny_model(seed=3, head=head)
    features_onnx_from_model(model, tmp_path / "f.onnx")
    scores_onnx_from_model(model, tmp_path / "s.onnx", (16, 16))
    classes = np.array([-1, 2, -1, 9])
    ref = TorchEngine(model, [str(i) for i in range(10)]).features(tiny_images, classes)
    got = OnnxRuntimeSession(tmp_path / "f.onnx", ["CPUExecutionProvider"]).infer(
        {"image": tiny_images, "class_index": classes})
    for name in ("logits", "activations", "gradients"):
        assert compare(name, got[name], getattr(ref, name), TOL).ok
    assert got["resolved_class_index"].tolist() == ref.class_index.tolist()
    masks = np.random.default_rng(1).random((70, 1, 16, 16)).astype(np.float32)
    index, cls = np.arange(70) % 4, np.arange(70) % 10
    probs = OnnxRuntimeSession(tmp_path / "s.onnx", ["CPUExecutionProvider"]).infer(
        {"image": tiny_images, "masks": masks, "image_index": index, "class_index": cls})["probs"]
    want = TorchEngine(model, [str(i) for i in range(10)]).masked_probs(tiny_images, masks, index, cls)
    assert compare("probs", probs, want, TOL).ok


# --- every zoo model, exported and run in ONNX Runtime --------------------------------


def real_images(count=2):
    rows = dev_rows()[:count]
    return np.stack([load_image(DEV_IMAGES / r["file"], (224, 224)).array for r in rows])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_zoo_export_parity_on_real_and_random_images(tmp_path, name):
    weights = None if name == "efficientnet-lite0" else "random:5"
    report = export_model(ExportConfig(name, tmp_path / name, weights=weights))
    assert all(c.ok for c in report.parity)
    directory = tmp_path / name
    for graph in ("features.onnx", "scores.onnx"):
        model_proto = onnx.load(str(directory / graph), load_external_data=False)
        onnx.checker.check_model(str(directory / graph))
        ops = {node.op_type for node in model_proto.graph.node}
        assert ops <= TENSORRT_OPS, ops - TENSORRT_OPS
        assert all(len(n.output) == 1 for n in model_proto.graph.node if n.op_type == "MaxPool")
    model = build_model(name, weights)
    reference = TorchEngine(model, imagenet_classes())
    engine = ExportedEngine(directory, providers=["CPUExecutionProvider"])
    images = np.concatenate([real_images(2), np.random.default_rng(9).random((1, 3, 224, 224)).astype(np.float32)])
    for classes in (np.array([-1, -1, -1]), np.array([3, 500, 999])):
        ref, got = reference.features(images, classes), engine.features(images, classes)
        for field in ("logits", "activations", "gradients"):
            result = compare(field, getattr(got, field), getattr(ref, field), TOL)
            assert result.ok, result
        assert got.class_index.tolist() == ref.class_index.tolist()
    k, h, w = engine.feature_shape
    masks = np.random.default_rng(2).random((6, 1, h, w)).astype(np.float32)
    index, cls = np.array([0, 1, 2, 2, 1, 0]), np.array([1, 10, 100, 999, 0, 3])
    result = compare("probs", engine.masked_probs(images, masks, index, cls),
                     reference.masked_probs(images, masks, index, cls), TOL)
    assert result.ok, result
    np.testing.assert_allclose(engine.black_probs(), reference.black_probs(), rtol=1e-6)


# --- manifest and atomic writes ---------------------------------------------------------


@pytest.fixture
def exported_lite(lite_engine_dir):
    return lite_engine_dir


def copy_dir(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_manifest_contents(exported_lite):
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert exported_lite.stat().st_mode & 0o777 == 0o777 & ~umask
    manifest = load_manifest(exported_lite, "efficientnet-lite0")
    assert manifest.feature_shape == (1280, 7, 7) and manifest.input_size == (224, 224)
    assert len(manifest.class_names) == 1000 == len(manifest.black_probs)
    assert abs(sum(manifest.black_probs) - 1) < 1e-4
    assert set(manifest.files) == {"features.onnx", "scores.onnx"}
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest.versions)
    assert len(manifest.weights_sha256) == 64


def test_tampered_missing_and_mismatched_engines_are_refused(exported_lite, tmp_path):
    tampered = copy_dir(exported_lite, tmp_path / "tampered")
    with open(tampered / "scores.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(EngineDirError, match="sha256 differs"):
        load_manifest(tampered)
    missing = copy_dir(exported_lite, tmp_path / "missing")
    (missing / "features.onnx").unlink()
    with pytest.raises(EngineDirError, match="missing"):
        load_manifest(missing)
    schema = copy_dir(exported_lite, tmp_path / "schema")
    data = json.loads((schema / "manifest.json").read_text())
    data["schema_version"] = 99
    (schema / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(EngineDirError, match="schema version 99"):
        load_manifest(schema)
    shapes = copy_dir(exported_lite, tmp_path / "shapes")
    data = json.loads((shapes / "manifest.json").read_text())
    data["black_probs"] = data["black_probs"][:10]
    (shapes / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(EngineDirError, match="10 black-image probabilities for 1000 classes"):
        load_manifest(shapes)
    with pytest.raises(EngineDirError, match="holds model 'efficientnet-lite0', not 'vgg16'"):
        load_manifest(exported_lite, "vgg16")
    with pytest.raises(EngineDirError, match="does not exist"):
        load_manifest(tmp_path / "nowhere")


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    from unioncam_rt.errors import UnionCamError
    from unioncam_rt.export import pipeline

    def broken(*args, **kwargs):
        raise UnionCamError("exported graphs disagree with torch: simulated")

    monkeypatch.setattr(pipeline, "parity", broken)
    with pytest.raises(UnionCamError, match="simulated"):
        export_model(ExportConfig("resnet18", tmp_path / "r18", weights="random:0"))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(UnionCamError, match="not an engine directory"):
        export_model(ExportConfig("resnet18", tmp_path / "notes", weights="random:0"))
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


def test_export_cli_prints_summary(tmp_path):
    from typer.testing import CliRunner

    from unioncam_rt.cli import app

    result = CliRunner().invoke(app, ["export", "--model", "resnet18", "--weights", "random:0",
                                      "--out", str(tmp_path / "r18")])
    assert result.exit_code == 0, result.output
    assert "features.onnx" in result.output and "gradients:" in result.output and "FAIL" not in result.output
    result = CliRunner().invoke(app, ["export", "--model", "resnet18", "--fp16", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "add --tensorrt" in result.output


@pytest.mark.tensorrt
def test_tensorrt_engines_match_onnxruntime(tmp_path):
    from unioncam_rt.export.tensorrt_build import tensorrt_available

    reason = tensorrt_available()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "lite0"
    report = export_model(ExportConfig("efficientnet-lite0", out, tensorrt=True, fp16=True, max_batch=16))
    assert {"features.fp32.engine", "scores.fp32.engine", "features.fp16.engine"} <= set(report.files)
    images = real_images(2)
    onnx_engine = ExportedEngine(out, providers=["CPUExecutionProvider"])
    trt_engine = ExportedEngine(out, backend="tensorrt", precision="fp32")
    ref, got = onnx_engine.features(images, np.array([-1, 3])), trt_engine.features(images, np.array([-1, 3]))
    for field in ("logits", "activations", "gradients"):
        assert compare(field, getattr(got, field), getattr(ref, field), 1e-3).ok
