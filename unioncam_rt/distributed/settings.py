"""How each worker builds its explainers: the method options of a job, picklable."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodSettings:
    """`Explainer` options shared by every worker of a job.

    Attributes:
        method: CAM method (default ``"unioncam"``).
        theta: UnionCAM's percentile (default 10).
        batch_size: masked images per engine call (default: the `Explainer`'s).
        max_memory: peak-memory budget for the batch size (default: none).
        budget: region-map channel budget (default None: exact).
    """

    method: str = "unioncam"
    theta: float = 10.0
    batch_size: int | None = None
    max_memory: int | str | None = None
    budget: object = None

    def explainer(self, engine, method: str | None = None):
        """An `Explainer` over ``engine`` (``method`` overrides the settings' one)."""
        from ..explainer import Explainer

        return Explainer(engine=engine, method=method or self.method, theta=self.theta, batch_size=self.batch_size,
                         max_memory=self.max_memory, budget=self.budget)
