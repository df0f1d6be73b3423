"""Every method over the torch reference engine on a tiny seeded net."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from unioncam_rt.method import METHODS, MethodContext, MethodOptions, finalize  # noqa: E402
from unioncam_rt.method.cams import region_map  # noqa: E402
from unioncam_rt.method.scoring import MaskBatch, ScoreCounter, score_masks  # noqa: E402

from .independent import unioncam_one  # noqa: E402


def run(engine, images, method, classes=None, **options):
    classes = np.full(len(images), -1) if classes is None else np.asarray(classes)
    feats = engine.features(images, classes)
    ctx = MethodContext(engine, images, feats, MethodOptions(**options), ScoreCounter.for_batch(len(images)))
    out = METHODS[method](ctx)
    cams, constant = finalize(out.maps, engine.input_size)
    return out, cams, constant, ctx


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_shape_range_and_no_nan(tiny_engine, tiny_images, method):
    _, cams, constant, _ = run(tiny_engine, tiny_images, method, batch_size=7)
    assert cams.shape == (4, 32, 32) and cams.dtype == np.float32
    assert not np.isnan(cams).any()
    assert cams.min() >= 0 and cams.max() <= 1
    for cam, flat in zip(cams, constant):
        assert flat or (cam.min() == 0 and cam.max() == pytest.approx(1))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_constant_image_gives_no_nan(tiny_engine, method):
    images = np.full((2, 3, 32, 32), 0.5, dtype=np.float32)
    _, cams, constant, _ = run(tiny_engine, images, method)
    assert not np.isnan(cams).any()
    assert ((cams == 0).all(axis=(1, 2)) == constant).all()


@pytest.mark.parametrize("theta", [10, 70])
@pytest.mark.parametrize("engine_name", ["tiny_engine", "tiny_dense_engine"])
def test_unioncam_matches_independent_implementation(request, engine_name, tiny_images, theta):
    engine = request.getfixturevalue(engine_name)
    targets = [None, 3, None, 7]
    classes = [-1 if t is None else t for t in targets]
    out, cams, _, ctx = run(engine, tiny_images, "unioncam", classes=classes, theta=theta, batch_size=5)
    for i in range(len(tiny_images)):
        ref = unioncam_one(engine.classifier, torch.from_numpy(tiny_images[i]), theta, targets[i])
        parts = out.union[i]
        assert ctx.features.class_index[i] == ref["class_index"]
        assert parts.branch == ref["branch"]
        for name in ("beta_denoise", "beta_region", "beta_fused"):
            assert getattr(parts, name) == pytest.approx(ref[name], abs=1e-5)
        np.testing.assert_allclose(parts.denoise_map, ref["denoise_map"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(parts.region_map, ref["region_map"], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(cams[i], ref["cam"], atol=1e-4)


def test_masked_passes_count_non_constant_channels_plus_three(tiny_engine, tiny_images):
    _, _, _, ctx = run(tiny_engine, tiny_images, "unioncam")
    acts = ctx.features.activations
    live = (acts.max(axis=(2, 3)) != acts.min(axis=(2, 3))).sum(1)
    assert (live <= 13).all()  # three dead channels in the tiny net
    assert (ctx.counter.per_image <= live + 3).all()
    assert (ctx.counter.per_image >= live).all()


def test_skipping_constant_channels_changes_nothing(tiny_engine, tiny_images):
    """Scoring every channel (a constant one as an all-zero mask) gives the same region map."""
    feats = tiny_engine.features(tiny_images, np.full(4, -1))
    ctx = MethodContext(tiny_engine, tiny_images, feats, MethodOptions(), ScoreCounter.for_batch(4))
    skipped = region_map(ctx)
    acts = feats.activations.astype(np.float64)
    full = np.zeros_like(skipped)
    for b in range(4):
        for k in range(acts.shape[1]):
            a = acts[b, k]
            mask = np.zeros_like(a) if a.max() == a.min() else (a - a.min()) / (a.max() - a.min())
            p = tiny_engine.masked_probs(tiny_images[b:b + 1], mask[None, None].astype(np.float32),
                                         np.array([0]), feats.class_index[b:b + 1])[0]
            full[b] += p * a
    np.testing.assert_allclose(skipped, np.maximum(full, 0), rtol=1e-5, atol=1e-8)


def test_identical_and_zero_masks_cost_no_pass(tiny_engine, tiny_images):
    rng = np.random.default_rng(5)
    mask = rng.random((16, 16)).astype(np.float32)
    batch = MaskBatch(np.stack([mask, mask, np.zeros_like(mask), mask]), np.array([0, 0, 1, 1]), np.array([2, 2, 2, 2]))
    counter = ScoreCounter.for_batch(2)
    probs = score_masks(tiny_engine, tiny_images[:2], batch, batch_size=2, counter=counter)
    assert counter.per_image.tolist() == [1, 1]
    assert probs[0] == probs[1]
    assert probs[2] == pytest.approx(tiny_engine.black_probs()[2])
    direct = tiny_engine.masked_probs(tiny_images[:2], batch.masks[:, None], batch.image_index, batch.class_index)
    np.testing.assert_allclose(probs, direct, rtol=1e-5)


def test_chunking_does_not_change_results(tiny_engine, tiny_images):
    a = run(tiny_engine, tiny_images, "unioncam", batch_size=1)[1]
    b = run(tiny_engine, tiny_images, "unioncam", batch_size=1000)[1]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_batched_images_match_one_at_a_time(tiny_engine, tiny_images):
    together = run(tiny_engine, tiny_images, "unioncam")[1]
    alone = np.concatenate([run(tiny_engine, tiny_images[i:i + 1], "unioncam")[1] for i in range(4)])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_engine_masked_probs_match_plain_forward(tiny_engine, tiny_images):
    from unioncam_rt.method.ops import resize_bilinear

    masks = np.random.default_rng(6).random((3, 1, 16, 16)).astype(np.float32)
    idx, cls = np.array([2, 0, 2]), np.array([1, 4, 9])
    got = tiny_engine.masked_probs(tiny_images, masks, idx, cls)
    masked = tiny_images[idx] * resize_bilinear(masks, (32, 32)).astype(np.float32)
    want = tiny_engine.probs(masked)[np.arange(3), cls]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_the_device_chunking_path_changes_nothing(tiny_images):
    """The CUDA code path (all masks in one call, chunked and padded on the device), run on
    the CPU, gives the same UnionCAM as the plain engine."""
    from unioncam_rt.explainer import Explainer
    from unioncam_rt.images import LoadedImage
    from unioncam_rt.runtime.torch_engine import TorchEngine

    from .conftest import tiny_model

    model = tiny_model()
    plain = Explainer(engine=TorchEngine(model), batch_size=7)
    device = TorchEngine(model, batch_size=5)
    device.cuda = device.chunks_internally = device._padded = True
    chunked = Explainer(engine=device)
    calls = []
    original = device._score
    device._score = lambda *args: calls.append(len(args[1])) or original(*args)
    loaded = [LoadedImage(None, None, image) for image in tiny_images]
    for a, b in zip(plain.explain_loaded(loaded, [-1] * 4), chunked.explain_loaded(loaded, [-1] * 4)):
        assert a.branch == b.branch and a.masked_passes == b.masked_passes
        np.testing.assert_allclose(a.cam, b.cam, atol=1e-5)
    assert calls and set(calls) == {5}  # every chunk padded to the fixed shape


class _ReducedScores:
    """An engine whose channel passes are off by a few percent (like bf16) and whose
    map scores, the decision engine, are exact (like the fp32 twin of --fast)."""

    def __init__(self, exact, error: float = 0.03):
        self.exact, self.error = exact, error
        self.decision_engine = exact

    def masked_probs(self, images, masks, image_index, class_index):
        probs = self.exact.masked_probs(images, masks, image_index, class_index)
        return probs * (1 + self.error * np.cos(np.arange(len(probs))))

    def __getattr__(self, name):
        return getattr(self.exact, name)


def test_near_ties_are_explained_again_exactly(tiny_engine, tiny_images):
    from unioncam_rt.method.budget import Budget, TieRule

    exact = run(tiny_engine, tiny_images, "unioncam")[0]
    budget = Budget(channels=4, rule="energy")
    plain = run(tiny_engine, tiny_images, "unioncam", budget=budget)[0]
    assert any(np.abs(p.region_map - e.region_map).max() > 1e-3 for p, e in zip(plain.union, exact.union))
    never = run(tiny_engine, tiny_images, "unioncam", budget=Budget(4, rule="energy", ties=TieRule(0.0)))[0]
    np.testing.assert_array_equal(never.maps, plain.maps)
    assert all(p.rechecked is None for p in never.union)
    always, _, _, ctx = run(tiny_engine, tiny_images, "unioncam", budget=Budget(4, rule="energy", ties=TieRule(10.0)))
    for got, want in zip(always.union, exact.union):
        assert got.rechecked == "exact" and got.branch == want.branch
        assert got.beta_fused == pytest.approx(want.beta_fused, abs=1e-6)
        np.testing.assert_allclose(got.region_map, want.region_map, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(always.maps, exact.maps, rtol=1e-6, atol=1e-9)
    acts = ctx.features.activations
    live = (acts.max(axis=(2, 3)) != acts.min(axis=(2, 3))).sum(1)
    assert (ctx.counter.per_image <= live + 6).all()  # fp32 engine: the budget's channels are not scored twice


def test_one_near_tie_is_explained_again_alone(tiny_engine, tiny_images):
    from unioncam_rt.method.budget import Budget, TieRule

    plain = run(tiny_engine, tiny_images, "unioncam", budget=Budget(4, rule="energy"))[0]
    gaps = np.array([abs(p.beta_fused - p.beta_region) for p in plain.union])
    closest = int(np.argmin(gaps))
    margin = float(np.sort(gaps)[:2].mean())  # between the closest and the next
    ruled = run(tiny_engine, tiny_images, "unioncam", budget=Budget(4, rule="energy", ties=TieRule(margin)))[0]
    exact = run(tiny_engine, tiny_images[closest:closest + 1], "unioncam")[0]
    for i, got in enumerate(ruled.union):
        if i == closest:
            assert got.rechecked == "exact"
            np.testing.assert_allclose(ruled.maps[i], exact.maps[0], rtol=1e-5, atol=1e-7)  # batched apart
        else:
            assert got.rechecked is None
            np.testing.assert_array_equal(ruled.maps[i], plain.maps[i])


def test_reduced_precision_ties_are_explained_again_in_fp32(tiny_engine, tiny_images):
    from unioncam_rt.method.budget import Budget, TieRule

    reduced = _ReducedScores(tiny_engine)
    exact = run(tiny_engine, tiny_images, "unioncam")[0]
    rough = run(reduced, tiny_images, "unioncam")[0]  # every channel in reduced precision: not exact
    assert max(np.abs(a.region_map - b.region_map).max() for a, b in zip(rough.union, exact.union)) > 1e-4
    fixed = run(reduced, tiny_images, "unioncam", budget=Budget(4, rule="energy", ties=TieRule(10.0)))[0]
    for got, want in zip(fixed.union, exact.union):
        assert got.rechecked == "exact" and got.branch == want.branch
        np.testing.assert_allclose(got.region_map, want.region_map, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fixed.maps, exact.maps, rtol=1e-6, atol=1e-9)


def _cover_region(ctx, fp32_ctx, cover_share):
    """The region map from fp32 scores of the energy cover's channels, every other channel 0."""
    from unioncam_rt.method.budget import Budget, select_channels
    from unioncam_rt.method.cams import every_channel_weights, weighted_region
    from unioncam_rt.method.ops import is_constant

    feats = ctx.features
    live = ~is_constant(feats.activations)
    cover = select_channels(Budget(cover=cover_share, rule="energy"), live, feats.activations, feats.gradients)
    fp32 = every_channel_weights(fp32_ctx, np.zeros(live.shape), np.zeros_like(live))
    return weighted_region(ctx, np.where(cover, fp32, 0.0)), cover, live


def test_near_ties_decided_again_on_an_fp32_cover_then_exactly(tiny_engine, tiny_images):
    """A tie rule with a cover: near ties first get the fp32 scores of the channels covering
    that share (the rest weigh 0), and those still within the exact margin every channel."""
    from unioncam_rt.method.budget import Budget, TieRule

    reduced = _ReducedScores(tiny_engine)  # the channel passes are off, the decision engine is fp32
    exact, _, _, fp32_ctx = run(tiny_engine, tiny_images, "unioncam")
    covered, _, _, ctx = run(reduced, tiny_images, "unioncam",
                             budget=Budget(2, rule="energy", ties=TieRule(10.0, cover=0.9)))
    want, cover, live = _cover_region(ctx, fp32_ctx, 0.9)
    assert (cover.sum(1) > 2).all() and (cover.sum(1) < live.sum(1)).all()  # between the budget and every channel
    for i, got in enumerate(covered.union):
        assert got.rechecked == "cover0.9"
        np.testing.assert_allclose(got.region_map, want[i], rtol=1e-6, atol=1e-9)  # fp32 scores, not the reduced ones
    assert (ctx.counter.per_image == 2 + cover.sum(1) + 6).all()  # budget, cover, two rounds of 3 map scores

    twice, _, _, ctx = run(reduced, tiny_images, "unioncam",
                           budget=Budget(2, rule="energy", ties=TieRule(10.0, cover=0.9, exact_margin=10.0)))
    for got, expected in zip(twice.union, exact.union):
        assert got.rechecked == "exact" and got.branch == expected.branch
        np.testing.assert_allclose(got.region_map, expected.region_map, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(twice.maps, exact.maps, rtol=1e-6, atol=1e-9)
    assert (ctx.counter.per_image == 2 + live.sum(1) + 9).all()  # the cover's channels are not scored twice

    kept, _, _, ctx = run(tiny_engine, tiny_images, "unioncam",
                          budget=Budget(2, rule="energy", ties=TieRule(10.0, cover=0.9, exact_margin=10.0)))
    np.testing.assert_allclose(kept.maps, exact.maps, rtol=1e-6, atol=1e-9)
    assert (ctx.counter.per_image == live.sum(1) + 9).all()  # fp32 engine: the budget's scores are kept too


def test_a_cover_tie_rule_goes_exact_only_under_its_exact_margin(tiny_engine, tiny_images):
    from unioncam_rt.method.budget import Budget, TieRule

    reduced = _ReducedScores(tiny_engine)
    covered = run(reduced, tiny_images, "unioncam", budget=Budget(2, rule="energy", ties=TieRule(10.0, cover=0.9)))[0]
    gaps = np.array([abs(p.beta_fused - p.beta_region) for p in covered.union])
    closest = int(np.argmin(gaps))
    margin = float(np.sort(gaps)[:2].mean())
    ruled = run(reduced, tiny_images, "unioncam",
                budget=Budget(2, rule="energy", ties=TieRule(10.0, cover=0.9, exact_margin=margin)))[0]
    for i, got in enumerate(ruled.union):
        assert got.rechecked == ("exact" if i == closest else "cover0.9")
        if i != closest:
            np.testing.assert_array_equal(ruled.maps[i], covered.maps[i])
    with pytest.raises(Exception, match="cover"):
        TieRule(0.02, cover=1.5)
    with pytest.raises(Exception, match="exact margin"):
        TieRule(0.02, cover=0.9, exact_margin=-1)
    assert TieRule(0.02).describe() == {"margin": 0.02}


def test_fast_decides_near_ties_and_explicit_budgets_run_as_given():
    from dataclasses import replace

    from unioncam_rt.method.budget import Budget
    from unioncam_rt.presets import FAST_BUDGET, FAST_TIES, resolve_mode

    assert resolve_mode(None, None, None, fast=True).budget.ties == FAST_TIES and FAST_TIES.margin > 0
    assert resolve_mode(None, None, FAST_BUDGET.spec(), fast=True).budget.ties is None
    assert Budget.parse(FAST_BUDGET.spec()) == replace(FAST_BUDGET, ties=None)  # the spec (the C++ side) has no tie rule
    assert FAST_BUDGET.describe()["ties"] == FAST_TIES.describe() and FAST_TIES.cover is not None
    assert 0 < FAST_TIES.exact_margin < FAST_TIES.margin
