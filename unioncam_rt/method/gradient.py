"""Gradient-weighted maps: plain functions of activations ``A`` and gradients ``W``.

Shapes: ``A`` and ``W`` are ``[B, K, h, w]``; every function returns ``[B, h, w]`` float64
maps at feature resolution, before the final upsample and normalisation.
"""

from __future__ import annotations

import numpy as np

from .ops import relu


def gradcam_weights(gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM channel weights ``mean_ij(W_k)``, ``[B, K]``."""
    return gradients.astype(np.float64).mean(axis=(2, 3))


def gradcam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k mean_ij(W_k) A_k)``."""
    weights = gradcam_weights(gradients)
    return relu(np.einsum("bk,bkhw->bhw", weights, activations.astype(np.float64)))


def gradcampp(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM++ (Chattopadhay et al. 2018) with the exponential-output closed form.

    ``a_k^ij = W^2 / (2 W^2 + sum_ab(A_k) W^3)`` (0 where ``W == 0``),
    weights ``w_k = sum_ij a_k^ij ReLU(W_k^ij)``, map ``ReLU(sum_k w_k A_k)``, as in
    pytorch-grad-cam and torch-cam.
    """
    a = activations.astype(np.float64)
    g = gradients.astype(np.float64)
    g2 = g**2
    g3 = g2 * g
    total = a.sum(axis=(2, 3), keepdims=True)
    alpha = g2 / (2 * g2 + total * g3 + 1e-6)
    alpha = np.where(g != 0, alpha, 0.0)
    weights = (alpha * relu(g)).sum(axis=(2, 3))
    return relu(np.einsum("bk,bkhw->bhw", weights, a))


def layercam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """LayerCAM (Jiang et al. 2021): ``ReLU(sum_k ReLU(W_k) * A_k)`` element-wise."""
    return relu((relu(gradients.astype(np.float64)) * activations).sum(axis=1))


def denoise_threshold(gradients: np.ndarray, theta: float) -> np.ndarray:
    """Per-channel ``t_k = percentile(W_k, theta)`` over h*w (numpy's linear rule), ``[B, K]``."""
    b, k = gradients.shape[:2]
    return np.percentile(gradients.reshape(b, k, -1).astype(np.float64), theta, axis=-1)


ALPHA_VARIANTS = ("pixel-average", "gradient-sum")


def denoised_map(activations: np.ndarray, gradients: np.ndarray, theta: float = 10.0,
                 alpha: str = "pixel-average") -> np.ndarray:
    """UnionCAM's Activation Map Denoising, ``L_denoise``.

    ``W'_k = W_k`` where ``W_k >= percentile(W_k, theta)`` else 0, then
    ``L = ReLU(sum_k alpha_k * A_k)`` with, by ``alpha``:

    * ``"pixel-average"`` (default) **[choice]**: ``alpha_k = max(W'_k, 0) / max(n_k, 1)``,
      ``n_k = #{W'_k > 0}``;
    * ``"gradient-sum"`` (the public re-implementation's variant):
      ``alpha_k = max(W'_k, 0) / sum(max(W'_k, 0))`` (0 for a channel with no positive value),
      which removes every channel's gradient magnitude.
    """
    if alpha not in ALPHA_VARIANTS:
        from ..errors import UnionCamError

        raise UnionCamError(f"alpha variant {alpha!r} unknown; available: {', '.join(ALPHA_VARIANTS)}")
    g = gradients.astype(np.float64)
    threshold = denoise_threshold(g, theta)[:, :, None, None]
    kept = np.where(g >= threshold, g, 0.0)
    positive = np.maximum(kept, 0.0)
    if alpha == "pixel-average":
        norm = np.maximum((kept > 0).sum(axis=(2, 3), keepdims=True), 1)
    else:
        total = positive.sum(axis=(2, 3), keepdims=True)
        norm = np.where(total > 0, total, 1.0)
    return relu((positive / norm * activations).sum(axis=1))
