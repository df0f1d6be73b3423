"""The OpenVINO backend against ONNX Runtime on the same engine directory."""

import numpy as np
import pytest

pytest.importorskip("openvino")

from unioncam_rt.compare import compare  # noqa: E402
from unioncam_rt.runtime.exported import ExportedEngine  # noqa: E402

from .conftest import DEV_IMAGES, dev_rows  # noqa: E402


def test_openvino_fp32_graphs_match_onnxruntime(lite_engine_dir):
    reference = ExportedEngine(lite_engine_dir, providers=["CPUExecutionProvider"])
    engine = ExportedEngine(lite_engine_dir, backend="openvino", precision="fp32")
    assert engine.features_session.precision == "fp32"  # forced: this CPU would pick bf16 by itself
    images = np.random.default_rng(0).random((3, 3, 224, 224)).astype(np.float32)
    classes = np.array([-1, 5, 999])
    ref, got = reference.features(images, classes), engine.features(images, classes)
    for name in ("logits", "activations", "gradients"):
        result = compare(name, getattr(got, name), getattr(ref, name), 1e-4)
        assert result.ok, result
    assert got.class_index.tolist() == ref.class_index.tolist()
    masks = np.random.default_rng(1).random((37, 1, 7, 7)).astype(np.float32)
    index, cls = np.arange(37) % 3, np.arange(37) * 11
    assert np.abs(engine.masked_probs(images, masks, index, cls) - reference.masked_probs(images, masks, index, cls)).max() < 1e-5


def test_openvino_errors_are_one_line(lite_engine_dir, tmp_path):
    from typer.testing import CliRunner

    from unioncam_rt.cli import app

    result = CliRunner().invoke(app, ["explain", str(tmp_path / "x.png"), "--engine", str(lite_engine_dir),
                                      "--backend", "openvino", "--precision", "int8", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "is not one of openvino's modes" in result.output and "int8 runs on: onnxruntime" in result.output


@pytest.mark.slow
def test_openvino_unioncam_on_real_photos(lite_engine_dir):
    from unioncam_rt.explainer import Explainer

    paths = [DEV_IMAGES / r["file"] for r in dev_rows()[40:42]]
    exact = Explainer(lite_engine_dir)
    fp32 = Explainer(lite_engine_dir, backend="openvino", precision="fp32")
    bf16 = Explainer(lite_engine_dir, backend="openvino", precision="bf16")
    sessions = bf16.engine
    assert (sessions.features_session.precision, sessions.scores_session.precision,
            sessions.decision_session.precision) == ("fp32", "bf16", "fp32")  # only the channel passes in bf16
    for path in paths:
        want, got, fast = exact.explain(path), fp32.explain(path), bf16.explain(path)
        assert got.class_index == want.class_index and got.branch == want.branch
        assert np.corrcoef(got.cam.ravel(), want.cam.ravel())[0, 1] >= 0.999
        assert abs(got.union.beta_fused - want.union.beta_fused) <= 1e-4
        assert got.backend == "openvino fp32" and fast.backend == "openvino bf16"
        assert np.corrcoef(fast.cam.ravel(), want.cam.ravel())[0, 1] >= 0.95  # approximate; README: fidelity
