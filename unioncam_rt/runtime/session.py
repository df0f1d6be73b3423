"""One protocol for running a graph: ``infer(feeds) -> outputs``.

Input checks and timing live here; each backend overrides only ``_infer_impl`` (and
``close``), after Polygraphy's runner base.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import UnionCamError


class EngineRunError(UnionCamError):
    """A backend failed while running a graph that it had opened."""


class Session:
    """A loaded graph that maps named numpy inputs to named numpy outputs.

    Attributes:
        path: the file it was loaded from.
        input_names: names ``infer`` requires.
        output_names: names ``infer`` returns.
        calls: number of ``infer`` calls so far.
        seconds: total time spent in ``infer``.
    """

    backend = "base"

    def __init__(self, path: Path, input_names: list[str], output_names: list[str]):
        self.path = Path(path)
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.calls = 0
        self.seconds = 0.0

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [name for name in self.input_names if name not in feeds]
        if missing:
            raise UnionCamError(f"{self.path.name}: missing inputs {missing}; it takes {self.input_names}")
        started = time.perf_counter()
        try:
            outputs = self._infer_impl({name: np.ascontiguousarray(feeds[name]) for name in self.input_names})
        except UnionCamError:
            raise
        except Exception as exc:  # the backend's own error types (ONNX Runtime Fail, OpenVINO RuntimeError...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineRunError(f"{self.path.name} failed on {self.backend} ({first[:300]})") from exc
        self.seconds += time.perf_counter() - started
        self.calls += 1
        return outputs

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def max_rows(self, name: str) -> int | None:
        """Largest first dimension input ``name`` may have in one call (None: no limit).

        Callers chunk their inputs to fit (TensorRT engines have optimisation profiles).
        """
        return None

    def close(self) -> None:
        """Release the backend's resources."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
