"""The library's jobs without Ray: the serial explain run resumes as ``--ray`` does (same
settings: finished images kept; other settings: every image again), and an evaluation
refuses to mix records made with other settings."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")

from unioncam_rt.errors import UnionCamError  # noqa: E402
from unioncam_rt.jobs.explain import ExplainConfig, explain_images  # noqa: E402
from unioncam_rt.jobs.resume import RUN_FILE  # noqa: E402
from unioncam_rt.runtime.factory import EngineOptions  # noqa: E402


@pytest.fixture(scope="module")
def tiny_engine_dir(tmp_path_factory):
    from .test_engine_dir import export_tiny

    return export_tiny(tmp_path_factory.mktemp("tiny-jobs") / "engine")


@pytest.fixture
def pictures(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / name)
    return folder


def config(pictures, out, engine_dir, **changes):
    return ExplainConfig([pictures], out, engine=EngineOptions(engine_dir=engine_dir), **{"method": "gradcam", **changes})


def stamps(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir()}


def test_a_serial_run_resumes_where_it_stopped(pictures, tiny_engine_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert explain_images(config(pictures, out, tiny_engine_dir)) == 0
    assert sorted(p.name for p in out.glob("*.json")) == ["a.json", "b.json", "c.json"]
    # an interrupted run: b's JSON (written last) is missing
    (out / "b.json").unlink()
    before = stamps(out)
    assert RUN_FILE in before
    capsys.readouterr()
    assert explain_images(config(pictures, out, tiny_engine_dir)) == 0
    after = stamps(out)
    assert "2 of 3 images already have their outputs" in capsys.readouterr().err
    assert (out / "b.json").is_file()
    assert after["b.overlay.png"] != before["b.overlay.png"]
    assert all(after[name] == before[name] for name in before if not name.startswith("b."))  # RUN_FILE too


def test_other_settings_explain_every_image_again(pictures, tiny_engine_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert explain_images(config(pictures, out, tiny_engine_dir)) == 0
    before = stamps(out)
    capsys.readouterr()
    assert explain_images(config(pictures, out, tiny_engine_dir, method="layercam")) == 0
    assert "with other settings (method); explaining every image again" in capsys.readouterr().err
    after = stamps(out)
    assert all(after[name] != before[name] for name in before)  # RUN_FILE too: the new settings
    assert {json.loads((out / f"{s}.json").read_text())["method"] for s in "abc"} == {"layercam"}


def test_an_output_of_another_image_with_the_same_stem_is_not_kept(pictures, tiny_engine_dir, tmp_path):
    out = tmp_path / "out"
    assert explain_images(config(pictures, out, tiny_engine_dir)) == 0
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(other / "a.png")
    assert explain_images(config(other, out, tiny_engine_dir)) == 0
    assert json.loads((out / "a.json").read_text())["image"] == str(other / "a.png")


def test_a_bad_option_leaves_nothing_in_the_folder(pictures, tiny_engine_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UnionCamError, match="class"):
        explain_images(config(pictures, out, tiny_engine_dir, target="no-such-class"))
    assert not out.exists()


def test_an_evaluation_with_other_settings_is_refused(pictures, tiny_engine_dir, tmp_path):
    pytest.importorskip("matplotlib")
    from unioncam_rt.jobs.evaluate import EvaluateConfig, evaluate

    out = tmp_path / "eval"
    engine = EngineOptions(engine_dir=tiny_engine_dir)
    evaluate(EvaluateConfig([pictures], None, ["gradcam"], 1, out, engine=engine), progress=False)
    records = (out / "records.jsonl").read_text()
    with pytest.raises(UnionCamError, match="other settings: theta"):
        evaluate(EvaluateConfig([pictures], None, ["gradcam"], 2, out, theta=20.0, engine=engine), progress=False)
    assert (out / "records.jsonl").read_text() == records
    # the same settings resume: one more image
    evaluate(EvaluateConfig([pictures], None, ["gradcam"], 2, out, engine=engine), progress=False)
    assert len((out / "records.jsonl").read_text().splitlines()) == 2
