"""The paper's evaluation metrics (section 6 of ``unioncam-method.md``).

* Average Drop / Average Increase (Chattopadhay et al. 2018, the Grad-CAM++ definitions):
  ``Y_c = p_c(I)``, ``O_c = p_c(I * L)`` with ``L`` the explanation map at input resolution
  in [0, 1]; drop = ``max(0, Y_c - O_c) / Y_c * 100``, increase = ``1[O_c > Y_c] * 100``.
* Deletion / Insertion (Petsiuk et al. 2018, protocol of Group-CAM): pixels ordered by
  saliency (descending, ties in row-major order), 448 pixels per step (112 steps at
  224 x 224). Deletion sets them to the black image ``I_b`` **[choice: Group-CAM's code
  fills the mean colour]**; insertion starts from a blurred copy (Gaussian, kernel 51,
  sigma 50) and reveals the original pixels. Score = softmax probability of the explained
  class at every step (steps + 1 points); AUC by the trapezoid rule over [0, 1].
  Overall = AUC(insertion) - AUC(deletion).

The masked passes go through the same batched scoring engine as ``explain``.
Each metric is a small class with ``update`` / ``summary`` / ``reset``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .method.engine import CamEngine
from .method.ops import gaussian_blur

PIXELS_PER_STEP = 448


def trapezoid_auc(curve: np.ndarray) -> float:
    """Area under ``curve`` sampled at evenly spaced x in [0, 1]."""
    curve = np.asarray(curve, dtype=np.float64)
    return float((curve.sum() - curve[0] / 2 - curve[-1] / 2) / (len(curve) - 1))


def drop_and_increase(y: float, o: float) -> tuple[float, float]:
    """Per-image Average Drop and Average Increase terms, in percent."""
    return max(0.0, y - o) / y * 100.0, 100.0 if o > y else 0.0


@dataclass
class AverageDropIncrease:
    """Average Drop and Average Increase over the images seen (percent)."""

    drops: list[float] = field(default_factory=list)
    increases: list[float] = field(default_factory=list)

    def update(self, y: float, o: float) -> tuple[float, float]:
        drop, inc = drop_and_increase(y, o)
        self.drops.append(drop)
        self.increases.append(inc)
        return drop, inc

    def summary(self) -> dict[str, float]:
        return {"avg_drop": float(np.mean(self.drops)) if self.drops else float("nan"),
                "avg_increase": float(np.mean(self.increases)) if self.increases else float("nan"),
                "images": len(self.drops)}

    def reset(self) -> None:
        self.drops.clear()
        self.increases.clear()


@dataclass
class InsertionDeletion:
    """Mean insertion and deletion AUCs (and Overall) over the images seen."""

    insertion: list[float] = field(default_factory=list)
    deletion: list[float] = field(default_factory=list)

    def update(self, insertion_curve: np.ndarray, deletion_curve: np.ndarray) -> tuple[float, float]:
        ins, dele = trapezoid_auc(insertion_curve), trapezoid_auc(deletion_curve)
        self.insertion.append(ins)
        self.deletion.append(dele)
        return ins, dele

    def summary(self) -> dict[str, float]:
        ins = float(np.mean(self.insertion)) if self.insertion else float("nan")
        dele = float(np.mean(self.deletion)) if self.deletion else float("nan")
        return {"insertion": ins, "deletion": dele, "overall": ins - dele, "images": len(self.insertion)}

    def reset(self) -> None:
        self.insertion.clear()
        self.deletion.clear()


def class_probs(engine: CamEngine, images: np.ndarray, class_index: int, batch_size: int = 32) -> np.ndarray:
    """``p_c`` of each image, through the scoring engine with all-ones masks (the cheapest
    graph: a forward pass, softmax and a gather), in chunks of ``batch_size``."""
    _, h, w = engine.feature_shape
    out = np.empty(len(images), dtype=np.float64)
    for start in range(0, len(images), batch_size):
        chunk = np.ascontiguousarray(images[start:start + batch_size], dtype=np.float32)
        n = len(chunk)
        out[start:start + n] = engine.masked_probs(chunk, np.ones((n, 1, h, w), np.float32),
                                                   np.arange(n, dtype=np.int64), np.full(n, class_index, np.int64))
    return out


def masked_probability(engine: CamEngine, image: np.ndarray, saliency: np.ndarray, class_index: int) -> float:
    """``p_c(I * L)`` for one ``[3, H, W]`` image and an ``[H, W]`` map in [0, 1]."""
    return float(class_probs(engine, (image * saliency[None])[None], class_index)[0])


def pixel_order(saliency: np.ndarray) -> np.ndarray:
    """Flat pixel indices, most salient first (ties in row-major order)."""
    return np.argsort(-saliency.ravel(), kind="stable")


def causal_curves(engine: CamEngine, image: np.ndarray, saliency: np.ndarray, class_index: int,
                  step: int = PIXELS_PER_STEP, batch_size: int = 32,
                  blurred: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Insertion and deletion curves (``steps + 1`` probabilities each) for one image.

    The states are built a chunk at a time, never all at once.
    """
    channels, height, width = image.shape
    pixels = height * width
    steps = -(-pixels // step)
    order = pixel_order(saliency)
    if blurred is None:
        blurred = gaussian_blur(image[None])[0]
    curves = []
    for start_from, finish_at in ((blurred, image), (image, np.zeros_like(image))):
        source, target = start_from.reshape(channels, -1), finish_at.reshape(channels, -1)
        rank = np.empty(pixels, dtype=np.int64)
        rank[order] = np.arange(pixels)
        scores = np.empty(steps + 1, dtype=np.float64)
        for chunk in range(0, steps + 1, batch_size):
            counts = np.arange(chunk, min(chunk + batch_size, steps + 1)) * step
            changed = rank[None, :] < counts[:, None]  # [n, pixels]
            states = np.where(changed[:, None, :], target[None], source[None])
            scores[chunk:chunk + len(counts)] = class_probs(
                engine, states.reshape(len(counts), channels, height, width).astype(np.float32), class_index, batch_size)
        curves.append(scores)
    return curves[0], curves[1]
