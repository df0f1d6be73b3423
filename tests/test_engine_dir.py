"""Engine directories as untrusted input: every tampered directory is refused at open, in
one line, before anything is run or written (issue 19, items 6-8).

A tiny engine is exported once; each case copies it, tampers with it, and checks both the
library (`ExportedEngine` raises `EngineDirError`) and the CLI (``explain --engine DIR``:
exit 2, one line, no traceback, nothing written to ``--out``).
"""

import hashlib
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("onnx")

from unioncam_rt import manifest as manifest_module  # noqa: E402
from unioncam_rt.cli import app  # noqa: E402
from unioncam_rt.exporting.pipeline import ExportConfig, export_model  # noqa: E402
from unioncam_rt.manifest import EngineDirError  # noqa: E402
from unioncam_rt.runtime.exported import ExportedEngine  # noqa: E402

from .conftest import tiny_model  # noqa: E402

CPU = ["CPUExecutionProvider"]


def export_tiny(directory: Path, classes: int = 10, input_size: int = 32) -> Path:
    """Export the conftest's tiny net (10 classes, 32 x 32 input, features [16, 16, 16])."""
    model = tiny_model(seed=3, classes=classes)
    export_model(ExportConfig(model.net, directory, target_layer="trunk", input_size=(input_size, input_size),
                              mean=model.mean, std=model.std, check=False))
    return directory


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("tiny") / "engine")


@pytest.fixture(scope="module")
def other_engines(tmp_path_factory):
    """Engines of other shapes, whose graphs are swapped into a copy of ``engine_dir``."""
    root = tmp_path_factory.mktemp("others")
    return {"5 classes": export_tiny(root / "five", classes=5), "48 px": export_tiny(root / "big", input_size=48)}


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "picture.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(path)
    return path


# --- tampering helpers -----------------------------------------------------------------------


def read(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def write(directory: Path, data: dict) -> None:
    (directory / "manifest.json").write_text(json.dumps(data))


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def rehash(directory: Path, *names: str) -> None:
    """Update the manifest's hashes of ``names`` (a tamperer who knows the format)."""
    data = read(directory)
    for name in names:
        data["files"][name] = sha256(directory / name)
    write(directory, data)


def edit(change):
    """A tamper function that applies ``change(data)`` to the manifest."""
    def tamper(directory: Path, where) -> None:
        data = read(directory)
        change(data)
        write(directory, data)
    return tamper


def first_tensor(data: dict) -> dict:
    return next(iter(data["weights"]["tensors"].values()))


def set_tensor(key, value):
    return edit(lambda d: first_tensor(d).__setitem__(key, value))


def classes(count: int):
    """Keep ``count`` class names and black-image probabilities (renormalised to sum 1)."""
    def change(data):
        names = [f"class{i}" for i in range(count)]
        probs = [data["black_probs"][i % len(data["black_probs"])] for i in range(count)]
        data["class_names"], data["black_probs"] = names, [p / math.fsum(probs) for p in probs]
    return edit(change)


def absolute_weights(directory: Path, where) -> None:
    """``weights.file`` an absolute path to a foreign file, with its true hash."""
    foreign = where.outside / "foreign.bin"
    shutil.copy(directory / "weights.bin", foreign)
    data = read(directory)
    del data["files"]["weights.bin"]
    data["files"][str(foreign)] = sha256(foreign)
    data["weights"]["file"] = str(foreign)
    write(directory, data)


def parent_path_in_files(directory: Path, where) -> None:
    """A file outside the directory listed by a relative path, with its true hash."""
    secret = where.outside / "secret.txt"
    secret.write_text("not yours")
    data = read(directory)
    data["files"]["../" * 12 + str(secret).lstrip("/")] = sha256(secret)
    write(directory, data)


def link_leading_outside(directory: Path, where) -> None:
    """``weights.bin`` replaced by a symbolic link to an identical file outside."""
    shutil.copy(directory / "weights.bin", where.outside / "weights.bin")
    (directory / "weights.bin").unlink()
    (directory / "weights.bin").symlink_to(where.outside / "weights.bin")


def truncated_weights(directory: Path, where) -> None:
    """``weights.bin`` cut short, its hash updated: the index points past its end."""
    path = directory / "weights.bin"
    path.write_bytes(path.read_bytes()[:5000])
    rehash(directory, "weights.bin")


def swap_graphs(source: str):
    """Both graphs and the weights from another export, rehashed, with this manifest."""
    def tamper(directory: Path, where) -> None:
        for name in ("features.onnx", "scores.onnx", "weights.bin"):
            shutil.copy(where.others[source] / name, directory / name)
        data = read(directory)
        data["weights"] = read(where.others[source])["weights"]
        write(directory, data)
        rehash(directory, "features.onnx", "scores.onnx", "weights.bin")
    return tamper


def not_json(directory: Path, where) -> None:
    (directory / "manifest.json").write_text('{"schema_version": 2, "model": ')


def delete(name: str):
    def tamper(directory: Path, where) -> None:
        (directory / name).unlink()
    return tamper


# id -> (tamper, words the one-line error must contain)
CASES = {
    # 6: the manifest against the graphs
    "one class dropped": (classes(9), "logits as [?, 10], but the manifest implies [?, 9] (9 class_names"),
    "999 classes": (classes(999), "implies [?, 999]"),
    "1001 classes": (classes(1001), "implies [?, 1001]"),
    "one class name fewer": (edit(lambda d: d["class_names"].pop()), "10 black-image probabilities for 9 classes"),
    "input size changed": (edit(lambda d: d.__setitem__("input_size", [64, 64])),
                           "image as [?, 3, 32, 32], but the manifest implies [?, 3, 64, 64] (input_size [64, 64])"),
    "feature shape changed": (edit(lambda d: d.__setitem__("feature_shape", [16, 8, 8])),
                              "activations as [?, 16, 16, 16], but the manifest implies [?, 16, 8, 8]"),
    "graphs of a 5-class model": (swap_graphs("5 classes"), "logits as [?, 5], but the manifest implies [?, 10]"),
    "graphs of a 48 px model": (swap_graphs("48 px"), "image as [?, 3, 48, 48]"),
    "two means": (edit(lambda d: d.__setitem__("mean", [0.5, 0.5])), "field 'mean' is [0.5, 0.5], expected three"),
    "zero std": (edit(lambda d: d.__setitem__("std", [0.2, 0, 0.2])), "field 'std'"),
    "black probabilities not a softmax": (edit(lambda d: d.__setitem__("black_probs", [0.5] * 10)),
                                          "black_probs sum to 5.000000, not 1"),
    # 7: paths
    "absolute weights file": (absolute_weights, "is not a plain file name inside"),
    "../ path in files": (parent_path_in_files, "is not a plain file name inside"),
    "link leading outside": (link_leading_outside, "'weights.bin' is not a plain file name inside"),
    "engine name with a path": (edit(lambda d: d["engines"].__setitem__("../x.engine", {})), "'../x.engine'"),
    # 8: the weights index
    "negative offset": (set_tensor("offset", -4096), "offset -4096 is not a non-negative integer"),
    "object dtype": (set_tensor("dtype", "object"), "dtype 'object' is not one of"),
    "offset past the end": (set_tensor("offset", 1 << 30), "lie past the end of the file"),
    "offset a string": (set_tensor("offset", "0"), "offset '0' is not a non-negative integer"),
    "length not the shape's": (set_tensor("length", 8), "length 8 is not 4608"),
    "negative shape": (set_tensor("shape", [-16, 8, 3, 3]), "shape [-16, 8, 3, 3] is not a list"),
    "unaligned offset": (set_tensor("offset", 2), "offset 2 is not a multiple of 4"),
    "unknown graph": (set_tensor("graphs", ["../evil.onnx"]), "graphs ['../evil.onnx'] is not a list of"),
    "entry not an object": (edit(lambda d: d["weights"]["tensors"].__setitem__("x", 7)), "entry is int"),
    "tensors not an object": (edit(lambda d: d["weights"].__setitem__("tensors", [1])), "no weights index"),
    "truncated weights, rehashed": (truncated_weights, "lie past the end of the file (5000 bytes)"),
    # more: files, JSON, types
    "truncated weights": (lambda d, w: (d / "weights.bin").write_bytes(b"\0" * 10), "weights.bin: sha256 differs"),
    "missing graph": (delete("scores.onnx"), "scores.onnx: listed in the manifest but missing"),
    "missing manifest": (delete("manifest.json"), "is not an exported engine directory"),
    "manifest not JSON": (not_json, "unreadable manifest (Expecting value"),
    "manifest a list": (lambda d, w: (d / "manifest.json").write_text("[]"), "not a JSON object"),
    "class names a string": (edit(lambda d: d.__setitem__("class_names", "tench")), "field 'class_names' is 'tench'"),
    "input size strings": (edit(lambda d: d.__setitem__("input_size", ["32", "32"])), "field 'input_size'"),
    "input size boolean": (edit(lambda d: d.__setitem__("input_size", [True, 32])), "field 'input_size'"),
    "probability NaN": (edit(lambda d: d["black_probs"].__setitem__(0, float("nan"))), "field 'black_probs'"),
    "files not hashes": (edit(lambda d: d["files"].__setitem__("features.onnx", 3)), "field 'files'"),
    "weights not an object": (edit(lambda d: d.__setitem__("weights", "weights.bin")), "field 'weights'"),
    "unknown field": (edit(lambda d: d.__setitem__("extra", 1)), "unknown field 'extra'"),
    "missing field": (edit(lambda d: d.pop("feature_shape")), "field 'feature_shape' is missing"),
    "negative scoring bytes": (edit(lambda d: d.__setitem__("scoring_bytes_per_image", -1)),
                               "field 'scoring_bytes_per_image'"),
}


def where(tmp_path: Path, others=None) -> SimpleNamespace:
    """What tamper functions may use: a folder ``outside`` the engine, and ``others`` engines."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    return SimpleNamespace(outside=outside, others=others)


@pytest.fixture
def tampered(request, engine_dir, other_engines, tmp_path):
    """(directory, words): a copy of the tiny engine with one case of `CASES` applied."""
    tamper, words = CASES[request.param]
    directory = shutil.copytree(engine_dir, tmp_path / "engine")
    tamper(directory, where(tmp_path, other_engines))
    return directory, words


def test_the_untampered_engine_opens_and_explains(engine_dir, picture, tmp_path):
    engine = ExportedEngine(engine_dir, providers=CPU)
    assert engine.probs(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)
    result = CliRunner().invoke(app, ["explain", str(picture), "--engine", str(engine_dir), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "picture.json").is_file()


@pytest.mark.parametrize("tampered", list(CASES), indirect=True)
def test_a_tampered_directory_is_refused_in_one_line(tampered):
    directory, words = tampered
    with pytest.raises(EngineDirError) as refused:
        ExportedEngine(directory, providers=CPU)
    message = str(refused.value)
    assert words in message
    assert "\n" not in message


@pytest.mark.parametrize("tampered", list(CASES), indirect=True)
def test_explain_refuses_a_tampered_directory_exit_2_and_writes_nothing(tampered, picture, tmp_path):
    directory, words = tampered
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["explain", str(picture), "--engine", str(directory), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.output
    assert not out.exists()


def test_a_path_outside_is_refused_before_anything_is_read(engine_dir, tmp_path, monkeypatch):
    """No hash oracle: a listed file outside the directory is never opened."""
    directory = shutil.copytree(engine_dir, tmp_path / "engine")
    parent_path_in_files(directory, where(tmp_path))
    hashed = []
    real = manifest_module.sha256_file
    monkeypatch.setattr(manifest_module, "sha256_file", lambda path: hashed.append(Path(path)) or real(path))
    with pytest.raises(EngineDirError, match="not a plain file name"):
        ExportedEngine(directory, providers=CPU)
    assert hashed == []


@pytest.mark.parametrize("backend,precision", [("openvino", "fp32"), ("openvino", "bf16"), ("onnxruntime", "int8")])
def test_other_backends_check_their_sessions_too(engine_dir, picture, tmp_path, backend, precision):
    if backend == "openvino":
        pytest.importorskip("openvino")
    directory = shutil.copytree(engine_dir, tmp_path / "engine")
    if precision == "int8":
        from unioncam_rt.exporting.quantize import quantize_scores

        quantize_scores(directory, [picture], 1)
    assert ExportedEngine(directory, backend, precision=precision).probs(np.zeros((1, 3, 32, 32), np.float32)).shape \
        == (1, 10)
    classes(9)(directory, where(tmp_path))
    with pytest.raises(EngineDirError, match=r"logits as \[\?, 10\], but the manifest implies \[\?, 9\]"):
        ExportedEngine(directory, backend, precision=precision)
