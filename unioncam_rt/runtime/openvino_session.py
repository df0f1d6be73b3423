"""OpenVINO backend (CPU): the same exported ``features.onnx`` / ``scores.onnx``, torch-free.

OpenVINO picks bf16 by itself on CPUs that have it (AVX-512 BF16, AMX); ``fp32`` forces
``INFERENCE_PRECISION_HINT=f32`` (exact, checked against ONNX Runtime), ``bf16`` asks for
bf16 (an approximate fast mode; its fidelity is published in the README). The precision
the compiled model actually uses is read back into `OpenVinoSession.precision`.
Needs the ``openvino`` extra.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..errors import UnionCamError, require
from .session import Session

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}
_CORE = None
_CORE_LOCK = threading.Lock()


def shared_core():
    """One ``ov.Core`` per process (it owns the CPU plugin and its thread pool)."""
    global _CORE
    ov = require("openvino", "openvino")
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = ov.Core()
        return _CORE


# The names the engine graphs declare. OpenVINO gives a port every name its tensor had: an
# output that is an Identity of an inner tensor (``activations`` of a user's ONNX target)
# carries both, and ``get_any_name`` may return the inner one.
ENGINE_TENSORS = ("image", "class_index", "masks", "image_index", "logits", "activations", "gradients",
                  "resolved_class_index", "probs")


def port_name(port) -> str:
    """The engine's name for a compiled model's port (else any of its names)."""
    names = port.get_names()
    return next((name for name in ENGINE_TENSORS if name in names), port.get_any_name())


class OpenVinoSession(Session):
    """A model compiled by OpenVINO's CPU plugin behind the `Session` protocol.

    Args:
        path: the ``.onnx`` file (external weights are read beside it).
        precision: ``"fp32"`` (default, exact) or ``"bf16"``.
        threads: inference threads (default: OpenVINO's choice, the physical cores).
    """

    backend = "openvino"

    def __init__(self, path: Path, precision: str = "fp32", threads: int | None = None):
        if precision not in PRECISION_HINTS:
            raise UnionCamError(f"the openvino backend runs fp32 or bf16, not {precision}")
        core = shared_core()
        config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision], "PERFORMANCE_HINT": "LATENCY",
                  "NUM_STREAMS": "1"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(int(threads))
        try:
            model = core.read_model(str(path))
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long messages
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnionCamError(f"{path}: OpenVINO cannot compile it ({first[:300]})") from None
        used = str(self.compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        self.precision = "bf16" if "bf16" in used or "bfloat16" in used else "fp32" if "32" in used else used
        self.request = self.compiled.create_infer_request()
        self._lock = threading.Lock()
        inputs = [port_name(port) for port in self.compiled.inputs]
        outputs = [port_name(port) for port in self.compiled.outputs]
        super().__init__(path, inputs, outputs)

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:  # one infer request; results are copied out before it is reused
            result = self.request.infer(feeds)
            return {name: np.array(result[self.compiled.output(name)], copy=True) for name in self.output_names}

    def close(self) -> None:
        self.request = None
        self.compiled = None
