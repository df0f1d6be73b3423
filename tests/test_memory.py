"""Weights stored and loaded once, and explain within a memory budget."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from unioncam_rt.errors import UnionCamError
from unioncam_rt.memory import batch_for_memory, parse_size

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


def test_sizes_parse():
    assert parse_size("2GB") == 2 * 10**9 and parse_size("2GiB") == 2 * 2**30
    assert parse_size("1500MB") == 1500 * 10**6 and parse_size("512M") == 512 * 2**20 and parse_size(123) == 123
    for bad in ("lots", "2XB", "-1GB", "0"):
        with pytest.raises(UnionCamError, match="--max-memory"):
            parse_size(bad)
    with pytest.raises(UnionCamError, match="too small for this engine"):
        batch_for_memory(10 * 2**20, 2**20, 0)


def test_both_sessions_use_one_mapped_copy_of_every_weight(lite_engine_dir):
    from unioncam_rt.exporting.weights import shareable_initializers
    from unioncam_rt.runtime.exported import ExportedEngine
    from unioncam_rt.runtime.weights import mapped_file

    engine = ExportedEngine(lite_engine_dir, providers=["CPUExecutionProvider"])
    mapping = mapped_file(lite_engine_dir / "weights.bin", engine.manifest.files["weights.bin"])
    for session, graph in ((engine.features_session, "features.onnx"), (engine.scores_session, "scores.onnx")):
        proto = onnx.load(str(lite_engine_dir / graph), load_external_data=False)
        external = {t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
        # every weight of a Conv/Gemm/MatMul is shared; the graph reads its other (small)
        # external tensors itself, which ONNX Runtime's optimisers may rewrite (exporting/weights.py)
        weights = external & shareable_initializers(proto)
        assert weights and set(session._shared) == weights
        unshared = sum(int(np.prod(t.dims)) * 4 for t in proto.graph.initializer if t.name in external - weights)
        assert unshared < 0.01 * sum(int(np.prod(t.dims)) * 4 for t in proto.graph.initializer if t.name in weights)
        for value in session._shared.values():
            assert value.device_name() == "cpu"
    shared = set(engine.features_session._shared) & set(engine.scores_session._shared)
    assert len(shared) > 50
    weights = engine.features_session  # the arrays behind both sessions' values are views of one mapping
    from unioncam_rt.runtime.weights import SharedWeights

    views = SharedWeights(lite_engine_dir, engine.manifest)
    assert all(np.shares_memory(views.tensors[name], mapping) for name in shared)
    del weights


MEASURE = textwrap.dedent("""
    import json, sys
    from unioncam_rt.cli import app
    try:
        app(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code or 0
    peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print(json.dumps({"code": code, "peak": peak}))
""")


def run_measured(*args) -> tuple[dict, str]:
    result = subprocess.run([sys.executable, "-c", MEASURE, *map(str, args)], capture_output=True, text=True,
                            timeout=600)
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


@pytest.mark.slow
def test_the_memory_budget_is_honoured(tmp_path):
    """A net whose masked passes need ~25 MB of activations per image, explained at batch 64
    (about 1.7 GB) and under --max-memory 450MB; peaks measured in fresh processes."""
    from PIL import Image

    from unioncam_rt.exporting.pipeline import ExportConfig, export_model

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.Conv2d(64, 48, 3, stride=8, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(48, 3))
    report = export_model(ExportConfig(net, tmp_path / "e", target_layer="5", input_size=224))
    per_image = report.manifest.scoring_bytes_per_image
    assert 20 * 2**20 < per_image < 40 * 2**20
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    common = ["explain", tmp_path / "x.png", "--engine", tmp_path / "e", "--method", "scorecam"]
    free, _ = run_measured(*common, "--batch-size", "48", "--out", tmp_path / "a")
    budget = 450 * 2**20
    capped, log = run_measured(*common, "--batch-size", "48", "--max-memory", "450MiB", "--out", tmp_path / "b")
    assert free["code"] == 0 and capped["code"] == 0, log
    assert free["peak"] > budget * 1.5  # without the budget the same run needs far more
    assert capped["peak"] <= budget, (capped["peak"], log)
    assert "masked images per engine call" in log
    a = np.asarray(Image.open(tmp_path / "a" / "x.cam.png"), np.float32)
    b = np.asarray(Image.open(tmp_path / "b" / "x.cam.png"), np.float32)
    assert np.abs(a - b).max() <= 1  # the batch size changes nothing but memory and time
    small, log = run_measured(*common, "--max-memory", "50MB", "--out", tmp_path / "c")
    assert small["code"] == 2 and "too small for this engine" in log
    assert not (tmp_path / "c").exists()
