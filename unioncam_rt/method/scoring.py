"""Masked scoring: prepare masks, drop the ones whose answer is known, cut into chunks,
call the engine per chunk, put the scores back.

Exact savings, none of which changes a result:

* an all-zero mask turns the image black, so its probability is ``p_c(I_b)`` from
  `CamEngine.black_probs` (no pass);
* identical (image, class, mask) rows are scored once;
* masks of several images share one engine call (the engine takes ``image_index``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .engine import CamEngine


class Progress(Protocol):
    """Where masked-scoring progress goes (a tqdm bar in the CLI)."""

    def expect(self, n: int) -> None:
        """``n`` more engine rows will be run."""

    def advance(self, n: int) -> None:
        """``n`` engine rows were run."""


@dataclass
class MaskBatch:
    """Masks to score, each tied to one image and one class.

    Attributes:
        masks: float32 ``[N, h, w]`` in [0, 1] at feature resolution.
        image_index: int64 ``[N]``, row of the image batch each mask applies to.
        class_index: int64 ``[N]``, the class whose probability is wanted.
    """

    masks: np.ndarray
    image_index: np.ndarray
    class_index: np.ndarray

    def __len__(self) -> int:
        return len(self.masks)


@dataclass
class ScoreCounter:
    """Counts masked forward passes actually run, per image of the batch."""

    per_image: np.ndarray

    @classmethod
    def for_batch(cls, batch: int) -> "ScoreCounter":
        return cls(per_image=np.zeros(batch, dtype=np.int64))


def _unique_rows(batch: MaskBatch) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first occurrence of each distinct row, and the inverse map."""
    flat = batch.masks.reshape(len(batch), -1).astype(np.float32)
    keys = np.concatenate(
        [batch.image_index[:, None].astype(np.int64),
         batch.class_index[:, None].astype(np.int64),
         np.ascontiguousarray(flat).view(np.int32).astype(np.int64)],
        axis=1,
    )
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def score_masks(
    engine: CamEngine,
    images: np.ndarray,
    batch: MaskBatch,
    batch_size: int,
    counter: ScoreCounter | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Probabilities ``p_c(I * up(mask))`` for every row of ``batch``, float64 ``[N]``.

    Args:
        engine: what runs the network.
        images: float32 ``[B, 3, H, W]`` the masks' ``image_index`` refers to.
        batch: the masks.
        batch_size: masked images per engine call (an engine with ``chunks_internally``
            gets all of them in one call and chunks on its device).
        counter: if given, passes run are added to it per image.
        progress: told how many rows will run, then how many ran after each call.
    """
    n = len(batch)
    probs = np.empty(n, dtype=np.float64)
    if n == 0:
        return probs
    black = engine.black_probs()
    zero = ~batch.masks.reshape(n, -1).any(axis=1)
    probs[zero] = black[batch.class_index[zero]]

    live = np.flatnonzero(~zero)
    if len(live):
        sub = MaskBatch(batch.masks[live], batch.image_index[live], batch.class_index[live])
        first, inverse = _unique_rows(sub)
        unique = MaskBatch(sub.masks[first], sub.image_index[first], sub.class_index[first])
        unique_probs = np.empty(len(unique), dtype=np.float64)
        if progress is not None:
            progress.expect(len(unique))
        # an engine that batches on its device takes every mask in one call (one host round trip)
        step = len(unique) if getattr(engine, "chunks_internally", False) else batch_size
        for start in range(0, len(unique), step):
            stop = min(start + step, len(unique))
            rows = slice(start, stop)
            used, local_index = np.unique(unique.image_index[rows], return_inverse=True)
            unique_probs[rows] = engine.masked_probs(
                np.ascontiguousarray(images[used]),
                np.ascontiguousarray(unique.masks[rows, None].astype(np.float32)),
                local_index.astype(np.int64).reshape(-1),
                unique.class_index[rows].astype(np.int64),
            )
            if counter is not None:
                np.add.at(counter.per_image, unique.image_index[rows], 1)
            if progress is not None:
                progress.advance(stop - start)
        probs[live] = unique_probs[inverse]
    return probs
