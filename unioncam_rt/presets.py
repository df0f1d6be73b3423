"""``--fast``: the fastest mode measured on the CPU, with its fidelity published.

The preset picks, in order: OpenVINO in bf16 where the ``openvino`` extra is installed and
the CPU computes bf16 natively (else OpenVINO fp32, else ONNX Runtime fp32), and the
channel budget `FAST_BUDGET`, chosen by ``benchmarks/budget_study.py`` and
``benchmarks/bench_runtime.py`` (README: Speed, Fidelity); near ties are decided again
with fp32 channel scores, exactly where they stay close (`FAST_TIES`, measured by
``benchmarks/near_ties.py``). Options given explicitly (``--backend``, ``--precision``,
``--budget``) win over the preset's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .method.budget import Budget, TieRule
from .runtime.backends import installed, native_precisions

# an image whose budgeted betas of the fused and region maps lie within 0.02 is decided
# again in fp32: on the 200 development photos the budget flipped the branch only where they
# lay within 0.0163. Its region map first gets the fp32 scores of the channels covering 95% of
# its activation energy (no branch flipped on the development photos, Pearson >= 0.99); one
# still within 0.002 then gets every live channel scored in fp32 (exact UnionCAM)
# (benchmarks/near_ties.py; README: Fidelity)
FAST_TIES = TieRule(margin=0.02, cover=0.95, exact_margin=0.002)
# the fewest channels, by activation energy, whose energy covers 85% of the image's total,
# at most 320; unscored channels weigh 0 (README: Speed and Fidelity; benchmarks/budget_study.py)
FAST_BUDGET = Budget(channels=320, cover=0.85, rule="energy", fill="zero", ties=FAST_TIES)


@dataclass(frozen=True)
class RunMode:
    """Backend, precision and channel budget of a run."""

    backend: str
    precision: str
    budget: Budget

    def describe(self) -> str:
        ties = self.budget.ties
        if ties is None:
            rule = ""
        elif ties.cover is None:
            rule = f", near ties (|beta_fused - beta_region| < {ties.margin:g}) explained again exactly"
        else:
            rule = (f", near ties (|beta_fused - beta_region| < {ties.margin:g}) decided again on an fp32 cover"
                    f"{ties.cover:g}, exactly under {ties.exact_margin:g}")
        return f"{self.backend} {self.precision}, budget {self.budget.spec()}{rule}"


def fast_mode() -> RunMode:
    """The preset on this machine."""
    if installed("openvino"):
        return RunMode("openvino", "bf16" if "bf16" in native_precisions("openvino") else "fp32", FAST_BUDGET)
    return RunMode("onnxruntime", "fp32", FAST_BUDGET)


def resolve_mode(backend: str | None, precision: str | None, budget, fast: bool, rule: str | None = None,
                 fill: str | None = None) -> RunMode:
    """The run mode from explicit options, the preset filling what was not given.

    The channel budget is parsed here, once: an explicit ``budget`` (with ``rule`` and
    ``fill``) replaces the preset's; a ``rule`` or ``fill`` alone changes the preset's budget.
    Either way the budget is no longer the measured preset, so it carries no tie rule.
    """
    base = fast_mode() if fast else RunMode("onnxruntime", "fp32", Budget())
    if budget is not None:
        chosen_budget = Budget.parse(budget, rule, fill)
    elif rule is not None or fill is not None:
        chosen_budget = Budget.parse(replace(base.budget, rule=rule or base.budget.rule,
                                             fill=fill or base.budget.fill, ties=None))
    else:
        chosen_budget = base.budget
    if backend is not None and precision is None and fast and backend != base.backend:
        precision = "fp32"  # the preset's precision belongs to the preset's backend
    return RunMode(backend or base.backend, precision or base.precision, chosen_budget)
