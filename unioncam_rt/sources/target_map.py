"""How a target layer's output reads as a feature map ``[B, K, h, w]`` (torch-free).

CAM methods need a spatial map of channels. Three output layouts read as one:

* ``nchw`` ``[B, K, h, w]``: a CNN feature map, as it is;
* ``nhwc`` ``[B, h, w, K]``: channels last (Swin stages, Keras graphs): ``A = T.permute(0, 3, 1, 2)``;
* ``tokens`` ``[B, N, C]``: a vision transformer's sequence, ``p`` prefix tokens (class,
  distillation, registers) then ``h x w`` patch tokens in row-major order:
  ``A = T[:, p:].reshape(B, h, w, C).permute(0, 3, 1, 2)``, so ``K = C``.

Each is a selection of entries, so the gradient maps the same way: ``dL/dA`` is ``dL/dT``
read through the same map (the prefix tokens' gradients dropped).

The token grid comes from the patch grid where the model states one (``H / patch``,
``W / patch``; the prefix is what is left of ``N``), else from the token count: the fewest
prefix tokens ``p`` for which ``N - p`` patch tokens form a grid of the input's aspect ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ModelError

TARGET_LAYOUTS = ("nchw", "nhwc", "tokens")
MAX_PREFIX_TOKENS = 16  # class + distillation + registers in known models stay far below


@dataclass(frozen=True)
class TargetMap:
    """The reading of a target output as ``[B, K, h, w]``.

    Attributes:
        layout: ``nchw``, ``nhwc`` or ``tokens``.
        shape: the output's shape without the batch axis.
        prefix_tokens: tokens before the patch grid (``tokens`` only; 0 otherwise).
        grid: (h, w) of the patch tokens (``tokens`` only; None otherwise).
    """

    layout: str
    shape: tuple[int, ...]
    prefix_tokens: int = 0
    grid: tuple[int, int] | None = None

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """(K, h, w) of the map."""
        if self.layout == "tokens":
            return int(self.shape[1]), int(self.grid[0]), int(self.grid[1])
        if self.layout == "nhwc":
            return int(self.shape[2]), int(self.shape[0]), int(self.shape[1])
        return int(self.shape[0]), int(self.shape[1]), int(self.shape[2])

    def describe(self) -> str:
        k, h, w = self.feature_shape
        if self.layout == "tokens":
            return (f"tokens [{', '.join(map(str, self.shape))}]: {self.prefix_tokens} prefix + {h}x{w} patch tokens, "
                    f"K={k}")
        return f"{self.layout} [{', '.join(map(str, self.shape))}]: K={k}, {h}x{w}"

    def manifest_entry(self) -> dict:
        """What the manifest records (``target_map``)."""
        entry = {"layout": self.layout, "shape": [int(d) for d in self.shape]}
        if self.layout == "tokens":
            entry.update(prefix_tokens=int(self.prefix_tokens), grid=[int(d) for d in self.grid])
        return entry


def plausible_grid(h: int, w: int, input_size) -> bool:
    """True where an ``h x w`` grid can be the input's ``H x W`` at one stride."""
    height, width = input_size
    if not (1 <= h <= height and 1 <= w <= width):
        return False
    return abs(height / h - width / w) <= 0.5 * max(height / h, width / w) / max(min(h, w), 1) + 1e-9


def loose_grid(h: int, w: int, input_size) -> bool:
    """True where ``h x w`` may be a spatial grid of the input at all: within its size, and
    its aspect ratio within a factor 1.5 of the input's (a map of at most 3x3 passes; one
    cell of rounding at any stride passes; the heads x tokens x dims of an attention
    tensor do not)."""
    height, width = input_size
    if not (1 <= h <= height and 1 <= w <= width):
        return False
    return max(h, w) <= 3 or 1 / 1.5 <= (h / w) / (height / width) <= 1.5


def token_grid(tokens: int, input_size, patch_size=None) -> tuple[int, tuple[int, int]] | None:
    """``(prefix tokens, (h, w))`` for ``tokens`` tokens, or None where no grid fits.

    With ``patch_size`` (int or (ph, pw)) the grid is ``(H // ph, W // pw)``; otherwise the
    fewest prefix tokens whose remainder is an ``h x w`` grid of the input's aspect ratio."""
    height, width = input_size
    if patch_size is not None:
        ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        grid = (height // ph, width // pw)
        prefix = tokens - grid[0] * grid[1]
        if 0 <= prefix <= MAX_PREFIX_TOKENS:
            return prefix, grid
    for prefix in range(0, min(MAX_PREFIX_TOKENS, tokens - 1) + 1):
        count = tokens - prefix
        h = max(1, round(math.sqrt(count * height / width)))
        for rows in (h - 1, h, h + 1):
            if rows >= 1 and count % rows == 0 and plausible_grid(rows, count // rows, input_size):
                return prefix, (rows, count // rows)
    return None


def infer_target_map(shape, input_size, layout: str | None = None, patch_size=None, channels_last: bool = False,
                     label: str = "target") -> TargetMap:
    """The `TargetMap` of an output of ``shape`` (batch axis excluded).

    Args:
        shape: the output's shape without the batch axis.
        input_size: (H, W) of the image.
        layout: the user's choice (``nchw``, ``nhwc``, ``tokens``); default: from the rank,
            and for 4-D outputs from which axes form a plausible grid of the input.
        patch_size: the model's patch size, for token grids (default: inferred).
        channels_last: where both 4-D readings are plausible, take ``nhwc`` (a family whose
            stages are channels-last, e.g. Swin); default ``nchw``.
        label: the target's name, for messages.

    Raises:
        ModelError: an output that no layout reads as a map (one line, naming what to pass).
    """
    shape = tuple(int(d) for d in shape)
    rank = len(shape) + 1
    if layout is None:
        layout = {3: "tokens", 4: None}.get(rank, "")
        if layout == "":
            raise ModelError(f"target layer {label!r} outputs [batch, {', '.join(map(str, shape))}]; it must be a "
                             "4-D feature map [B, K, h, w] (or channels-last [B, h, w, K], or tokens [B, N, C]); see "
                             "unioncam-rt inspect")
        if layout is None:
            nchw = plausible_grid(shape[1], shape[2], input_size)
            nhwc = plausible_grid(shape[0], shape[1], input_size)
            layout = "nhwc" if (nhwc and (channels_last or not nchw)) else "nchw"
    expected = {"nchw": 4, "nhwc": 4, "tokens": 3}.get(layout)
    if expected is None:
        raise ModelError(f"--target-layout {layout!r} unknown; available: {', '.join(TARGET_LAYOUTS)}")
    if rank != expected:
        raise ModelError(f"target layer {label!r} outputs [batch, {', '.join(map(str, shape))}], not the "
                         f"{expected}-D output that layout {layout} reads")
    if layout != "tokens":
        return TargetMap(layout, shape)
    found = token_grid(shape[0], input_size, patch_size)
    if found is None:
        raise ModelError(f"target layer {label!r} outputs {shape[0]} tokens of {shape[1]} channels: no prefix of at "
                         f"most {MAX_PREFIX_TOKENS} tokens leaves a patch grid of the {input_size[0]}x{input_size[1]} "
                         "input; choose a layer whose tokens are the patch grid (e.g. blocks.N.norm1)")
    prefix, grid = found
    return TargetMap("tokens", shape, prefix, grid)
