"""ONNX Runtime backend."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UnionCamError
from .session import Session

DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
# ONNX Runtime 1.32's MatmulTransposeFusion computes Transpose -> MatMul with a 1-D right
# operand wrongly (4% off on a softmax attention-pooling head, see
# tests/test_head_gradients.py); it brings nothing measurable to CNNs, so it stays off.
DISABLED_OPTIMIZERS = ["MatmulTransposeFusion"]


def choose_providers(requested: list[str] | None = None) -> list[str]:
    """Requested providers (each must be available), or every available one of TensorRT,
    CUDA, CPU in that order."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested:
        unknown = [p for p in requested if p not in available]
        if unknown:
            raise UnionCamError(f"ONNX Runtime provider(s) {', '.join(unknown)} requested; available: {', '.join(available)}")
        return list(requested)
    return [p for p in DEFAULT_PROVIDERS if p in available] or list(available)


class OnnxRuntimeSession(Session):
    """An ``onnxruntime.InferenceSession`` behind the `Session` protocol.

    Memory (measured on VGG16 and EfficientNet-Lite0, see the README's Memory section):
    initializers given in ``initializers`` are used in place (shared by every session that
    receives them, e.g. views of one mapped weights file); weight pre-packing is off, since
    it copies every Gemm/MatMul weight per session and brought no measurable speed here;
    the memory pattern is off, since it makes the arena hold a second full-size block after
    the first run, again at no measured speed cost.

    Args:
        path: the ``.onnx`` file.
        providers: execution providers (default: see `choose_providers`).
        threads: intra-op threads (default: ONNX Runtime's choice, the physical cores).
        initializers: name -> array for initializers to share instead of loading from the file.
    """

    backend = "onnxruntime"

    def __init__(self, path: Path, providers: list[str] | None = None, threads: int | None = None,
                 initializers: dict[str, np.ndarray] | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 4  # fatal only: errors reach the caller as exceptions, in one line
        options.enable_mem_pattern = False
        options.add_session_config_entry("session.disable_prepacking", "1")
        # OrtValues wrap the arrays without copying; they must outlive the session
        self._shared = {name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in (initializers or {}).items()}
        for name, value in self._shared.items():
            options.add_initializer(name, value)
        self.providers = choose_providers(providers)
        try:
            self.session = ort.InferenceSession(os.fspath(path), options, providers=self.providers,
                                                disabled_optimizers=DISABLED_OPTIMIZERS)
        except Exception as exc:  # ONNX Runtime raises its own Fail/InvalidGraph types
            raise UnionCamError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})") from None
        super().__init__(path, [i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))

    def close(self) -> None:
        self.session = None
        self._shared = {}


def open_sessions(directory: Path, manifest, precision: str, providers: list[str] | None, threads: int | None):
    """(features, scores, decision) sessions of an engine directory: both graphs read the one
    shared weights mapping; ``int8`` scores masked images with the quantized graph (made by
    ``unioncam-rt quantize``) and decides with the fp32 one."""
    from ..manifest import FEATURES_FILE, SCORES_FILE, SCORES_INT8_FILE, EngineDirError
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
