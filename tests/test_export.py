"""Exported graphs against the torch autograd reference."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from unioncam_rt.compare import compare  # noqa: E402
from unioncam_rt.exporting.pipeline import ExportConfig, export_model  # noqa: E402
from unioncam_rt.images import load_image  # noqa: E402
from unioncam_rt.manifest import EngineDirError, load_manifest  # noqa: E402
from unioncam_rt.runtime.exported import ExportedEngine  # noqa: E402
from unioncam_rt.runtime.torch_engine import TorchEngine  # noqa: E402
from unioncam_rt.sources.torch_source import build_classifier  # noqa: E402
from unioncam_rt.zoo import MODELS  # noqa: E402

from .conftest import DEV_IMAGES, dev_rows, tiny_model  # noqa: E402
from .test_head_gradients import ALLOWED_OPS  # noqa: E402

TOL = 1e-4


def declared(directory, graph):
    """{name: [dims]} of a graph's inputs and outputs as declared in the file."""
    model = onnx.load(str(directory / graph), load_external_data=False)

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return {v.name: dims(v) for v in [*model.graph.input, *model.graph.output]}


# --- tiny nets (fast) ----------------------------------------------------------------------


@pytest.mark.parametrize("head", ["vgg", "dense"])
def test_tiny_graphs_in_onnxruntime_match_torch(tmp_path, tiny_images, head):
    model = tiny_model(seed=3, head=head)
    export_model(ExportConfig(model.net, tmp_path / "e", target_layer="trunk", input_size=(32, 32),
                              mean=model.mean, std=model.std))
    engine = ExportedEngine(tmp_path / "e", providers=["CPUExecutionProvider"])
    reference = TorchEngine(model)
    classes = np.array([-1, 2, -1, 9])
    ref, got = reference.features(tiny_images, classes), engine.features(tiny_images, classes)
    for name in ("logits", "activations", "gradients"):
        assert compare(name, getattr(got, name), getattr(ref, name), TOL).ok
    assert got.class_index.tolist() == ref.class_index.tolist()
    masks = np.random.default_rng(1).random((70, 1, 16, 16)).astype(np.float32)
    index, cls = np.arange(70) % 4, np.arange(70) % 10
    assert compare("probs", engine.masked_probs(tiny_images, masks, index, cls),
                   reference.masked_probs(tiny_images, masks, index, cls), TOL).ok


def test_declared_shapes_are_true_and_weights_are_stored_once(tmp_path):
    model = tiny_model(seed=3, head="dense")  # 0.5 MB of weights
    export_model(ExportConfig(model.net, tmp_path / "e", target_layer="trunk", input_size=(32, 32)))
    assert declared(tmp_path / "e", "features.onnx") == {
        "image": ["batch", 3, 32, 32], "class_index": ["batch"], "logits": ["batch", 10],
        "activations": ["batch", 16, 16, 16], "gradients": ["batch", 16, 16, 16], "resolved_class_index": ["batch"]}
    assert declared(tmp_path / "e", "scores.onnx") == {
        "image": ["images", 3, 32, 32], "masks": ["masks", 1, 16, 16], "image_index": ["masks"],
        "class_index": ["masks"], "probs": ["masks"]}
    weights = sum(p.numel() for p in model.net.parameters()) * 4
    assert (tmp_path / "e" / "weights.bin").stat().st_size >= weights
    for graph in ("features.onnx", "scores.onnx"):
        proto = onnx.load(str(tmp_path / "e" / graph), load_external_data=False)
        assert (tmp_path / "e" / graph).stat().st_size < weights / 2, graph
        external = {t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
        assert "classifier.net.head.1.weight" in external
        assert "ScatterND" not in {n.op_type for n in proto.graph.node}


def test_a_wrong_backward_rule_fails_the_onnx_export_check(tmp_path, monkeypatch):
    """The central-difference check of ONNX classifiers catches a grossly wrong gradient
    (here a Gemm rule with the wrong sign); every rule's exactness is tested against
    autograd in test_head_gradients.py."""
    from unioncam_rt.errors import UnionCamError
    from unioncam_rt.exporting import backward

    from . import heads

    net = heads.build("dropout_identity_flatten")  # one Gemm: a sign error cannot cancel out
    path = tmp_path / "m.onnx"
    torch.onnx.export(heads.WithFeatures(net), (torch.rand(2, 3, 16, 16),), str(path), input_names=["input"],
                      output_names=["out", "feat"], dynamic_axes={"input": {0: "n"}, "out": {0: "n"}, "feat": {0: "n"}},
                      opset_version=17, dynamo=False)
    right = backward.RULES["Gemm"]

    def wrong(ctx, node, grads):
        return {name: ctx.emit.op("Neg", [grad]) for name, grad in right(ctx, node, grads).items()}

    monkeypatch.setitem(backward.RULES, "Gemm", wrong)
    with pytest.raises(UnionCamError, match="central differences"):
        export_model(ExportConfig(str(path), tmp_path / "e", target_layer="feat"))
    assert list(tmp_path.iterdir()) == [path]


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
        assert ops <= ALLOWED_OPS, ops - ALLOWED_OPS
        assert all(len(n.output) == 1 for n in model_proto.graph.node if n.op_type == "MaxPool")
    k, h, w = report.manifest.feature_shape
    assert declared(directory, "features.onnx")["gradients"] == ["batch", k, h, w]
    model = build_classifier(name, weights)
    reference = TorchEngine(model)
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
    np.testing.assert_allclose(engine.black_probs(), reference.black_probs(), rtol=1e-4, atol=1e-8)  # from the exported graph


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
    assert set(manifest.files) == {"features.onnx", "scores.onnx", "weights.bin"}
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest.versions)
    assert len(manifest.weights_sha256) == 64
    assert manifest.source == {"kind": "zoo", "name": "efficientnet-lite0", "weights": "pretrained"}
    assert manifest.layout == "nchw" and manifest.target_layer == "extract_features"


def test_tampered_missing_and_mismatched_engines_are_refused(exported_lite, tmp_path):
    for name in ("scores.onnx", "weights.bin"):
        tampered = copy_dir(exported_lite, tmp_path / f"tampered-{name}")
        with open(tampered / name, "ab") as handle:
            handle.write(b"\0")
        with pytest.raises(EngineDirError, match=f"{name}: sha256 differs"):
            load_manifest(tampered)
    missing = copy_dir(exported_lite, tmp_path / "missing-weights")
    (missing / "weights.bin").unlink()
    with pytest.raises(EngineDirError, match="weights.bin: listed in the manifest but missing"):
        load_manifest(missing)
    missing = copy_dir(exported_lite, tmp_path / "missing")
    (missing / "features.onnx").unlink()
    with pytest.raises(EngineDirError, match="missing"):
        load_manifest(missing)
    schema = copy_dir(exported_lite, tmp_path / "schema")
    data = json.loads((schema / "manifest.json").read_text())
    data["schema_version"] = 1  # an engine directory from unioncam-rt 0.1
    (schema / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(EngineDirError, match="schema version 1, this unioncam-rt reads 2; re-export"):
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
    from unioncam_rt.exporting import parity

    def broken(*args, **kwargs):
        raise UnionCamError("exported graphs disagree with torch: simulated")

    monkeypatch.setattr(parity, "torch_parity", broken)
    with pytest.raises(UnionCamError, match="simulated"):
        export_model(ExportConfig("resnet18", tmp_path / "r18", weights="random:0"))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(UnionCamError, match="not an engine directory"):
        export_model(ExportConfig("resnet18", tmp_path / "notes", weights="random:0"))
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


def test_mask_chunks_respect_profile_limits():
    from unioncam_rt.runtime.exported import mask_chunks

    index = np.array([0, 0, 1, 2, 2, 3, 4, 4, 4, 5, 1, 0])
    for max_masks, max_images in ((4, 2), (3, 8), (100, 1), (1, 1)):
        chunks = mask_chunks(index, max_masks, max_images)
        assert np.concatenate([np.arange(len(index))[c] for c in chunks]).tolist() == list(range(len(index)))
        assert all(c.stop - c.start <= max_masks and len(set(index[c].tolist())) <= max_images for c in chunks)


def test_exported_engine_checks_indices_on_the_host(exported_lite):
    from unioncam_rt.errors import UnionCamError

    engine = ExportedEngine(exported_lite, providers=["CPUExecutionProvider"])
    images = np.zeros((2, 3, 224, 224), np.float32)
    masks = np.ones((1, 1, 7, 7), np.float32)
    with pytest.raises(UnionCamError, match="image_index must lie in 0..1"):
        engine.masked_probs(images, masks, np.array([2]), np.array([0]))
    with pytest.raises(UnionCamError, match="class index 1000 out of range"):
        engine.masked_probs(images, masks, np.array([0]), np.array([1000]))
    with pytest.raises(UnionCamError, match="class index -2 out of range"):
        engine.features(images, np.array([-2, 0]))


def test_export_cli_prints_summary(tmp_path):
    from typer.testing import CliRunner

    from unioncam_rt.cli import app

    result = CliRunner().invoke(app, ["export", "--model", "resnet18", "--weights", "random:0",
                                      "--out", str(tmp_path / "r18")])
    assert result.exit_code == 0, result.output
    assert "features.onnx" in result.output and "weights.bin" in result.output
    assert "gradients:" in result.output and "FAIL" not in result.output
    result = CliRunner().invoke(app, ["export", "--model", "resnet18", "--fp16", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "add --tensorrt" in result.output


@pytest.mark.tensorrt
def test_tensorrt_engines_match_onnxruntime(tmp_path):
    """fp32 and fp16 engines, features and scores, against ONNX Runtime (CPU, fp32).

    The class is fixed to ONNX Runtime's top-1 so that a near tie that fp16 or rounding
    resolves differently cannot hide a real difference; top-1 under fp16 may legitimately
    differ (README: TensorRT section). More masks and images than the profiles admit per
    call exercise the session's chunking.
    """
    from unioncam_rt.exporting.tensorrt_build import tensorrt_available

    reason = tensorrt_available()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "lite0"
    report = export_model(ExportConfig("efficientnet-lite0", out, tensorrt=True, fp16=True, max_batch=16))
    assert {"features.fp32.engine", "scores.fp32.engine", "features.fp16.engine", "scores.fp16.engine"} <= set(report.files)
    images = np.concatenate([real_images(2), np.random.default_rng(9).random((10, 3, 224, 224)).astype(np.float32)])
    onnx_engine = ExportedEngine(out, providers=["CPUExecutionProvider"])
    classes = onnx_engine.features(images, np.full(len(images), -1)).class_index
    ref = onnx_engine.features(images, classes)
    k, h, w = onnx_engine.feature_shape
    masks = np.random.default_rng(2).random((40, 1, h, w)).astype(np.float32)
    index = np.arange(40) % len(images)
    want_probs = onnx_engine.masked_probs(images, masks, index, classes[index])
    for precision, tolerance in (("fp32", 1e-3), ("fp16", 3e-2)):
        engine = ExportedEngine(out, backend="tensorrt", precision=precision)
        got = engine.features(images, classes)
        assert got.class_index.tolist() == classes.tolist()
        for field in ("logits", "activations", "gradients"):
            result = compare(f"{precision} {field}", getattr(got, field), getattr(ref, field), tolerance)
            assert result.ok, result
        probs = engine.masked_probs(images, masks, index, classes[index])
        assert np.abs(probs - want_probs).max() <= tolerance, precision
