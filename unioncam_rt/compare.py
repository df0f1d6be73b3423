"""One parity helper for every export/runtime test and the CLI's check."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Comparison:
    """How far ``got`` is from ``want``.

    Attributes:
        name: what was compared.
        max_abs: max absolute difference.
        rel_to_max: ``max_abs / max|want|`` (the tolerance measure of exported graphs).
        tolerance: allowed ``rel_to_max``.
    """

    name: str
    max_abs: float
    rel_to_max: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.rel_to_max <= self.tolerance

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAIL"
        return f"{self.name}: max|diff| {self.max_abs:.3g} = {self.rel_to_max:.3g} of max|ref| (tol {self.tolerance:g}) {verdict}"


def compare(name: str, got: np.ndarray, want: np.ndarray, tolerance: float = 1e-4, min_scale: float = 0.0) -> Comparison:
    """Compare arrays of the same shape by max abs error relative to ``max|want|`` (at
    least ``min_scale``: probabilities that are all near 0 are compared on the scale of
    probabilities, not of their largest value)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ValueError(f"{name}: shape {got.shape} != reference shape {want.shape}")
    max_abs = float(np.abs(got - want).max()) if got.size else 0.0
    scale = max(float(np.abs(want).max()) if want.size else 0.0, min_scale)
    return Comparison(name, max_abs, max_abs / scale if scale > 0 else max_abs, tolerance)
