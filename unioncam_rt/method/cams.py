"""The CAM methods, each a function of an engine, a batch of images and their feature
pass. They return feature-resolution saliency maps; `finalize` upsamples and normalises.

Every method here is batched over images with one target class per image, and every
masked forward pass goes through `scoring.score_masks` (chunked by ``batch_size``; the
masked images are never all built at once).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import gradient
from .budget import Budget, TieRule, channel_statistic, fill_weights, group_masks, peak_groups, select_channels
from .engine import CamEngine, FeatureBatch
from .ops import gaussian_blur, is_constant, minmax, relu, resize_bilinear
from .scoring import MaskBatch, Progress, ScoreCounter, score_masks
from .union import FUSED, REGION, choose_fused, fuse, near_tie


@dataclass
class MethodOptions:
    """Knobs of the methods.

    Attributes:
        theta: UnionCAM denoising percentile (default 10).
        batch_size: masked images per engine call (default 16).
        groups: Group-CAM channel groups (default 32).
        group_percentile: Group-CAM keeps group-map values above this percentile (default 70).
        alpha: UnionCAM denoising weights, ``"pixel-average"`` (default) or ``"gradient-sum"``.
        weighting: UnionCAM fusion, ``"beta"`` (default, the method) or ``"sum"`` (plain sum of
            the two normalised maps; an ablation).
        budget: region-map channels scored per image (default: all, exact); see `Budget`.
    """

    theta: float = 10.0
    batch_size: int = 16
    groups: int = 32
    group_percentile: float = 70.0
    alpha: str = "pixel-average"
    weighting: str = "beta"
    budget: Budget = field(default_factory=Budget)


@dataclass
class UnionParts:
    """UnionCAM's intermediate results for one image (maps at feature resolution)."""

    denoise_map: np.ndarray
    region_map: np.ndarray
    fused_map: np.ndarray
    beta_denoise: float
    beta_region: float
    beta_fused: float
    branch: str
    rechecked: str | None = None  # a budgeted near tie decided again: "coverS" or "exact" (see `recheck_near_ties`)


@dataclass
class SaliencyBatch:
    """A method's output for a batch: ``maps`` ``[B, h, w]`` and, for UnionCAM, its parts."""

    maps: np.ndarray
    union: list[UnionParts] = field(default_factory=list)


@dataclass
class MethodContext:
    """Everything a method may use."""

    engine: CamEngine
    images: np.ndarray
    features: FeatureBatch
    options: MethodOptions
    counter: ScoreCounter
    progress: Progress | None = None

    def score(self, batch: MaskBatch, decision: bool = False) -> np.ndarray:
        """Masked probabilities; ``decision`` ones (UnionCAM's map scores, which pick the
        branch) go to the engine's ``decision_engine`` where it has one (its fp32 twin in a
        reduced-precision mode)."""
        engine = getattr(self.engine, "decision_engine", self.engine) if decision else self.engine
        return score_masks(engine, self.images, batch, self.options.batch_size, self.counter, self.progress)

    @property
    def has_reduced_decisions(self) -> bool:
        """True where UnionCAM's map scores run on another engine than the channel passes
        (the fp32 twin of a reduced-precision scoring session)."""
        return getattr(self.engine, "decision_engine", self.engine) is not self.engine

    def subset(self, rows: np.ndarray) -> "MethodContext":
        """The same engine and options over images ``rows`` only, with its own pass counter."""
        f = self.features
        feats = FeatureBatch(f.logits[rows], f.activations[rows], f.gradients[rows], f.class_index[rows])
        return MethodContext(self.engine, self.images[rows], feats, self.options, ScoreCounter.for_batch(len(rows)),
                             self.progress)


def map_scores(ctx: MethodContext, maps: np.ndarray) -> np.ndarray:
    """``score(L) = p_c(I * up(minmax(L))) - p_c(I_b)``.

    ``maps`` is ``[R * B, h, w]``: R maps per image, stacked image-batch after image-batch
    (so several maps of every image are scored in one batch). Returns ``[R * B]``.
    """
    image_index = np.arange(len(maps)) % len(ctx.images)
    classes = ctx.features.class_index[image_index]
    probs = ctx.score(MaskBatch(minmax(maps), image_index, classes), decision=True)
    return probs - ctx.engine.black_probs()[classes]


def region_map(ctx: MethodContext) -> np.ndarray:
    """Score-CAM region map ``ReLU(sum_k s_k A_k)``, ``s_k = p_c(I * up(minmax(A_k)))``.

    **[choice]** masks are min-max normalised at feature resolution, then upsampled inside
    the engine. Constant channels get ``s_k = 0`` and no forward pass. Under a `Budget`
    only the selected channels are scored and the others get the budget's fill weight.
    """
    return weighted_region(ctx, region_weights(ctx, ctx.options.budget))


def weighted_region(ctx: MethodContext, weights: np.ndarray) -> np.ndarray:
    """``ReLU(sum_k w_k A_k)`` for channel weights ``[B, K]``."""
    return relu(np.einsum("bk,bkhw->bhw", weights, ctx.features.activations.astype(np.float64)))


def region_weights(ctx: MethodContext, budget: Budget, known: np.ndarray | None = None) -> np.ndarray:
    """Channel weights ``[B, K]`` of the region map under ``budget``.

    Args:
        ctx: the method context (engine, images, feature pass).
        budget: which channels to score and how to weight the rest.
        known: scores of every live channel already measured (``[B, K]``); the selected
            channels then take theirs instead of new passes (for budget studies).
    """
    return scored_region_weights(ctx, budget, known)[0]


def scored_region_weights(ctx: MethodContext, budget: Budget,
                          known: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`region_weights` and the boolean ``[B, K]`` of channels whose weight is their own score."""
    feats = ctx.features
    acts = feats.activations
    live = ~is_constant(acts)
    scored = select_channels(budget, live, acts, feats.gradients)
    scored_b, scored_k = np.nonzero(scored)
    weights = np.zeros(acts.shape[:2], dtype=np.float64)
    if known is not None:
        weights[scored_b, scored_k] = known[scored_b, scored_k]
    else:
        masks = minmax(acts[scored_b, scored_k].astype(np.float32))
        weights[scored_b, scored_k] = ctx.score(MaskBatch(masks, scored_b, feats.class_index[scored_b]))
    if budget.fill == "group":
        groups = peak_groups(acts, live & ~scored)
        images, ids, masks = group_masks(acts, groups, minmax)
        group_probs = ctx.score(MaskBatch(masks, images, feats.class_index[images]))
        for b, g, p in zip(images, ids, group_probs):
            weights[b, groups[b] == g] = p
    elif not budget.exact:
        statistic = channel_statistic(budget.rule, acts, feats.gradients) if budget.fill == "estimate" else None
        weights = fill_weights(budget, weights, scored, live, statistic)
    return weights, scored


def every_channel_weights(ctx: MethodContext, weights: np.ndarray, scored: np.ndarray,
                          decision: bool = False) -> np.ndarray:
    """Weights ``[B, K]`` of the exact region map: every live channel's own score.

    Args:
        ctx: the method context.
        weights: weights so far; where ``scored``, a channel's own score (kept).
        scored: boolean ``[B, K]``, the channels already scored.
        decision: score every live channel again on the decision engine (fp32) instead.
    """
    live = ~is_constant(ctx.features.activations)
    return channel_weights(ctx, weights, scored & (not decision), live, decision)


def channel_weights(ctx: MethodContext, weights: np.ndarray, scored: np.ndarray, members: np.ndarray,
                    decision: bool = False) -> np.ndarray:
    """Weights ``[B, K]``: each of ``members`` gets its own score, every other channel 0.

    Args:
        ctx: the method context.
        weights: weights so far; where ``scored``, a channel's own score (kept, not scored again).
        scored: boolean ``[B, K]``, the channels whose ``weights`` may be kept.
        members: boolean ``[B, K]``, the channels to weigh.
        decision: score the missing members on the decision engine (fp32).
    """
    acts = ctx.features.activations
    missing = members & ~scored
    out = np.where(members & scored, weights, 0.0)
    b, k = np.nonzero(missing)
    masks = minmax(acts[b, k].astype(np.float32))
    out[b, k] = ctx.score(MaskBatch(masks, b, ctx.features.class_index[b]), decision=decision)
    return out


def _gradient_method(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    def run(ctx: MethodContext) -> SaliencyBatch:
        return SaliencyBatch(fn(ctx.features.activations, ctx.features.gradients))

    run.__doc__ = fn.__doc__
    return run


def scorecam(ctx: MethodContext) -> SaliencyBatch:
    """Score-CAM (Wang et al. 2020): UnionCAM's region map on its own."""
    return SaliencyBatch(region_map(ctx))


def _channel_groups(channels: int, groups: int) -> list[slice]:
    """``torch.chunk`` semantics: groups of ``ceil(K / G)`` channels (the last may be short)."""
    size = -(-channels // groups)
    return [slice(start, min(start + size, channels)) for start in range(0, channels, size)]


def groupcam(ctx: MethodContext) -> SaliencyBatch:
    """Group-CAM (Zhang et al. 2021).

    Channels weighted by mean gradient are summed in ``groups`` groups; each group map
    ``S_g = ReLU(sum)`` keeps values above its ``group_percentile``; its mask
    ``M_g = minmax(up(S_g))`` blends the image with a blurred copy (Gaussian, kernel 51,
    sigma 50), ``I * M + blur(I) * (1 - M)``; score ``ReLU(p_c(blend) - p_c(blur(I)))``;
    map ``ReLU(sum_g score_g S_g)``. Blending is done in pixel space (the official code
    blends normalised tensors; the two differ only by the blur of the mean colour).
    """
    feats, opts = ctx.features, ctx.options
    acts = feats.activations.astype(np.float64)
    weighted = gradient.gradcam_weights(feats.gradients)[:, :, None, None] * acts
    groups = np.stack([relu(weighted[:, g].sum(axis=1)) for g in _channel_groups(acts.shape[1], opts.groups)], 1)
    bsz, n_groups = groups.shape[:2]
    threshold = np.percentile(groups.reshape(bsz, n_groups, -1), opts.group_percentile, axis=-1)
    groups = np.where(groups > threshold[:, :, None, None], groups, 0.0)

    blurred = gaussian_blur(ctx.images)
    rows = np.arange(bsz)
    base = ctx.engine.probs(blurred)[rows, feats.class_index]
    ctx.counter.per_image += 1

    live_b, live_g = np.nonzero(~is_constant(groups))
    scores = np.zeros((bsz, n_groups), dtype=np.float64)
    size = ctx.images.shape[-2:]
    if ctx.progress is not None:
        ctx.progress.expect(len(live_b))
    for start in range(0, len(live_b), opts.batch_size):
        b, g = live_b[start : start + opts.batch_size], live_g[start : start + opts.batch_size]
        masks = minmax(resize_bilinear(groups[b, g], size))[:, None].astype(np.float32)
        blend = ctx.images[b] * masks + blurred[b] * (1 - masks)
        probs = ctx.engine.probs(np.ascontiguousarray(blend, dtype=np.float32))
        scores[b, g] = relu(probs[np.arange(len(b)), feats.class_index[b]] - base[b])
        np.add.at(ctx.counter.per_image, b, 1)
        if ctx.progress is not None:
            ctx.progress.advance(len(b))
    return SaliencyBatch(relu(np.einsum("bg,bghw->bhw", scores, groups)))


def unioncam(ctx: MethodContext) -> SaliencyBatch:
    """UnionCAM (Hu et al. 2024): denoise, region, weighted union, selection.

    ``L_denoise`` from `gradient.denoised_map`; ``L_region`` from `region_map`;
    ``beta_* = score(L_*)`` (the two scored in one batch); ``L_fused =
    minmax(b_d minmax(L_denoise) + b_r minmax(L_region))``; the result is ``L_fused`` if
    ``score(L_fused) > beta_region`` else ``L_region``.
    """
    feats = ctx.features
    denoise = gradient.denoised_map(feats.activations, feats.gradients, ctx.options.theta, ctx.options.alpha)
    budget = ctx.options.budget
    weights, scored = scored_region_weights(ctx, budget)
    out = union_of(ctx, denoise, weighted_region(ctx, weights))
    if budget.ties is not None and not budget.exact:
        recheck_near_ties(ctx, denoise, out, weights, scored, budget.ties)
    return out


def recheck_near_ties(ctx: MethodContext, denoise: np.ndarray, out: SaliencyBatch, weights: np.ndarray,
                      scored: np.ndarray, rule: TieRule) -> None:
    """Decide again, in place, the images of ``out`` whose budgeted branch sits on a near
    tie (``|beta_fused - beta_region| < rule.margin``), with fp32 channel scores.

    The scores come from the fp32 decision engine where the channel passes run in reduced
    precision (bf16 scores are too noisy to decide a near tie: README, Fidelity); else the
    budget's own scores are kept and only the channels it left out are scored. With
    ``rule.cover`` None the region map gets every live channel's score (exact UnionCAM,
    ``rechecked = "exact"``). With a cover, it first gets the scores of the channels
    covering that share (the budget's rule; the others weigh 0; ``rechecked = "coverS"``),
    and an image whose ``|d|`` is then under ``rule.exact_margin`` gets the rest of its live
    channels scored too (exact; ``rechecked = "exact"``). UnionCAM's scoring, fusion and
    selection run again after each step. Passes are added to ``ctx.counter``.
    """
    rows = _near_ties(out, np.arange(len(denoise)), rule.margin)
    if not len(rows):
        return
    decision = ctx.has_reduced_decisions
    sub = ctx.subset(rows)
    kept = scored[rows] & (not decision)  # fp32 scores of the budget: not scored twice
    if rule.cover is None:
        exact = every_channel_weights(sub, weights[rows], scored[rows], decision=decision)
        _replace(ctx, out, rows, sub, union_of(sub, denoise[rows], weighted_region(sub, exact)), "exact")
        return
    acts, grads = sub.features.activations, sub.features.gradients
    live = ~is_constant(acts)
    cover = select_channels(Budget(cover=rule.cover, rule=ctx.options.budget.rule), live, acts, grads)
    covered = channel_weights(sub, weights[rows], kept, cover, decision=decision)
    _replace(ctx, out, rows, sub, union_of(sub, denoise[rows], weighted_region(sub, covered)), f"cover{rule.cover:g}")
    again = _near_ties(out, rows, rule.exact_margin)
    if not len(again):
        return
    local = np.searchsorted(rows, again)
    last = ctx.subset(again)
    known = np.where(cover, covered, weights[rows])  # fp32 scores of the cover, and the budget's where kept
    exact = channel_weights(last, known[local], (cover | kept)[local], live[local], decision=decision)
    _replace(ctx, out, again, last, union_of(last, denoise[again], weighted_region(last, exact)), "exact")


def _near_ties(out: SaliencyBatch, rows: np.ndarray, margin: float) -> np.ndarray:
    """The ``rows`` of ``out`` whose fused and region maps score within ``margin``."""
    fused = np.array([out.union[i].beta_fused for i in rows])
    region = np.array([out.union[i].beta_region for i in rows])
    return rows[near_tie(fused, region, margin)] if len(rows) else rows


def _replace(ctx: MethodContext, out: SaliencyBatch, rows: np.ndarray, sub: MethodContext, again: SaliencyBatch,
             how: str) -> None:
    """Put the images decided again into ``out`` and count their passes."""
    for j, i in enumerate(rows):
        out.maps[i] = again.maps[j]
        again.union[j].rechecked = how
        out.union[i] = again.union[j]
    ctx.counter.per_image[rows] += sub.counter.per_image


def union_of(ctx: MethodContext, denoise: np.ndarray, region: np.ndarray) -> SaliencyBatch:
    """UnionCAM's scoring, fusion and selection given its two maps (``[B, h, w]`` each)."""
    bsz = len(denoise)
    betas = map_scores(ctx, np.concatenate([denoise, region]))
    beta_d, beta_r = betas[:bsz], betas[bsz:]
    if ctx.options.weighting == "sum":
        fused = fuse(denoise, region, np.ones(bsz), np.ones(bsz))
    else:
        fused = fuse(denoise, region, beta_d, beta_r)
    beta_f = map_scores(ctx, fused)
    wins = choose_fused(beta_f, beta_r)
    parts = [
        UnionParts(denoise[i], region[i], fused[i], float(beta_d[i]), float(beta_r[i]), float(beta_f[i]),
                   FUSED if wins[i] else REGION)
        for i in range(bsz)
    ]
    return SaliencyBatch(np.where(wins[:, None, None], fused, region), parts)


METHODS: dict[str, Callable[[MethodContext], SaliencyBatch]] = {
    "unioncam": unioncam,
    "gradcam": _gradient_method(gradient.gradcam),
    "gradcampp": _gradient_method(gradient.gradcampp),
    "layercam": _gradient_method(gradient.layercam),
    "scorecam": scorecam,
    "groupcam": groupcam,
}


def finalize(maps: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Upsample feature maps to the input size and min-max normalise once.

    Returns:
        float32 ``[B, H, W]`` maps in [0, 1] and a bool ``[B]`` flag for constant maps
        (returned as zeros, never NaN).
    """
    up = resize_bilinear(maps.astype(np.float64), input_size)
    return minmax(up).astype(np.float32), is_constant(up)
