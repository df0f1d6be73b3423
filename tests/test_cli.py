import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("torch")

from unioncam_rt.cli import app  # noqa: E402

FAST = ["--model", "resnet18", "--weights", "random:0", "--method", "gradcam"]


@pytest.fixture
def pictures(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 80, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (60, 40), dtype=np.uint8), "L").save(folder / "b.jpg")
    return folder


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_directory_run_writes_all_outputs(pictures, tmp_path):
    out = tmp_path / "out"
    result = invoke("explain", pictures, *FAST, "--out", out, "--save-npy", "--class", "tench")
    assert result.exit_code == 0, result.output
    for stem, size in [("a", (80, 50)), ("b", (40, 60))]:
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["class_index"] == 0 and record["class_name"] == "tench"
        assert Image.open(out / f"{stem}.overlay.png").size == size
        assert Image.open(out / f"{stem}.cam.png").mode == "L"
        cam = np.load(out / f"{stem}.cam.npy")
        assert cam.shape == (224, 224) and cam.dtype == np.float32 and 0 <= cam.min() <= cam.max() <= 1
    assert not list(out.glob(".*.tmp"))
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert (out / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_bad_file_is_listed_others_written_exit_nonzero(pictures, tmp_path):
    (pictures / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    result = invoke("explain", pictures, *FAST, "--out", out)
    assert result.exit_code == 1
    assert "broken.png" in result.output and "1 of 3 images failed" in result.output
    assert sorted(p.name for p in out.glob("*.json")) == ["a.json", "b.json"]
    assert not list(out.glob("broken*"))


@pytest.mark.parametrize("args,words", [
    (["--class", "1000"], "class index 1000 out of range"),
    (["--class", "tenchh"], "did you mean: 'tench'"),
    (["--method", "gradcam", "--model", "alexnet"], "unknown model 'alexnet'"),
    (["--theta", "150"], "theta 150.0 must be a percentile"),
])
def test_user_errors_are_one_line_and_exit_2(pictures, tmp_path, args, words):
    base = ["--model", "resnet18", "--weights", "random:0"]
    result = invoke("explain", pictures / "a.png", *base, *args, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert words in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_missing_image_exit_nonzero(tmp_path):
    result = invoke("explain", tmp_path / "nope.jpg", *FAST, "--out", tmp_path / "out")
    assert result.exit_code == 1 and "no such file" in result.output


def test_models_lists_zoo():
    result = invoke("models")
    assert result.exit_code == 0 and "efficientnet-lite0" in result.output and "offline" in result.output


@pytest.mark.parametrize("command", ["explain", "export", "inspect", "quantize", "evaluate", "serve", "models"])
def test_every_command_prints_its_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    if command in ("explain", "evaluate"):
        assert "/RULE[/FILL]" in result.output  # help text is printed as written, not read as markup
