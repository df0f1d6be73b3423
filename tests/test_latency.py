"""Latency a user sees: honest per-image timings, compiled models kept beside the export,
and an explain path that loads only what it runs."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from unioncam_rt.results import group_timings, request_timings, with_own_time
from unioncam_rt.runtime import compiled_cache

from .conftest import photo_or_grey, run_without_torch


def test_group_shares_add_up_and_follow_the_masked_passes():
    shares = group_timings(features_s=0.3, method_s=1.2, masked_passes=[10, 30, 0])
    assert [s["group_images"] for s in shares] == [3, 3, 3]
    assert [s["features_s"] for s in shares] == pytest.approx([0.1, 0.1, 0.1])
    assert [s["method_s"] for s in shares] == pytest.approx([0.3, 0.9, 0.0])
    assert sum(s["features_s"] + s["method_s"] for s in shares) == pytest.approx(shares[0]["group_s"]) == 1.5
    even = group_timings(0.2, 0.4, [0, 0])  # no masked passes (Grad-CAM): split evenly
    assert [s["method_s"] for s in even] == pytest.approx([0.2, 0.2])


def test_total_is_own_work_never_the_group_or_the_wait():
    share = {"features_s": 0.1, "method_s": 0.3, "group_images": 4, "group_s": 1.6}
    timed = with_own_time(with_own_time(share), load_s=0.05)
    assert list(timed)[0] == "load_s" and timed["total_s"] == pytest.approx(0.45)
    served = request_timings(share, decode_s=0.02, queue_s=0.5, latency_s=2.4)
    assert served["total_s"] == pytest.approx(0.42) and served["latency_s"] == 2.4 and served["queue_s"] == 0.5


def _uint8_images(tiny_images):
    return [np.round(im.transpose(1, 2, 0) * 255).astype(np.uint8) for im in tiny_images]


def test_images_explained_together_each_carry_their_share(tiny_engine, tiny_images):
    from unioncam_rt.explainer import Explainer
    from unioncam_rt.images import load_image

    explainer = Explainer(engine=tiny_engine, budget="cover0.6/energy")
    loaded = [load_image(im, (32, 32)) for im in _uint8_images(tiny_images)]
    results = explainer.explain_loaded(loaded, [-1] * 4)
    timings = [r.timings for r in results]
    group_s = timings[0]["group_s"]
    assert all(t["group_images"] == 4 and t["group_s"] == group_s for t in timings)
    assert sum(t["features_s"] + t["method_s"] for t in timings) == pytest.approx(group_s, rel=1e-12)
    assert all(t["total_s"] == pytest.approx(t["features_s"] + t["method_s"]) for t in timings)
    passes = np.array([r.masked_passes for r in results], dtype=float)
    method = np.array([t["method_s"] for t in timings])
    np.testing.assert_allclose(method / method.sum(), passes / passes.sum(), rtol=1e-9)


def test_per_image_totals_add_up_to_the_run(tiny_engine, tiny_images, tmp_path):
    from PIL import Image

    from unioncam_rt.explainer import Explainer

    paths = []
    for i, array in enumerate(_uint8_images(tiny_images) + _uint8_images(tiny_images[:1])):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(array).save(paths[-1])
    explainer = Explainer(engine=tiny_engine, images_per_step=2)
    timings = [result.timings for _, result in explainer.iter_files(paths)]
    assert [t["group_images"] for t in timings] == [2, 2, 2, 2, 1]
    groups = [timings[0:2], timings[2:4], timings[4:5]]
    for group in groups:
        assert sum(t["features_s"] + t["method_s"] for t in group) == pytest.approx(group[0]["group_s"], rel=1e-12)
    run_work = sum(t["load_s"] for t in timings) + sum(group[0]["group_s"] for group in groups)
    assert sum(t["total_s"] for t in timings) == pytest.approx(run_work, rel=1e-12)


def _engine_like(tmp_path, manifest: bytes):
    directory = tmp_path / "engine"
    directory.mkdir(exist_ok=True)
    (directory / "manifest.json").write_bytes(manifest)
    (directory / "scores.onnx").write_bytes(b"graph")
    return directory


def test_compiled_folder_is_keyed_by_the_export_and_read_only_from_own_places(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("UNIONCAM_RT_CACHE", str(root))
    engine = _engine_like(tmp_path, b'{"files": {"a": "1"}}')
    first = compiled_cache.compiled_folder(engine / "scores.onnx", "openvino", "2026.4", "bf16")
    assert first.parent == root / "compiled" / "openvino"  # someone else's engine dir: the user cache
    assert compiled_cache.compiled_folder(engine / "scores.onnx", "openvino", "2026.4", "f32") != first
    _engine_like(tmp_path, b'{"files": {"a": "2"}}')  # exported again: a new folder
    assert compiled_cache.compiled_folder(engine / "scores.onnx", "openvino", "2026.4", "bf16") != first
    entry = shutil.copytree(engine, root / "lite0-abc-v1")  # an entry of the export cache: beside the export
    assert compiled_cache.compiled_folder(entry / "scores.onnx", "openvino", "x").parent == entry / "compiled" / "openvino"
    assert compiled_cache.compiled_folder(tmp_path / "loose.onnx", "openvino") is None  # not an engine directory
    monkeypatch.setenv("UNIONCAM_RT_COMPILED_CACHE", "0")
    assert compiled_cache.compiled_folder(engine / "scores.onnx", "openvino") is None


def test_publish_keeps_the_first_complete_folder(tmp_path):
    final = tmp_path / "compiled" / "key"
    ours, theirs = compiled_cache.staging_folder(final), compiled_cache.staging_folder(final)
    (theirs / "model.blob").write_bytes(b"theirs")
    compiled_cache.publish(theirs, final)
    (ours / "model.blob").write_bytes(b"ours")
    compiled_cache.publish(ours, final)
    assert (final / "model.blob").read_bytes() == b"theirs" and not ours.exists()
    assert sorted(p.name for p in final.parent.iterdir()) == ["key"]


def test_the_user_cache_drops_compiled_folders_of_engines_gone_or_exported_again(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("UNIONCAM_RT_CACHE", str(root))

    def compile_into_cache(engine):
        graph = engine / "scores.onnx"
        graph.write_bytes(b"graph")
        final = compiled_cache.compiled_folder(graph, "openvino", "v")
        staging = compiled_cache.staging_folder(final)
        (staging / "model.blob").write_bytes(b"blob")
        compiled_cache.publish(staging, final, graph)
        return final

    for folder in ("kept", "gone", "redone", "cache/lite0-abc-v1"):
        (tmp_path / folder).mkdir(parents=True)
    kept = compile_into_cache(_engine_like(tmp_path / "kept", b'{"files": {"a": "1"}}'))
    gone = compile_into_cache(_engine_like(tmp_path / "gone", b'{"files": {"a": "1"}}'))
    redone = _engine_like(tmp_path / "redone", b'{"files": {"a": "1"}}')
    old = compile_into_cache(redone)
    unrecorded = kept.parent / "from-an-older-version"
    unrecorded.mkdir()
    shutil.rmtree(tmp_path / "gone")
    _engine_like(tmp_path / "redone", b'{"files": {"a": "2"}}')  # exported again
    new = compile_into_cache(redone)  # publishing prunes
    assert kept.is_dir() and new.is_dir() and unrecorded.is_dir()
    assert not gone.exists() and not old.exists()
    # beside an export-cache entry nothing is pruned (the entry's folders go with it)
    entry = _engine_like(tmp_path / "cache" / "lite0-abc-v1", b'{"files": {"a": "1"}}')
    inside = compile_into_cache(entry)
    assert inside.parent == entry / "compiled" / "openvino" and kept.is_dir()


def test_openvino_reuses_its_compiled_models_with_the_same_results(lite_engine_dir, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from unioncam_rt.runtime.exported import ExportedEngine

    monkeypatch.setenv("UNIONCAM_RT_CACHE", str(tmp_path / "cache"))
    images = np.random.default_rng(0).random((2, 3, 224, 224)).astype(np.float32)
    masks = np.random.default_rng(1).random((5, 1, 7, 7)).astype(np.float32)
    index, classes = np.array([0, 1, 0, 1, 0]), np.array([3, 9, 27, 81, 243])

    def run(engine):
        feats = engine.features(images, np.array([-1, -1]))
        return feats.logits, engine.masked_probs(images, masks, index, classes)

    compiled = ExportedEngine(lite_engine_dir, "openvino", precision="bf16")
    folders = sorted((tmp_path / "cache" / "compiled" / "openvino").iterdir())
    def blob(folder):  # the compiled model; beside it, the record of its source
        files = sorted(p.name for p in folder.iterdir())
        assert files[-1] == compiled_cache.SOURCE_FILE and len(files) == 2, files
        return (folder / files[0]).stat().st_mtime_ns

    assert len(folders) == 3  # features, scores fp32 and bf16
    blobs = {f: blob(f) for f in folders}
    imported = ExportedEngine(lite_engine_dir, "openvino", precision="bf16")
    assert {f: blob(f) for f in folders} == blobs  # read back, not compiled again
    assert imported.scores_session.precision == "bf16" and imported.decision_session.precision == "fp32"
    monkeypatch.setenv("UNIONCAM_RT_COMPILED_CACHE", "0")
    fresh = ExportedEngine(lite_engine_dir, "openvino", precision="bf16")
    for got, want in zip(run(imported), run(fresh)):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(run(compiled), run(fresh)):
        np.testing.assert_array_equal(got, want)


def test_explain_from_the_cache_loads_only_the_backend_it_runs(lite_engine_dir, tmp_path, monkeypatch):
    """``explain IMG --fast`` on a cached export: no torch, no export pipeline, no ONNX Runtime."""
    pytest.importorskip("openvino")
    from unioncam_rt.cache import cache_dir
    from unioncam_rt.sources import ModelSource

    monkeypatch.setenv("UNIONCAM_RT_CACHE", str(tmp_path / "cache"))
    entry = cache_dir(ModelSource("efficientnet-lite0"))
    shutil.copytree(lite_engine_dir, entry)
    image = photo_or_grey(tmp_path)
    result = run_without_torch(f"""
        from unioncam_rt.cli import app
        try:
            app(["explain", {str(image)!r}, "--fast", "--out", {str(tmp_path / "out")!r}])
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        loaded = [m for m in sys.modules if m.split(".")[0] in ("torch", "onnxruntime", "onnx")
                  or m.startswith(("unioncam_rt.exporting.", "openvino.tools", "openvino_telemetry"))]
        # (the exporting package itself is an empty namespace; OpenVINO's model converter is not needed)
        assert not loaded, loaded
        print("ONLY-OPENVINO OK")
    """, "ONLY-OPENVINO OK")
    assert "exporting" not in result.stderr
    record = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert record["backend"].startswith("openvino") and record["timings"]["group_images"] == 1
    assert (entry / "compiled" / "openvino").is_dir()  # kept beside the export


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_masked_scoring_split_over_streams_changes_no_result(lite_engine_dir, precision):
    pytest.importorskip("openvino")
    from unioncam_rt.runtime.openvino_session import OpenVinoSession

    rng = np.random.default_rng(2)
    feeds = {"image": rng.random((2, 3, 224, 224), dtype=np.float32),
             "masks": rng.random((13, 1, 7, 7), dtype=np.float32),
             "image_index": rng.integers(0, 2, 13), "class_index": rng.integers(0, 1000, 13)}
    split = OpenVinoSession(lite_engine_dir / "scores.onnx", precision)
    whole = OpenVinoSession(lite_engine_dir / "scores.onnx", precision, streams=1)
    assert len(split.requests) == 2 and len(whole.requests) == 1
    assert len(split._split(feeds)) == 2 and [len(p["masks"]) for p in split._split(feeds)] == [6, 7]
    np.testing.assert_array_equal(split.infer(feeds)["probs"], whole.infer(feeds)["probs"])
    one = {name: value[:1] if name != "image" else value for name, value in feeds.items()}
    np.testing.assert_array_equal(split.infer(one)["probs"], whole.infer(one)["probs"])
    assert len(OpenVinoSession(lite_engine_dir / "features.onnx", precision).requests) == 1


def test_openvino_is_imported_without_its_converter_which_still_works_on_demand():
    pytest.importorskip("openvino")
    script = textwrap.dedent("""
        import sys
        from unioncam_rt.runtime.openvino_session import import_openvino, shared_core
        ov = import_openvino()
        shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        assert not [m for m in sys.modules if m.startswith(("openvino.tools.ovc", "openvino_telemetry"))]
        assert "openvino.tools.ovc" not in sys.modules and callable(ov.convert_model)
        import openvino.tools.ovc  # the real converter still imports
        assert sys.modules["openvino.tools.ovc"] is not None and import_openvino() is ov
        print("CONVERTER OK")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "CONVERTER OK" in result.stdout, result.stdout + result.stderr


def test_openvino_sessions_open_in_parallel_and_a_failure_closes_the_others(lite_engine_dir, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from unioncam_rt.errors import UnionCamError
    from unioncam_rt.runtime import openvino_session
    from unioncam_rt.runtime.openvino_session import OpenVinoSession, open_in_parallel

    monkeypatch.setenv("UNIONCAM_RT_COMPILED_CACHE", "0")
    specs = [(lite_engine_dir / "features.onnx", "fp32", None), (lite_engine_dir / "scores.onnx", "bf16", None)]
    together = open_in_parallel(specs)
    alone = [OpenVinoSession(*spec) for spec in specs]
    assert [s.precision for s in together] == ["fp32", "bf16"] and [len(s.requests) for s in together] == [1, 2]
    rng = np.random.default_rng(3)
    feeds = {"image": rng.random((1, 3, 224, 224), dtype=np.float32),
             "masks": rng.random((4, 1, 7, 7), dtype=np.float32),
             "image_index": np.zeros(4, dtype=np.int64), "class_index": rng.integers(0, 1000, 4)}
    np.testing.assert_array_equal(together[1].infer(feeds)["probs"], alone[1].infer(feeds)["probs"])
    closed = []
    monkeypatch.setattr(openvino_session.OpenVinoSession, "close", lambda self: closed.append(self.path))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    with pytest.raises(UnionCamError, match="broken.onnx"):
        open_in_parallel([specs[0], (broken, "fp32", None), specs[1]])
    assert sorted(str(p) for p in closed) == sorted(str(spec[0]) for spec in specs)
