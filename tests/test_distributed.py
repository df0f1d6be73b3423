"""``explain DIR --ray`` and ``evaluate --ray`` on a local 2-CPU Ray: the serial run's files,
resuming after an interruption, bad files."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="needs ray: pip install 'unioncam-rt[serve]'")

from unioncam_rt.distributed.cluster import WorkerPool  # noqa: E402
from unioncam_rt.jobs.explain import ExplainConfig, explain_images  # noqa: E402
from unioncam_rt.jobs.resume import RUN_FILE  # noqa: E402
from unioncam_rt.jobs.settings import RayRun  # noqa: E402
from unioncam_rt.runtime.factory import EngineOptions  # noqa: E402

from .conftest import DEV_IMAGES, dev_rows  # noqa: E402

pytestmark = pytest.mark.serve
ON_RAY = RayRun(pool=WorkerPool(workers=2))


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) for the module; the jobs use it and leave it running."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for row in dev_rows(4):
        shutil.copy(DEV_IMAGES / row["file"], folder / row["file"])
    return folder


def explain_config(inputs, out, engine_dir, method="unioncam", ray=ON_RAY):
    return ExplainConfig([Path(inputs)], Path(out), None, EngineOptions(engine_dir=Path(engine_dir)), None, method,
                         10.0, None, True, ray=ray)


def without_timings(path: Path) -> dict:
    record = json.loads(path.read_text())
    record.pop("timings")
    return record


def assert_close(a, b, where="") -> None:
    """Equal, floats up to rounding (nested lists and dicts)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_outputs(serial: Path, distributed: Path) -> None:
    names = sorted(p.name for p in serial.iterdir())
    assert names == sorted(p.name for p in distributed.iterdir())
    for name in names:
        if name == RUN_FILE:  # the run's settings: the same, Ray or not
            assert json.loads((serial / name).read_text()) == json.loads((distributed / name).read_text())
        elif name.endswith(".json"):
            assert_close(without_timings(serial / name), without_timings(distributed / name), name)
        elif name.endswith(".npy"):
            np.testing.assert_allclose(np.load(serial / name), np.load(distributed / name), atol=1e-6)
        else:
            assert (serial / name).read_bytes() == (distributed / name).read_bytes(), name


@pytest.mark.slow
def test_explain_dir_on_ray_writes_the_serial_files_and_resumes(local_ray, photos, lite_engine_dir, tmp_path):
    ray_out, serial_out = tmp_path / "ray", tmp_path / "serial"
    assert explain_images(explain_config(photos, ray_out, lite_engine_dir), progress=False) == 0
    assert explain_images(explain_config(photos, serial_out, lite_engine_dir, ray=None)) == 0
    assert len(list(ray_out.glob("*.json"))) == 4
    assert_same_outputs(serial_out, ray_out)

    # an interrupted run: one image's JSON (written last) is missing, another left a temporary file
    first, second = sorted(ray_out.glob("*.json"))[:2]
    first.unlink()
    (ray_out / f".{second.name}.123.tmp").write_bytes(b"{")
    redone = first.name[: -len(".json")]
    kept = {p.name: p.stat().st_mtime_ns for p in ray_out.glob("*") if not p.name.startswith(redone)}
    assert explain_images(explain_config(photos, ray_out, lite_engine_dir), progress=False) == 0
    assert first.is_file()
    assert all(p.stat().st_mtime_ns == kept[p.name] for p in ray_out.glob("*") if p.name in kept)
    (ray_out / f".{second.name}.123.tmp").unlink()
    assert_same_outputs(serial_out, ray_out)


def test_bad_files_are_listed_and_the_rest_written(local_ray, photos, lite_engine_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(next(photos.iterdir()), folder / "good.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    assert explain_images(explain_config(folder, out, lite_engine_dir, "gradcam"), progress=False) == 1
    assert sorted(p.name for p in out.glob("*.json")) == ["good.json"]


def test_bad_options_are_refused_before_any_work(local_ray, photos, lite_engine_dir, tmp_path):
    from unioncam_rt.errors import UnionCamError

    config = explain_config(photos, tmp_path / "out", lite_engine_dir)
    config.target = "not-a-class"
    with pytest.raises(UnionCamError, match="unknown class name"):
        explain_images(config, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_evaluate_on_ray_matches_serial_and_resumes(local_ray, photos, lite_engine_dir, tmp_path):
    pytest.importorskip("matplotlib")
    from unioncam_rt.jobs.evaluate import EvaluateConfig, evaluate

    def config(out, ray=ON_RAY):
        return EvaluateConfig([photos], None, ["gradcam", "layercam"], 3, out, True, 2,
                              engine=EngineOptions(engine_dir=lite_engine_dir), ray=ray)

    ray_out, serial_out = tmp_path / "ray", tmp_path / "serial"
    evaluate(config(ray_out), progress=False)
    evaluate(config(serial_out, ray=None), progress=False)

    def records(out):
        lines = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "explain_s"} for r in lines]

    assert_close(records(ray_out), records(serial_out))
    for name in ("results.csv", "table.md"):
        assert (ray_out / name).read_text() == (serial_out / name).read_text()
    for path in serial_out.rglob("*.npy"):
        np.testing.assert_array_equal(np.load(path), np.load(ray_out / path.relative_to(serial_out)))

    # interrupted after two records, the second cut mid-line: the rest is redone
    lines = (ray_out / "records.jsonl").read_text().splitlines(keepends=True)
    (ray_out / "records.jsonl").write_text("".join(lines[:1]) + lines[1][:20])
    evaluate(config(ray_out), progress=False)
    assert_close(records(ray_out), records(serial_out))
    assert (ray_out / "results.csv").read_text() == (serial_out / "results.csv").read_text()
