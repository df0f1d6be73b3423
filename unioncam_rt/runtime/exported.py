"""`CamEngine` over an exported engine directory: two sessions and the manifest. Torch-free."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UnionCamError
from ..manifest import EngineDirError, Manifest, load_manifest
from ..method.ops import softmax
from .base import FeatureBatch
from .session import Session

FEATURES_FILE = "features.onnx"
SCORES_FILE = "scores.onnx"
SCORES_INT8_FILE = "scores.int8.onnx"
BACKENDS = ("onnxruntime", "tensorrt")


def trt_engine_name(graph: str, precision: str) -> str:
    """File name of a TensorRT engine, e.g. ``features.fp16.engine``."""
    return f"{graph}.{precision}.engine"


def open_sessions(directory: Path, manifest: Manifest, backend: str, providers: list[str] | None,
                  precision: str = "fp32", threads: int | None = None) -> tuple[Session, Session]:
    """The features and scores sessions of an engine directory on one backend."""
    if backend == "onnxruntime":
        from .onnxruntime_session import OnnxRuntimeSession

        scores = SCORES_FILE
        if precision == "int8":
            if SCORES_INT8_FILE not in manifest.files:
                raise EngineDirError(f"{directory} has no INT8 scoring graph; make one with "
                                     f"unioncam-rt quantize --engine {directory}")
            scores = SCORES_INT8_FILE
        return (OnnxRuntimeSession(directory / FEATURES_FILE, providers, threads),
                OnnxRuntimeSession(directory / scores, providers, threads))
    if backend == "tensorrt":
        from .tensorrt_session import TensorRTSession

        sessions = []
        for graph in ("features", "scores"):
            name = trt_engine_name(graph, precision)
            if name not in manifest.engines:
                raise EngineDirError(f"{directory} has no {precision} TensorRT engine {name}; "
                                     f"export with --tensorrt{' --fp16' if precision == 'fp16' else ''}")
            sessions.append(TensorRTSession(directory / name, manifest.engines[name]))
        return sessions[0], sessions[1]
    raise UnionCamError(f"backend {backend!r} unknown; available: {', '.join(BACKENDS)}, torch")


class ExportedEngine:
    """Runs UnionCAM's two graphs from an engine directory.

    Args:
        directory: output of ``unioncam-rt export``.
        backend: ``"onnxruntime"`` (default) or ``"tensorrt"``.
        providers: ONNX Runtime execution providers (default: TensorRT, CUDA, CPU as available).
        precision: TensorRT engine precision, ``"fp32"`` or ``"fp16"``.
        model: if given, the directory must hold this model.
        threads: ONNX Runtime intra-op threads (default: its own choice).
    """

    def __init__(self, directory: str | Path, backend: str = "onnxruntime", providers: list[str] | None = None,
                 precision: str = "fp32", model: str | None = None, threads: int | None = None):
        self.directory = Path(directory)
        self.manifest = load_manifest(self.directory, model)
        self.backend = backend
        self.model_name = self.manifest.model
        self.input_size = tuple(self.manifest.input_size)
        self.class_names = list(self.manifest.class_names)
        self.feature_shape = tuple(self.manifest.feature_shape)
        self.features_session, self.scores_session = open_sessions(
            self.directory, self.manifest, backend, providers, precision, threads)
        self._black = self.manifest.black_probs_array()

    def _check_images(self, images: np.ndarray) -> np.ndarray:
        expected = (3, *self.input_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise UnionCamError(f"images must be [B, {', '.join(map(str, expected))}]; got {list(images.shape)}")
        return images.astype(np.float32, copy=False)

    def features(self, images: np.ndarray, class_index: np.ndarray) -> FeatureBatch:
        out = self.features_session.infer({
            "image": self._check_images(images),
            "class_index": np.asarray(class_index, dtype=np.int64),
        })
        return FeatureBatch(out["logits"], out["activations"], out["gradients"],
                            out["resolved_class_index"].astype(np.int64))

    def masked_probs(self, images, masks, image_index, class_index) -> np.ndarray:
        out = self.scores_session.infer({
            "image": self._check_images(images),
            "masks": masks.astype(np.float32, copy=False),
            "image_index": np.asarray(image_index, dtype=np.int64),
            "class_index": np.asarray(class_index, dtype=np.int64),
        })
        return out["probs"]

    def probs(self, images: np.ndarray) -> np.ndarray:
        logits = self.features(images, np.full(len(images), -1, dtype=np.int64)).logits
        return softmax(logits.astype(np.float64))

    def black_probs(self) -> np.ndarray:
        return self._black

    def close(self) -> None:
        self.features_session.close()
        self.scores_session.close()
