"""Budgeted region scoring: score at most K channels' masks per image for the region map.

An approximate, opt-in mode (exact stays the default). Per image, among the non-constant
channels:

* **selection** ranks channels by a cheap statistic of the feature pass:
  ``variance`` (of ``A_k`` over h*w; the Faster Score-CAM idea), ``energy``
  (``sum A_k^2``), ``mass`` (``sum |A_k|``: how much the channel can add to the region map,
  whose weights are probabilities) or ``gradcam`` (``mean(W_k) * mean(A_k)``, the channel's
  Grad-CAM contribution); ties go to the lower channel index;
* **size** is a fixed ``K``, or adaptive: the fewest channels whose statistic covers a
  share of the image's total (``cover``; variance for ``gradcam``, whose statistic can be
  negative), at most ``K``;
* **fill** weights the channels left unscored: ``zero`` (Faster Score-CAM), ``mean`` (the
  mean score of the scored channels of that image), ``estimate`` (a per-image least-
  squares line from the selection statistic to the score, fitted on the scored channels,
  clipped to [0, 1]) or ``group``: the unscored channels are grouped by where their
  activation peaks (the cell of a grid of at most `GROUP_GRID` x `GROUP_GRID` over the
  feature map), each group's mean mask is scored once, and every member gets that score
  (one extra pass per non-empty group).

A budget may also carry a `TieRule` (``--fast``'s does): an image whose budgeted region map
leaves UnionCAM's two candidate maps scoring within a margin is decided again with fp32
channel scores, exactly or from a larger fp32 cover first (see
`unioncam_rt.method.cams.recheck_near_ties`).

Written as plain functions on arrays; the C++ library mirrors them (not the tie rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import UnionCamError

RULES = ("variance", "energy", "mass", "gradcam")
FILLS = ("zero", "mean", "estimate", "group")
GROUP_GRID = 7


@dataclass(frozen=True)
class TieRule:
    """When a budgeted UnionCAM decides its branch again: on near ties, in fp32.

    UnionCAM keeps the fused map when ``d = beta_fused - beta_region > 0``. A budget moves
    the region map, and reduced-precision (bf16) channel passes move the channel scores,
    so the budgeted ``d`` is off by some error, and where the exact ``d`` is smaller than
    that error the branch can flip. An image whose budgeted ``|d|`` is under ``margin`` is
    decided again with fp32 channel scores (the engine's fp32 decision engine where its
    channel passes run in reduced precision; else the budget's own scores are kept):

    * with ``cover`` None, exactly: every live channel scored;
    * with a ``cover``, in two steps: first the channels whose statistic (the budget's
      rule) covers that share of the image's total, unscored channels weighing 0; an image
      still within ``exact_margin`` then gets the rest of its live channels scored too,
      which is exact UnionCAM (the channels of the first step are not scored twice).

    The margins and the cover are measured on the development photos
    (``benchmarks/near_ties.py``; README: Fidelity).

    Attributes:
        margin: ``|beta_fused - beta_region|`` under which a budgeted image is decided again.
        cover: the share covered by the fp32 channels of the first re-check (None: exact at once).
        exact_margin: ``|d|`` after the cover's re-check under which the image is explained exactly.
    """

    margin: float
    cover: float | None = None
    exact_margin: float = 0.0

    def __post_init__(self):
        if not self.margin >= 0:
            raise UnionCamError(f"tie margin {self.margin} must be >= 0")
        if self.cover is not None and not 0 < self.cover <= 1:
            raise UnionCamError(f"tie cover {self.cover} must lie in (0, 1]")
        if not self.exact_margin >= 0:
            raise UnionCamError(f"tie exact margin {self.exact_margin} must be >= 0")

    def describe(self) -> dict:
        if self.cover is None:
            return {"margin": self.margin}
        return {"margin": self.margin, "cover": self.cover, "exact_margin": self.exact_margin}


@dataclass(frozen=True)
class Budget:
    """How many channels to score per image, which ones, and how to weight the others.

    Attributes:
        channels: at most this many channels are scored (0 with no ``cover``: exact).
        cover: adaptive size: the fewest channels (by the rule's statistic) whose statistic
            reaches this share of the image's total (0 < cover <= 1), capped at ``channels``
            if given.
        rule: ``variance`` (default), ``energy``, ``mass`` or ``gradcam``.
        fill: ``zero`` (default), ``mean``, ``estimate`` or ``group``.
        ties: decide UnionCAM's near ties again (default None: the budget decides); not
            part of `spec` (the C++ library runs budgets without it).
    """

    channels: int = 0
    cover: float | None = None
    rule: str = "variance"
    fill: str = "zero"
    ties: TieRule | None = None

    def __post_init__(self):
        if self.channels < 0:
            raise UnionCamError(f"budget {self.channels} must be 0 (exact) or a positive channel count")
        if self.cover is not None and not 0 < self.cover <= 1:
            raise UnionCamError(f"budget cover {self.cover} must lie in (0, 1]")
        if self.rule not in RULES:
            raise UnionCamError(f"budget rule {self.rule!r} unknown; available: {', '.join(RULES)}")
        if self.fill not in FILLS:
            raise UnionCamError(f"budget fill {self.fill!r} unknown; available: {', '.join(FILLS)}")

    @property
    def exact(self) -> bool:
        return self.channels == 0 and self.cover is None

    def spec(self) -> str:
        """The budget as a ``--budget`` string (``exact``, ``128/variance/zero``...)."""
        if self.exact:
            return "exact"
        size = f"cover{self.cover:g}" + (f":{self.channels}" if self.channels else "") if self.cover else str(self.channels)
        return f"{size}/{self.rule}/{self.fill}"

    def describe(self) -> dict | None:
        """What the JSON records (None for exact)."""
        if self.exact:
            return None
        described = {"channels": self.channels or None, "cover": self.cover, "rule": self.rule, "fill": self.fill}
        if self.ties is not None:
            described["ties"] = self.ties.describe()
        return described

    @classmethod
    def parse(cls, text, rule: str | None = None, fill: str | None = None) -> "Budget":
        """``0``/``exact`` -> exact; ``128`` -> K=128; ``cover0.95`` -> adaptive;
        ``cover0.95:256`` -> adaptive, at most 256; a rule and a fill may follow after
        slashes (``cover0.85/energy``, ``128/variance/zero``); a `Budget` passes through."""
        if isinstance(text, Budget):
            return text
        if text is not None and "/" in str(text):
            size, *rest = str(text).split("/")
            if len(rest) > 2:
                raise UnionCamError(f"--budget {text!r}: give SIZE[/RULE[/FILL]]")
            rule = rule or rest[0]
            fill = fill or (rest[1] if len(rest) > 1 else None)
            text = size
        options = {k: v for k, v in (("rule", rule), ("fill", fill)) if v is not None}
        if text is None or str(text).strip().lower() in ("", "0", "exact", "none"):
            return cls(**options)
        value = str(text).strip().lower()
        if re.fullmatch(r"[0-9]+", value):  # ASCII digits only: str.isdigit() accepts '²'
            return cls(channels=int(value), **options)
        match = re.fullmatch(r"cover([0-9]*\.?[0-9]+)(?::([0-9]+))?", value)
        if match:
            return cls(channels=int(match.group(2) or 0), cover=float(match.group(1)), **options)
        raise UnionCamError(f"--budget {text!r}: give 0 (exact), a channel count K, or coverSHARE[:K], optionally "
                            "/RULE[/FILL], e.g. cover0.85/energy or 128/variance/zero")


def channel_statistic(rule: str, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """``[B, K]`` ranking statistic of every channel."""
    a = activations.astype(np.float64)
    if rule == "variance":
        return a.var(axis=(2, 3))
    if rule == "energy":
        return (a * a).sum(axis=(2, 3))
    if rule == "mass":
        return np.abs(a).sum(axis=(2, 3))
    return gradients.astype(np.float64).mean(axis=(2, 3)) * a.mean(axis=(2, 3))


def select_channels(budget: Budget, live: np.ndarray, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Boolean ``[B, K]``: the live channels to score."""
    if budget.exact:
        return live.copy()
    statistic = channel_statistic(budget.rule, activations, gradients)
    coverage = channel_statistic("variance", activations, gradients) if budget.rule == "gradcam" else statistic
    chosen = np.zeros_like(live)
    for b in range(len(live)):
        candidates = np.flatnonzero(live[b])
        order = candidates[np.lexsort((candidates, -statistic[b, candidates]))]  # largest first, low index on ties
        count = len(order)
        if budget.cover is not None:
            by_coverage = candidates[np.lexsort((candidates, -coverage[b, candidates]))]
            cumulative = np.cumsum(coverage[b, by_coverage])
            total = cumulative[-1] if len(cumulative) else 0.0
            count = int(np.searchsorted(cumulative, budget.cover * total) + 1) if total > 0 else len(order)
        if budget.channels:
            count = min(count, budget.channels)
        chosen[b, order[:count]] = True
    return chosen


def peak_groups(activations: np.ndarray, members: np.ndarray, grid: int = GROUP_GRID) -> np.ndarray:
    """Group id ``[B, K]`` (-1 outside ``members``): the grid cell of each channel's peak."""
    b, k, h, w = activations.shape
    flat = activations.reshape(b, k, h * w).argmax(axis=2)
    rows, cols = flat // w, flat % w
    cell = (rows * min(grid, h) // h) * min(grid, w) + cols * min(grid, w) // w
    return np.where(members, cell, -1)


def group_masks(activations: np.ndarray, groups: np.ndarray, masks_of) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per non-empty group of each image: (image index, group id, mean normalised mask)."""
    images, ids, masks = [], [], []
    for b in range(len(groups)):
        for g in np.unique(groups[b][groups[b] >= 0]):
            members = np.flatnonzero(groups[b] == g)
            images.append(b)
            ids.append(g)
            masks.append(masks_of(activations[b, members]).mean(axis=0))
    if not masks:
        shape = activations.shape[2:]
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, *shape), np.float32)
    return np.asarray(images), np.asarray(ids), np.stack(masks).astype(np.float32)


def fill_weights(budget: Budget, weights: np.ndarray, scored: np.ndarray, live: np.ndarray,
                 statistic: np.ndarray | None = None) -> np.ndarray:
    """Weights ``[B, K]`` with the live-but-unscored channels filled per ``budget.fill``."""
    out = weights.copy()
    missing = live & ~scored
    if budget.fill in ("zero", "group") or not missing.any():  # group fills are scored, see cams.region_map
        return out
    for b in range(len(out)):
        have = scored[b]
        if not have.any() or not missing[b].any():
            continue
        if budget.fill == "mean":
            out[b, missing[b]] = weights[b, have].mean()
            continue
        x, y = statistic[b, have], weights[b, have]
        slope, intercept = (np.polyfit(x, y, 1) if len(x) > 1 and np.ptp(x) > 0 else (0.0, float(y.mean())))
        out[b, missing[b]] = np.clip(slope * statistic[b, missing[b]] + intercept, 0.0, 1.0)
    return out
