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


# --- hardening (issue 19: items 10-13) ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_engine_dir(tmp_path_factory):
    from .test_engine_dir import export_tiny

    return export_tiny(tmp_path_factory.mktemp("tiny-cli") / "engine")


def corrupt_im(path):
    """An IM file whose header gives a fractional width: Pillow opens it, then its decoder
    raises TypeError (not one of the errors `decode_upright_rgb` maps)."""
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(path.with_suffix(".tmp.im"))
    data = path.with_suffix(".tmp.im").read_bytes().replace(b"40*40", b"40.5*40")
    path.with_suffix(".tmp.im").unlink()
    path.write_bytes(data)
    return path


def test_a_corrupt_image_does_not_lose_the_good_ones(pictures, tiny_engine_dir, tmp_path):
    bad = corrupt_im(tmp_path / "bad.im")
    out = tmp_path / "out"
    result = invoke("explain", pictures / "a.png", bad, pictures / "b.jpg", "--engine", tiny_engine_dir, "--out", out)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "1 of 3 images failed" in result.output and f"{bad}: " in result.output
    assert sorted(p.name for p in out.glob("*.json")) == ["a.json", "b.json"]


def test_a_failing_step_is_retried_image_by_image(pictures, tiny_engine_dir, tmp_path, monkeypatch):
    """Images explained together: one the engine cannot run costs only itself."""
    from unioncam_rt.errors import UnionCamError
    from unioncam_rt.explainer import Explainer

    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(pictures / "poison.png")
    real = Explainer.explain_loaded

    def explain_loaded(self, images, targets):
        if any(image.path.name == "poison.png" for image in images):
            raise UnionCamError("the engine refused this batch")
        return real(self, images, targets)

    monkeypatch.setattr(Explainer, "explain_loaded", explain_loaded)
    out = tmp_path / "out"
    result = invoke("explain", pictures, "--engine", tiny_engine_dir, "--out", out)
    assert result.exit_code == 1, result.output
    assert "1 of 3 images failed" in result.output and "poison.png: the engine refused this batch" in result.output
    assert sorted(p.name for p in out.glob("*.json")) == ["a.json", "b.json"]


@pytest.mark.parametrize("command", ["explain", "evaluate"])
@pytest.mark.parametrize("where,words", [("file", "is a file, not a folder"),
                                         ("file/sub", "lies under"), ("file/sub/deeper", "lies under")])
def test_an_unusable_out_is_one_line_exit_2_before_any_work(pictures, tmp_path, command, where, words):
    (tmp_path / "file").write_text("a regular file")
    out = tmp_path / where
    # the engine directory does not exist: refusing --out first shows no work was started
    result = invoke(command, pictures / "a.png", "--engine", tmp_path / "no-engine", "--out", out)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"--out {out} " in lines[0] and words in lines[0], result.output
    assert (tmp_path / "file").read_text() == "a regular file"


@pytest.mark.parametrize("command", ["explain", "evaluate"])
def test_a_read_only_out_is_one_line_exit_2(pictures, tmp_path, monkeypatch, command):
    import os
    import tempfile

    out = tmp_path / "read-only"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the probe fail as it would for a user
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        result = invoke(command, pictures / "a.png", "--engine", tmp_path / "no-engine", "--out", out / "sub")
    finally:
        out.chmod(0o755)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "is not writable (it would be created in" in lines[0] and "Permission denied" in lines[0]
    assert list(out.iterdir()) == []


def test_symlink_loops_and_dangling_links_are_listed_as_failures(pictures, tiny_engine_dir, tmp_path):
    (pictures / "loop.png").symlink_to(pictures / "loop.png")
    (pictures / "gone.jpg").symlink_to(pictures / "missing.jpg")
    out = tmp_path / "out"
    result = invoke("explain", pictures, "--engine", tiny_engine_dir, "--out", out)
    assert result.exit_code == 1, result.output
    assert "2 of 4 images failed" in result.output
    assert f"{pictures / 'loop.png'}: symbolic link loop" in result.output
    assert f"{pictures / 'gone.jpg'}: symbolic link to" in result.output
    assert sorted(p.name for p in out.glob("*.json")) == ["a.json", "b.json"]


@pytest.mark.parametrize("saved", ["module", "custom object"])
def test_a_pickled_checkpoint_is_refused_without_advising_weights_only_false(tmp_path, saved):
    import torch

    path = tmp_path / "checkpoint.pth"
    torch.save(torch.nn.Linear(2, 2) if saved == "module" else {"state_dict": {}, "args": __import__("argparse")
                                                                  .Namespace(lr=0.1)}, path)
    result = invoke("explain", tmp_path / "x.png", "--model", "resnet18", "--weights", path, "--out", tmp_path / "o")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output
    line = errors[0]
    assert "holds pickled code objects" in line
    assert "torch.save(model.state_dict(), PATH)" in line
    assert "weights_only=False" not in line and "weights_only` set to `False" not in line and "trust" not in line
    assert not (tmp_path / "o").exists()
