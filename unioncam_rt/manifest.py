"""``manifest.json``: what an engine directory holds, and the checks made before using it.

Torch-free: the runtime reads it. Loading refuses, with a one-line message, a missing
file, a changed hash, an unknown schema, or shapes that disagree with the model spec.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
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
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        if not isinstance(data, dict):
            raise EngineDirError(f"{source}: not a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise EngineDirError(
                f"{source}: schema version {version!r}, this unioncam-rt reads {SCHEMA_VERSION}; re-export the model"
            )
        try:
            manifest = cls(**data)
        except TypeError as exc:
            raise EngineDirError(f"{source}: malformed manifest ({exc})") from None
        manifest.input_size = tuple(manifest.input_size)
        manifest.feature_shape = tuple(manifest.feature_shape)
        return manifest

    def validate(self, directory: Path) -> None:
        """Check shapes against each other and every listed file's hash."""
        source = str(directory / MANIFEST_NAME)
        if len(self.black_probs) != len(self.class_names):
            raise EngineDirError(f"{source}: {len(self.black_probs)} black-image probabilities for "
                                 f"{len(self.class_names)} classes")
        if len(self.input_size) != 2 or len(self.feature_shape) != 3:
            raise EngineDirError(f"{source}: input_size must be (H, W) and feature_shape (K, h, w)")
        for required in (FEATURES_FILE, SCORES_FILE):
            if required not in self.files:
                raise EngineDirError(f"{source}: does not list {required}; re-export")
        if not self.weights.get("tensors") or self.weights.get("file") not in self.files:
            raise EngineDirError(f"{source}: no weights index; re-export")
        for name, digest in self.files.items():
            path = directory / name
            if not path.is_file():
                raise EngineDirError(f"{path}: listed in the manifest but missing; re-export")
            if sha256_file(path) != digest:
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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineDirError(f"{path}: unreadable manifest ({exc})") from None
    manifest = Manifest.from_dict(data, str(path))
    manifest.validate(directory)
    if model is not None and manifest.model != model:
        raise EngineDirError(f"{directory} holds model {manifest.model!r}, not {model!r}")
    return manifest
