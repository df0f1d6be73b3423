"""`CamEngine` over an exported engine directory: two sessions and the manifest. Torch-free."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UnionCamError
from ..manifest import FEATURES_FILE, SCORES_FILE, SCORES_INT8_FILE, EngineDirError, Manifest, load_manifest, trt_engine_name
from ..method.ops import softmax
from ..method.engine import FeatureBatch
from .engine_check import check_sessions
from .session import Session
from .weights import read_index

BACKENDS = ("onnxruntime", "openvino", "tensorrt")


def open_sessions(directory: Path, manifest: Manifest, backend: str, providers: list[str] | None,
                  precision: str = "fp32", threads: int | None = None) -> tuple[Session, Session, Session | None]:
    """The features, scores and decision sessions of an engine directory on one backend.

    The decision session scores UnionCAM's three maps (the betas, hence the branch); in the
    CPU's reduced-precision modes (``int8`` on onnxruntime, ``bf16`` on openvino) it and the
    features pass stay fp32, so only the per-channel masked passes, nearly all the cost,
    run in reduced precision. None means: the scores session decides too.
    """
    if backend == "onnxruntime":
        from .onnxruntime_session import OnnxRuntimeSession
        from .weights import SharedWeights

        if precision == "int8" and SCORES_INT8_FILE not in manifest.files:
            raise EngineDirError(f"{directory} has no INT8 scoring graph; make one with "
                                 f"unioncam-rt quantize --engine {directory}")
        weights = SharedWeights(directory, manifest)
        features = OnnxRuntimeSession(directory / FEATURES_FILE, providers, threads, weights.for_graph(FEATURES_FILE))
        exact = OnnxRuntimeSession(directory / SCORES_FILE, providers, threads, weights.for_graph(SCORES_FILE))
        if precision != "int8":
            return features, exact, None
        return features, OnnxRuntimeSession(directory / SCORES_INT8_FILE, providers, threads), exact
    if backend == "openvino":
        from .openvino_session import open_sessions as open_openvino

        specs = [(directory / FEATURES_FILE, "fp32", threads), (directory / SCORES_FILE, "fp32", threads)]
        if precision != "fp32":
            specs.append((directory / SCORES_FILE, precision, threads))
        features, exact, *reduced = open_openvino(specs)  # compiled or imported in parallel
        if not reduced:
            return features, exact, None
        return features, reduced[0], exact
    if backend == "tensorrt":
        from .tensorrt_session import TensorRTSession

        sessions = []
        for graph in ("features", "scores"):
            name = trt_engine_name(graph, precision)
            if name not in manifest.engines:
                raise EngineDirError(f"{directory} has no {precision} TensorRT engine {name}; "
                                     f"export with --tensorrt{' --fp16' if precision == 'fp16' else ''}")
            sessions.append(TensorRTSession(directory / name, manifest.engines[name]))
        return sessions[0], sessions[1], None
    raise UnionCamError(f"backend {backend!r} unknown; available: {', '.join(BACKENDS)}, torch")


def mask_chunks(image_index: np.ndarray, max_masks: int, max_images: int) -> list[slice]:
    """Consecutive row ranges of at most ``max_masks`` rows referencing at most
    ``max_images`` distinct images each."""
    chunks, start, seen = [], 0, set()
    for row, image in enumerate(image_index.tolist()):
        if row - start == max_masks or (image not in seen and len(seen) == max_images):
            chunks.append(slice(start, row))
            start, seen = row, set()
        seen.add(image)
    if start < len(image_index):
        chunks.append(slice(start, len(image_index)))
    return chunks


class ExportedEngine:
    """Runs UnionCAM's two graphs from an engine directory.

    Args:
        directory: output of ``unioncam-rt export``.
        backend: ``"onnxruntime"`` (default), ``"openvino"`` or ``"tensorrt"``.
        providers: ONNX Runtime execution providers (default: TensorRT, CUDA, CPU as available).
        precision: ``"fp32"`` (default); ``"int8"`` (onnxruntime, quantized scoring graph);
            ``"bf16"`` (openvino); ``"fp16"`` (tensorrt).
        model: if given, the directory must hold this model.
        threads: ONNX Runtime intra-op threads (default: its own choice).
    """

    def __init__(self, directory: str | Path, backend: str = "onnxruntime", providers: list[str] | None = None,
                 precision: str = "fp32", model: str | None = None, threads: int | None = None):
        self.directory = Path(directory)
        self.manifest = load_manifest(self.directory, model)
        self.backend = backend
        self.precision = precision
        self.model_name = self.manifest.model
        self.input_size = tuple(self.manifest.input_size)
        self.class_names = list(self.manifest.class_names)
        self.feature_shape = tuple(self.manifest.feature_shape)
        read_index(self.directory, self.manifest)  # the weights index, checked whatever the backend
        self.features_session, self.scores_session, self.decision_session = open_sessions(
            self.directory, self.manifest, backend, providers, precision, threads)
        try:
            check_sessions(self.directory, self.manifest, self.features_session, self.scores_session,
                           self.decision_session)
        except EngineDirError:
            self.close()
            raise
        self._black = self.manifest.black_probs_array()
        # for --max-memory: the scoring graph's activations per masked image, and the weights
        # the process will hold once they are read (mapped lazily, so not yet resident)
        self.scoring_bytes_per_image = int(self.manifest.scoring_bytes_per_image) if backend == "onnxruntime" else 0
        weights = self.manifest.weights.get("file") if self.manifest.weights else None
        self.unread_weights_bytes = (self.directory / weights).stat().st_size if weights else 0

    def _check_images(self, images: np.ndarray) -> np.ndarray:
        expected = (3, *self.input_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise UnionCamError(f"images must be [B, {', '.join(map(str, expected))}]; got {list(images.shape)}")
        return images.astype(np.float32, copy=False)

    def _check_classes(self, class_index, allow_top1: bool) -> np.ndarray:
        classes = np.asarray(class_index, dtype=np.int64).reshape(-1)
        low = -1 if allow_top1 else 0
        bad = (classes < low) | (classes >= len(self.class_names))
        if bad.any():
            raise UnionCamError(f"class index {int(classes[bad][0])} out of range; this model has classes "
                                f"0..{len(self.class_names) - 1}" + (" (or -1 for top-1)" if allow_top1 else ""))
        return classes

    def features(self, images: np.ndarray, class_index: np.ndarray) -> FeatureBatch:
        images = self._check_images(images)
        classes = self._check_classes(class_index, allow_top1=True)
        if len(classes) != len(images):
            raise UnionCamError(f"{len(classes)} class indices for {len(images)} images")
        step = self.features_session.max_rows("image") or max(len(images), 1)
        parts = [self.features_session.infer({"image": images[i:i + step], "class_index": classes[i:i + step]})
                 for i in range(0, len(images), step)]
        out = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        return FeatureBatch(out["logits"], out["activations"], out["gradients"],
                            out["resolved_class_index"].astype(np.int64))

    def masked_probs(self, images, masks, image_index, class_index) -> np.ndarray:
        """Checked on the host first: TensorRT answers an out-of-range ``Gather`` index with
        zeros instead of an error. Calls are chunked to the session's profile limits."""
        return self._masked_probs(self.scores_session, images, masks, image_index, class_index)

    @property
    def decision_engine(self):
        """What scores UnionCAM's maps (the betas): this engine, or its fp32 twin in a
        reduced-precision mode (see `open_sessions`)."""
        return self if self.decision_session is None else _DecisionScores(self)

    def _masked_probs(self, session, images, masks, image_index, class_index) -> np.ndarray:
        images = self._check_images(images)
        image_index = np.asarray(image_index, dtype=np.int64).reshape(-1)
        classes = self._check_classes(class_index, allow_top1=False)
        masks = masks.astype(np.float32, copy=False)
        if not len(masks) == len(image_index) == len(classes):
            raise UnionCamError(f"{len(masks)} masks, {len(image_index)} image indices and {len(classes)} classes differ in count")
        if len(image_index) and (image_index.min() < 0 or image_index.max() >= len(images)):
            raise UnionCamError(f"image_index must lie in 0..{len(images) - 1}; got {int(image_index.min())}..{int(image_index.max())}")
        max_masks = session.max_rows("masks") or max(len(masks), 1)
        max_images = session.max_rows("image") or max(len(images), 1)
        probs = np.empty(len(masks), dtype=np.float32)
        for rows in mask_chunks(image_index, max_masks, max_images):
            used, local = np.unique(image_index[rows], return_inverse=True)
            probs[rows] = session.infer({
                "image": images[used] if len(used) < len(images) else images,
                "masks": masks[rows],
                "image_index": local.reshape(-1).astype(np.int64),
                "class_index": classes[rows],
            })["probs"]
        return probs

    def probs(self, images: np.ndarray) -> np.ndarray:
        logits = self.features(images, np.full(len(images), -1, dtype=np.int64)).logits
        return softmax(logits.astype(np.float64))

    def black_probs(self) -> np.ndarray:
        return self._black

    def close(self) -> None:
        self.features_session.close()
        self.scores_session.close()
        if self.decision_session is not None:
            self.decision_session.close()


class _DecisionScores:
    """The fp32 scoring session of an `ExportedEngine`, behind the engine's scoring calls."""

    def __init__(self, engine: ExportedEngine):
        self.engine = engine

    def masked_probs(self, images, masks, image_index, class_index) -> np.ndarray:
        return self.engine._masked_probs(self.engine.decision_session, images, masks, image_index, class_index)

    def black_probs(self) -> np.ndarray:
        return self.engine.black_probs()
