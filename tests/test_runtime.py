"""The torch-free runtime: engines from an export directory, parity with the reference."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from unioncam_rt.cli import app
from unioncam_rt.errors import UnionCamError

from .conftest import DEV_IMAGES, dev_rows, photo_or_grey, run_without_torch

pytest.importorskip("torch")


@pytest.fixture
def lite_dir(lite_engine_dir):
    return lite_engine_dir


def test_runtime_explain_never_imports_torch(lite_dir, tmp_path):
    image = photo_or_grey(tmp_path)
    run_without_torch(f"""
        import unioncam_rt.runtime, unioncam_rt.method
        from unioncam_rt.cli import app
        try:
            app(["explain", {str(image)!r}, "--engine", {str(lite_dir)!r}, "--out", {str(tmp_path / "out")!r},
                 "--save-npy", "--batch-size", "64"])
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch was imported"
        print("TORCH-FREE OK")
    """, "TORCH-FREE OK")
    record = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert record["branch"] in ("fused", "region") and record["masked_passes"] > 0


@pytest.mark.slow
def test_onnxruntime_matches_torch_reference_on_real_photos(lite_dir):
    from unioncam_rt.explainer import Explainer

    rows = dev_rows()[20:22]
    paths = [DEV_IMAGES / r["file"] for r in rows]
    fast = Explainer(engine_dir=lite_dir, batch_size=64)
    reference = Explainer("efficientnet-lite0", backend="torch", batch_size=16)
    for (_, got), (_, want) in zip(fast.iter_files(paths), reference.iter_files(paths)):
        assert got.class_index == want.class_index
        assert got.branch == want.branch
        assert np.corrcoef(got.cam.ravel(), want.cam.ravel())[0, 1] >= 0.999
        assert np.abs(got.cam - want.cam).max() <= 1e-3
        assert abs(got.union.beta_fused - want.union.beta_fused) <= 1e-4


def test_many_images_share_engine_calls_and_match_one_by_one(lite_dir):
    from unioncam_rt.explainer import Explainer

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (60, 80, 3), dtype=np.uint8) for _ in range(3)]
    explainer = Explainer(engine_dir=lite_dir, batch_size=128, images_per_step=3, method="unioncam")
    from unioncam_rt.images import load_image

    loaded = [load_image(im, (224, 224)) for im in images]
    calls_before = explainer.engine.scores_session.calls
    together = explainer.explain_loaded(loaded, [-1, -1, -1])
    calls_together = explainer.engine.scores_session.calls - calls_before
    alone = [explainer.explain_loaded([im], [-1])[0] for im in loaded]
    calls_alone = explainer.engine.scores_session.calls - calls_before - calls_together
    assert calls_together < calls_alone
    for a, b in zip(together, alone):
        assert a.branch == b.branch and a.masked_passes == b.masked_passes
        np.testing.assert_allclose(a.cam, b.cam, atol=1e-4)


def test_engine_dir_errors_are_one_line(lite_dir, tmp_path):
    import shutil

    image = tmp_path / "img.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    runner = CliRunner()
    result = runner.invoke(app, ["explain", str(image), "--engine", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["explain", str(image), "--engine", str(lite_dir), "--model", "vgg16", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not 'vgg16'" in result.output
    stale = tmp_path / "stale"
    shutil.copytree(lite_dir, stale)
    data = json.loads((stale / "manifest.json").read_text())
    data["files"]["features.onnx"] = "0" * 64
    (stale / "manifest.json").write_text(json.dumps(data))
    result = runner.invoke(app, ["explain", str(image), "--engine", str(stale), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "sha256 differs" in result.output
    assert not (tmp_path / "o").exists()
    result = runner.invoke(app, ["explain", str(image), "--engine", str(lite_dir), "--precision", "int8", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no INT8 scoring graph" in result.output


def test_providers_are_checked(lite_dir):
    from unioncam_rt.runtime.exported import ExportedEngine

    with pytest.raises(UnionCamError, match="provider\\(s\\) NoSuchExecutionProvider requested; available: .*CPUExecutionProvider"):
        ExportedEngine(lite_dir, providers=["NoSuchExecutionProvider"])
    engine = ExportedEngine(lite_dir, providers=["CPUExecutionProvider"])
    with pytest.raises(UnionCamError, match="images must be"):
        engine.features(np.zeros((1, 3, 100, 100), np.float32), np.array([0]))


@pytest.mark.slow
def test_int8_quantize_adds_a_checked_scoring_graph(lite_dir, tmp_path):
    import shutil

    from PIL import Image

    from unioncam_rt.explainer import Explainer
    from unioncam_rt.manifest import EngineDirError, load_manifest

    engine = shutil.copytree(lite_dir, tmp_path / "lite0")
    rows = dev_rows()[:2]
    calibration = [DEV_IMAGES / r["file"] for r in rows]
    result = CliRunner().invoke(app, ["quantize", "--engine", str(engine), *map(str, calibration)])
    assert result.exit_code == 0, result.output
    manifest = load_manifest(engine)
    assert "scores.int8.onnx" in manifest.files and manifest.engines["scores.int8.onnx"]["precision"] == "int8"
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    fast = Explainer(engine_dir=engine, precision="int8").explain(image)
    exact = Explainer(engine_dir=engine).explain(image)
    assert fast.class_index == exact.class_index  # the features graph stays fp32
    assert fast.cam.shape == (224, 224) and 0 <= fast.cam.min() <= fast.cam.max() <= 1
    with open(engine / "scores.int8.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(EngineDirError, match="sha256 differs"):
        load_manifest(engine)
