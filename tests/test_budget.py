"""Budgeted region scoring: parsing, channel selection, fill, and its effect on UnionCAM."""

import json

import numpy as np
import pytest

from unioncam_rt.errors import UnionCamError
from unioncam_rt.method.budget import Budget, channel_statistic, fill_weights, select_channels


def test_budget_parsing():
    assert Budget.parse(None).exact and Budget.parse("0").exact and Budget.parse("exact").exact
    assert Budget.parse("128") == Budget(channels=128)
    assert Budget.parse("cover0.9") == Budget(cover=0.9)
    assert Budget.parse("cover0.95:256", rule="energy", fill="mean") == Budget(256, 0.95, "energy", "mean")
    assert Budget(channels=64).describe() == {"channels": 64, "cover": None, "rule": "variance", "fill": "zero"}
    assert Budget.parse("cover0.85/energy") == Budget(cover=0.85, rule="energy")
    assert Budget.parse("128/mass/mean") == Budget(128, rule="mass", fill="mean")
    for budget in (Budget(), Budget(64), Budget(0, 0.85, "energy"), Budget(256, 0.9, "mass", "mean")):
        assert Budget.parse(budget.spec()) == budget
    for bad in ("lots", "cover2", "-3"):
        with pytest.raises(UnionCamError, match="budget"):
            Budget.parse(bad)
    with pytest.raises(UnionCamError, match="rule 'best' unknown"):
        Budget.parse("8", rule="best")


def activations():
    rng = np.random.default_rng(0)
    acts = rng.random((2, 6, 3, 3)) * np.array([1, 5, 2, 0, 3, 4])[None, :, None, None]
    acts[:, 3] = 0.5  # a constant channel
    return acts, rng.standard_normal((2, 6, 3, 3))


def test_selection_takes_the_largest_statistic_and_never_constant_channels():
    acts, grads = activations()
    live = acts.max(axis=(2, 3)) != acts.min(axis=(2, 3))
    chosen = select_channels(Budget(channels=2), live, acts, grads)
    variance = acts.var(axis=(2, 3))
    for b in range(2):
        assert chosen[b].sum() == 2 and not chosen[b, 3]
        assert set(np.flatnonzero(chosen[b])) == set(np.argsort(-np.where(live[b], variance[b], -1))[:2])
    everything = select_channels(Budget(channels=50), live, acts, grads)
    assert (everything == live).all()
    covered = select_channels(Budget(cover=0.999), live, acts, grads)
    assert (covered.sum(axis=1) <= live.sum(axis=1)).all() and covered.sum() > chosen.sum()
    capped = select_channels(Budget(channels=1, cover=0.999), live, acts, grads)
    assert (capped.sum(axis=1) == 1).all()


def test_fill_weights():
    live = np.array([[True, True, True, False]])
    scored = np.array([[True, False, True, False]])
    weights = np.array([[0.2, 0.0, 0.6, 0.0]])
    assert fill_weights(Budget(1, fill="zero"), weights, scored, live).tolist() == weights.tolist()
    assert fill_weights(Budget(1, fill="mean"), weights, scored, live).tolist() == [[0.2, 0.4, 0.6, 0.0]]
    statistic = np.array([[1.0, 2.0, 3.0, 9.0]])
    estimated = fill_weights(Budget(1, fill="estimate"), weights, scored, live, statistic)
    assert estimated[0, 1] == pytest.approx(0.4) and estimated[0, 3] == 0.0  # constant channels stay 0
    acts, grads = activations()
    assert channel_statistic("gradcam", acts, grads).shape == (2, 6)


def test_budget_limits_passes_and_is_recorded(tiny_engine, tiny_images):
    from PIL import Image

    from unioncam_rt.explainer import Explainer
    from unioncam_rt.images import LoadedImage

    loaded = [LoadedImage(None, Image.new("RGB", (32, 32)), image) for image in tiny_images]
    exact = Explainer(engine=tiny_engine).explain_loaded(loaded, [-1] * 4)
    budgeted = Explainer(engine=tiny_engine, budget=4).explain_loaded(loaded, [-1] * 4)
    everything = Explainer(engine=tiny_engine, budget=16).explain_loaded(loaded, [-1] * 4)
    for a, b, c in zip(exact, budgeted, everything):
        assert b.masked_passes <= 4 + 3 < a.masked_passes
        assert b.budget == {"channels": 4, "cover": None, "rule": "variance", "fill": "zero"}
        assert a.budget is None and json.loads(json.dumps(b.summary()))["budget"]["channels"] == 4
        np.testing.assert_allclose(c.cam, a.cam, atol=1e-6)  # a budget above the live channels is exact


def test_resolve_mode_parses_the_budget_once_and_explicit_options_win(monkeypatch):
    from unioncam_rt import presets
    from unioncam_rt.errors import UnionCamError
    from unioncam_rt.method.budget import Budget

    monkeypatch.setattr(presets, "fast_mode", lambda: presets.RunMode("openvino", "bf16", presets.FAST_BUDGET))
    fast = presets.resolve_mode(None, None, None, True)
    assert (fast.backend, fast.precision, fast.budget) == ("openvino", "bf16", presets.FAST_BUDGET)
    assert fast.budget.ties is not None  # the measured preset keeps its tie rule
    # a rule alone changes the preset's budget and drops the tie rule (it was measured for the preset)
    ruled = presets.resolve_mode(None, None, None, True, rule="variance")
    assert (ruled.budget.rule, ruled.budget.cover, ruled.budget.fill, ruled.budget.ties) == \
        ("variance", presets.FAST_BUDGET.cover, presets.FAST_BUDGET.fill, None)
    # an explicit budget replaces it; its own rule is overridden by --budget-rule
    explicit = presets.resolve_mode(None, None, "64/energy/mean", True, rule="mass")
    assert explicit.budget == Budget(channels=64, rule="mass", fill="mean")
    # another backend under --fast runs that backend's exact precision
    assert presets.resolve_mode("onnxruntime", None, None, True).precision == "fp32"
    assert presets.resolve_mode(None, None, None, False).budget.exact
    with pytest.raises(UnionCamError, match="budget rule 'nope' unknown"):
        presets.resolve_mode(None, None, None, True, rule="nope")
