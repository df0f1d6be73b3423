"""UnionCAM's fusion and selection steps as plain functions (Hu et al. 2024, sections 2-3
of ``unioncam-method.md``). Shapes: maps ``[B, h, w]``, betas ``[B]``."""

from __future__ import annotations

import numpy as np

from .ops import minmax

FUSED = "fused"
REGION = "region"


def fusion_weights(beta_denoise: np.ndarray, beta_region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``b = max(beta, 0)``; where both are 0, equal weights (1, 1).

    **[choice]** A negative beta would invert its map, so it is clipped at 0; when neither
    map raises the class probability over the black image, both count equally.
    """
    b_d = np.maximum(np.asarray(beta_denoise, dtype=np.float64), 0.0)
    b_r = np.maximum(np.asarray(beta_region, dtype=np.float64), 0.0)
    neither = (b_d == 0) & (b_r == 0)
    return np.where(neither, 1.0, b_d), np.where(neither, 1.0, b_r)


def fuse(
    denoise: np.ndarray, region: np.ndarray, beta_denoise: np.ndarray, beta_region: np.ndarray
) -> np.ndarray:
    """``L_fused = minmax(b_d * minmax(L_denoise) + b_r * minmax(L_region))``."""
    b_d, b_r = fusion_weights(beta_denoise, beta_region)
    combined = b_d[:, None, None] * minmax(denoise) + b_r[:, None, None] * minmax(region)
    return minmax(combined)


def choose_fused(beta_fused: np.ndarray, beta_region: np.ndarray) -> np.ndarray:
    """Activation Map Selection: True where the fused map wins (``beta_fused > beta_region``)."""
    return np.asarray(beta_fused) > np.asarray(beta_region)


def near_tie(beta_fused: np.ndarray, beta_region: np.ndarray, margin: float) -> np.ndarray:
    """True where the selection could go either way within ``margin``: ``|beta_fused - beta_region| < margin``."""
    return np.abs(np.asarray(beta_fused, dtype=np.float64) - np.asarray(beta_region, dtype=np.float64)) < margin
