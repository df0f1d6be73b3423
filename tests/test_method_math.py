"""The UnionCAM math on arrays: thresholds, weights, fusion, selection."""

import numpy as np
import pytest

from unioncam_rt.method import gradient
from unioncam_rt.method.union import FUSED, REGION, choose_fused, fuse, fusion_weights


@pytest.fixture
def acts_grads():
    rng = np.random.default_rng(3)
    return rng.random((2, 5, 6, 6)), rng.normal(size=(2, 5, 6, 6))


@pytest.mark.parametrize("theta", [0, 10, 37.5, 100])
def test_denoise_threshold_is_numpy_percentile(acts_grads, theta):
    _, grads = acts_grads
    got = gradient.denoise_threshold(grads, theta)
    for b in range(2):
        for k in range(5):
            assert got[b, k] == np.percentile(grads[b, k].ravel(), theta)


def test_denoised_map_by_hand(acts_grads):
    acts, grads = acts_grads
    theta = 10
    expected = np.zeros((2, 6, 6))
    for b in range(2):
        for k in range(5):
            w = grads[b, k]
            kept = np.where(w >= np.percentile(w, theta), w, 0)
            n = (kept > 0).sum()
            expected[b] += np.maximum(kept, 0) / max(n, 1) * acts[b, k]
    np.testing.assert_allclose(gradient.denoised_map(acts, grads, theta), np.maximum(expected, 0))


def test_theta_zero_keeps_every_positive_gradient(acts_grads):
    acts, grads = acts_grads
    plain = np.maximum((np.maximum(grads, 0) / np.maximum((grads > 0).sum((2, 3), keepdims=True), 1) * acts).sum(1), 0)
    np.testing.assert_allclose(gradient.denoised_map(acts, grads, 0), plain)


def test_gradient_methods_by_hand(acts_grads):
    acts, grads = acts_grads
    weights = grads.mean((2, 3))
    np.testing.assert_allclose(gradient.gradcam(acts, grads),
                               np.maximum(np.einsum("bk,bkhw->bhw", weights, acts), 0))
    np.testing.assert_allclose(gradient.layercam(acts, grads),
                               np.maximum((np.maximum(grads, 0) * acts).sum(1), 0))
    pp = gradient.gradcampp(acts, grads)
    assert pp.shape == (2, 6, 6) and (pp >= 0).all()


def test_fusion_weights_clip_negatives_and_fall_back_to_equal():
    b_d, b_r = fusion_weights(np.array([0.3, -0.2, -0.1, 0.0]), np.array([-0.5, 0.4, -0.3, 0.0]))
    assert b_d.tolist() == [0.3, 0.0, 1.0, 1.0]
    assert b_r.tolist() == [0.0, 0.4, 1.0, 1.0]


def test_fuse_with_one_negative_beta_is_the_other_map():
    rng = np.random.default_rng(4)
    d, r = rng.random((1, 4, 4)), rng.random((1, 4, 4))
    from unioncam_rt.method.ops import minmax

    np.testing.assert_allclose(fuse(d, r, np.array([-0.1]), np.array([0.2])), minmax(r))
    both = fuse(d, r, np.array([0.2]), np.array([0.6]))
    np.testing.assert_allclose(both, minmax(0.2 * minmax(d) + 0.6 * minmax(r)))


def test_selection_prefers_region_on_ties():
    wins = choose_fused(np.array([0.5, 0.4, 0.3]), np.array([0.4, 0.4, 0.35]))
    assert wins.tolist() == [True, False, False]
    assert (FUSED, REGION) == ("fused", "region")
