"""Array operations shared by every CAM method and every backend (numpy only)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def minmax(maps: np.ndarray, axes: tuple[int, ...] = (-2, -1)) -> np.ndarray:
    """Min-max normalise each map over ``axes`` to [0, 1]; a constant map becomes zeros."""
    lo = maps.min(axis=axes, keepdims=True)
    hi = maps.max(axis=axes, keepdims=True)
    span = hi - lo
    safe = np.where(span > 0, span, 1)
    return np.where(span > 0, (maps - lo) / safe, 0).astype(maps.dtype, copy=False)


def is_constant(maps: np.ndarray, axes: tuple[int, ...] = (-2, -1)) -> np.ndarray:
    """True where a map has max == min over ``axes``."""
    return maps.max(axis=axes) == maps.min(axis=axes)


@lru_cache(maxsize=32)
def bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """``[dst, src]`` weights of 1-D linear interpolation, align_corners=False.

    Same arithmetic as ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False)`` with an explicit output size: source coordinate
    ``(i + 0.5) * src / dst - 0.5``, clamped at 0, neighbours clamped at the edge.
    """
    scale = src / dst
    coords = np.maximum((np.arange(dst) + 0.5) * scale - 0.5, 0.0)
    lo = np.minimum(np.floor(coords).astype(np.int64), src - 1)
    hi = np.minimum(lo + 1, src - 1)
    frac = coords - lo
    matrix = np.zeros((dst, src), dtype=np.float64)
    np.add.at(matrix, (np.arange(dst), lo), 1.0 - frac)
    np.add.at(matrix, (np.arange(dst), hi), frac)
    return matrix


def resize_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``[..., h, w]`` maps to ``[..., H, W]`` (align_corners=False)."""
    rows = bilinear_matrix(maps.shape[-2], size[0])
    cols = bilinear_matrix(maps.shape[-1], size[1])
    out = np.einsum("Hh,...hw,Ww->...HW", rows, maps.astype(np.float64), cols, optimize=True)
    return out.astype(maps.dtype if maps.dtype.kind == "f" else np.float64, copy=False)


@lru_cache(maxsize=8)
def _gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    half = (size - 1) / 2
    x = np.linspace(-half, half, size)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(images: np.ndarray, kernel_size: int = 51, sigma: float = 50.0) -> np.ndarray:
    """Separable Gaussian blur of ``[..., H, W]`` images with reflect padding.

    Matches ``torchvision.transforms.functional.gaussian_blur`` (the blur used by the
    Group-CAM baseline and by the insertion metric: kernel 51, sigma 50).
    """
    kernel = _gaussian_kernel(kernel_size, float(sigma))
    pad = kernel_size // 2
    widths = [(0, 0)] * (images.ndim - 2) + [(pad, pad), (pad, pad)]
    padded = np.pad(images.astype(np.float64), widths, mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel_size, axis=-1)
    rows = windows @ kernel
    windows = np.lib.stride_tricks.sliding_window_view(rows, kernel_size, axis=-2)
    return (windows @ kernel).astype(images.dtype, copy=False)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)
