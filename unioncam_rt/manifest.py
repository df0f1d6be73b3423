"""``manifest.json``: what an engine directory holds, and the checks made before using it.

Torch-free: the runtime reads it. An engine directory is untrusted input (it may come from
someone else), so loading refuses, with a one-line `EngineDirError`, in this order: a
manifest that is not a JSON object of the schema's fields with the right types and
values; a file name that is not a plain name inside the directory (absolute, ``..``, a
link leading outside); a missing file or a changed hash. Nothing listed is opened before
its name has been checked. The weights index is checked in `unioncam_rt.runtime.weights`
and the graphs' declared shapes against the manifest in `unioncam_rt.runtime.engine_check`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .errors import UnionCamError

SCHEMA_VERSION = 2
MANIFEST_NAME = "manifest.json"
FEATURES_FILE = "features.onnx"
SCORES_FILE = "scores.onnx"
WEIGHTS_FILE = "weights.bin"
SCORES_INT8_FILE = "scores.int8.onnx"


def trt_engine_name(graph: str, precision: str) -> str:
    """File name of a TensorRT engine, e.g. ``features.fp16.engine``."""
    return f"{graph}.{precision}.engine"


class EngineDirError(UnionCamError):
    """An engine directory is missing, stale, tampered with or inconsistent."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's contents, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- field types and values ------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _list_of(check, length: int | None = None):
    def accept(value) -> bool:
        return (isinstance(value, list) and (length is None or len(value) == length)
                and all(check(item) for item in value))
    return accept


def _dict_of(check_value):
    def accept(value) -> bool:
        return isinstance(value, dict) and all(isinstance(k, str) and check_value(v) for k, v in value.items())
    return accept


def _is_str(value) -> bool:
    return isinstance(value, str)


def _is_positive_int(value) -> bool:
    return _is_int(value) and value > 0


_SHA256 = re.compile(r"[0-9a-f]{64}")
LAYOUTS = ("nchw", "nhwc")
TARGET_MAP_RANKS = {"nchw": 3, "nhwc": 3, "tokens": 2}  # layout -> rank of ``shape`` (batch excluded)


def _is_target_map(value) -> bool:
    """``{}`` (schema 2 before it was recorded), or ``{"layout", "shape"}`` plus, for
    ``tokens``, ``prefix_tokens`` and ``grid`` with ``prefix_tokens + h * w == N``."""
    if not isinstance(value, dict):
        return False
    if not value:
        return True
    layout, shape = value.get("layout"), value.get("shape")
    if layout not in TARGET_MAP_RANKS or not _list_of(_is_positive_int, TARGET_MAP_RANKS[layout])(shape):
        return False
    if layout != "tokens":
        return set(value) == {"layout", "shape"}
    prefix, grid = value.get("prefix_tokens"), value.get("grid")
    return (set(value) == {"layout", "shape", "prefix_tokens", "grid"} and _is_int(prefix) and prefix >= 0
            and _list_of(_is_positive_int, 2)(grid) and prefix + grid[0] * grid[1] == shape[0])


# field -> (accepts the JSON value, what is expected): every field of `Manifest`
FIELD_RULES = {
    "model": (_is_str, "a string"),
    "source": (lambda v: isinstance(v, dict), "an object"),
    "weights_sha256": (_is_str, "a string"),
    "input_size": (_list_of(_is_positive_int, 2), "[H, W], two positive integers"),
    "mean": (_list_of(_is_number, 3), "three numbers (R, G, B)"),
    "std": (_list_of(lambda v: _is_number(v) and v != 0, 3), "three non-zero numbers (R, G, B)"),
    "layout": (lambda v: v in LAYOUTS, " or ".join(LAYOUTS)),
    "target_layer": (_is_str, "a string"),
    "feature_shape": (_list_of(_is_positive_int, 3), "[K, h, w], three positive integers"),
    "class_names": (lambda v: _list_of(_is_str)(v) and len(v) > 0, "a non-empty list of strings"),
    "black_probs": (_list_of(lambda p: _is_number(p) and 0 <= p <= 1), "a list of probabilities in [0, 1]"),
    "opset": (_is_positive_int, "a positive integer"),
    "versions": (_dict_of(_is_str), "an object of strings"),
    "files": (_dict_of(lambda v: isinstance(v, str) and _SHA256.fullmatch(v) is not None),
              "an object of file name -> sha256 (64 lowercase hex digits)"),
    "unioncam_rt": (_is_str, "a string"),
    "engines": (_dict_of(lambda v: isinstance(v, dict)), "an object of engine file name -> object"),
    "weights": (lambda v: isinstance(v, dict), "an object"),
    "scoring_bytes_per_image": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "target_map": (_is_target_map, "{} or {layout: nchw|nhwc|tokens, shape: [...]} (tokens: also prefix_tokens "
                                   "and grid [h, w], prefix_tokens + h*w = N)"),
    "schema_version": (_is_int, "an integer"),
}


def describe_target_map(entry: dict) -> str:
    """`` (from tokens 17x192: 1 prefix tokens dropped, 4x4 patch grid)`` for a ``target_map``
    entry that is not NCHW; ``""`` otherwise."""
    if not entry or entry.get("layout") == "nchw":
        return ""
    if entry["layout"] == "tokens":
        return (f" (from tokens {'x'.join(map(str, entry['shape']))}: {entry['prefix_tokens']} prefix tokens dropped, "
                f"{entry['grid'][0]}x{entry['grid'][1]} patch grid)")
    return f" (from channels-last {'x'.join(map(str, entry['shape']))})"


def _show(value, limit: int = 60) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_fields(data: dict, source: str) -> None:
    """Refuse unknown or missing fields, values of the wrong type or range, and black-image
    probabilities that are not one softmax over the classes."""
    known = {f.name for f in fields(Manifest)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise EngineDirError(f"{source}: unknown field {unknown[0]!r}; this unioncam-rt reads schema "
                             f"{SCHEMA_VERSION} ({', '.join(sorted(known))}); re-export the model")
    required = [f.name for f in fields(Manifest) if f.default is f.default_factory is MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise EngineDirError(f"{source}: field {missing[0]!r} is missing; re-export the model")
    for name, value in data.items():
        accepts, expected = FIELD_RULES[name]
        if not accepts(value):
            raise EngineDirError(f"{source}: field {name!r} is {_show(value)}, expected {expected}; re-export the model")
    if len(data["black_probs"]) != len(data["class_names"]):
        raise EngineDirError(f"{source}: {len(data['black_probs'])} black-image probabilities for "
                             f"{len(data['class_names'])} classes")
    total = math.fsum(data["black_probs"])
    if abs(total - 1) > 1e-3:
        raise EngineDirError(f"{source}: black_probs sum to {total:.6f}, not 1 (a softmax); re-export the model")


# --- paths ---------------------------------------------------------------------------------


def listed_names(manifest: "Manifest") -> list:
    """Every file name the manifest refers to: ``files``, ``weights.file`` and ``engines``."""
    names = list(manifest.files) + list(manifest.engines)
    if "file" in manifest.weights:
        names.append(manifest.weights["file"])
    return names


def inside_directory(directory: Path, name) -> Path | None:
    """``directory / name`` if ``name`` is a plain file name (one component, not ``.`` or
    ``..``) whose path, links resolved, stays inside ``directory``; else None."""
    if not isinstance(name, str) or not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        return None
    path = directory / name
    try:
        root = directory.resolve(strict=True)
        resolved = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return None
    return path if resolved != root and resolved.is_relative_to(root) else None


def check_paths(directory: Path, manifest: "Manifest", source: str) -> None:
    """Refuse any listed name that is not a plain name inside the directory, before any is read."""
    for name in listed_names(manifest):
        if inside_directory(directory, name) is None:
            raise EngineDirError(f"{source}: file name {_show(name)} is not a plain file name inside {directory} "
                                 "(absolute, '..', a path or a link leading outside); the directory is refused")


@dataclass
class Manifest:
    """Contents of ``manifest.json`` (see the README's "Engine contract").

    Attributes:
        model: display name (zoo name, factory function name or ONNX file stem).
        source: where the model came from: ``kind`` (``zoo``, ``python``, ``onnx``,
            ``module``) and its details (zoo name and weights; factory ``PATH.py:FN``; ONNX
            file name and sha256).
        weights_sha256: hash of the weights the graphs were exported from.
        input_size: (H, W).
        mean, std: normalisation inside the graphs.
        layout: the original model's input layout (``nchw`` or ``nhwc``); the graphs always
            take NCHW.
        target_layer: where activations are taken (module or tensor name).
        feature_shape: (K, h, w) of the activations.
        class_names: one name per class (the user's labels).
        black_probs: softmax of the all-black image, one per class.
        opset: ONNX opset.
        versions: library versions used to export.
        files: file name -> sha256, for every artifact in the directory.
        engines: TensorRT engine metadata, keyed by engine file name.
        unioncam_rt: version of unioncam-rt that exported.
        weights: the shared weights file and its index: ``{"file": "weights.bin", "tensors":
            {name: {"offset", "length", "dtype", "shape"}}}``, so a runtime maps every tensor
            once and hands it to both graphs.
        scoring_bytes_per_image: estimated activation bytes of the scoring graph per masked
            image (its largest node's inputs and outputs), for ``--max-memory``.
        target_map: how the target's output was read as ``feature_shape`` (optional; ``{}``
            in directories exported before it was recorded): ``layout`` (``nchw``, ``nhwc``
            channels-last, or ``tokens`` ``[N, C]``), ``shape`` (the output without the batch
            axis) and, for tokens, ``prefix_tokens`` (class, distillation, register tokens,
            dropped) and ``grid`` ``[h, w]`` of the patch tokens. The graphs already output
            ``[B, K, h, w]``: a runtime needs nothing of it.
    """

    model: str
    source: dict
    weights_sha256: str
    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str
    target_layer: str
    feature_shape: tuple[int, int, int]
    class_names: list[str]
    black_probs: list[float]
    opset: int
    versions: dict[str, str]
    files: dict[str, str]
    unioncam_rt: str
    engines: dict[str, dict] = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    scoring_bytes_per_image: int = 0
    target_map: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def black_probs_array(self) -> np.ndarray:
        return np.asarray(self.black_probs, dtype=np.float64)

    @classmethod
    def from_dict(cls, data: dict, source: str) -> "Manifest":
        """A manifest from parsed JSON, every field's type and range checked (`check_fields`)."""
        if not isinstance(data, dict):
            raise EngineDirError(f"{source}: not a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise EngineDirError(
                f"{source}: schema version {version!r}, this unioncam-rt reads {SCHEMA_VERSION}; re-export the model"
            )
        check_fields(data, source)
        manifest = cls(**data)
        manifest.input_size = tuple(manifest.input_size)
        manifest.feature_shape = tuple(manifest.feature_shape)
        return manifest

    def validate(self, directory: Path) -> None:
        """Check every listed name (`check_paths`), then every listed file's presence and hash."""
        source = str(directory / MANIFEST_NAME)
        check_paths(directory, self, source)
        for required in (FEATURES_FILE, SCORES_FILE):
            if required not in self.files:
                raise EngineDirError(f"{source}: does not list {required}; re-export")
        if not isinstance(self.weights.get("tensors"), dict) or self.weights.get("file") not in self.files:
            raise EngineDirError(f"{source}: no weights index; re-export")
        unhashed = [name for name in self.engines if name not in self.files]
        if unhashed:
            raise EngineDirError(f"{source}: engine {unhashed[0]} has no sha256 in 'files'; re-export")
        for name, digest in self.files.items():
            path = directory / name
            if not path.is_file():
                raise EngineDirError(f"{path}: listed in the manifest but missing; re-export")
            try:
                actual = sha256_file(path)
            except OSError as exc:
                raise EngineDirError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from None
            if actual != digest:
                raise EngineDirError(f"{path}: sha256 differs from the manifest (changed or tampered); re-export")


def load_manifest(directory: str | Path, model: str | None = None) -> Manifest:
    """Read and validate ``DIR/manifest.json``.

    Args:
        directory: the engine directory.
        model: if given, the model the caller expects (a different one is refused).
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise EngineDirError(f"engine directory {directory} does not exist; run unioncam-rt export first")
    if not path.is_file():
        raise EngineDirError(f"{path} is missing; {directory} is not an exported engine directory")
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: JSONDecodeError, or nesting too deep
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise EngineDirError(f"{path}: unreadable manifest ({first}); re-export") from None
    except RecursionError:
        raise EngineDirError(f"{path}: unreadable manifest (nested too deeply); re-export") from None
    manifest = Manifest.from_dict(data, str(path))
    manifest.validate(directory)
    if model is not None and manifest.model != model:
        raise EngineDirError(f"{directory} holds model {manifest.model!r}, not {model!r}")
    return manifest
