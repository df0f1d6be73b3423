"""What every worker of a job shares: the method options (picklable), and where a job runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..distributed.cluster import RayTarget, WorkerPool
from ..errors import UnionCamError


@dataclass(frozen=True)
class MethodSettings:
    """`Explainer` options shared by every worker of a job.

    Attributes:
        method: CAM method (default ``"unioncam"``).
        theta: UnionCAM's percentile (default 10).
        batch_size: masked images per engine call (default: the `Explainer`'s).
        max_memory: peak-memory budget for the batch size (default: none).
        budget: region-map channel budget, a `unioncam_rt.method.budget.Budget` (default
            None: exact).
    """

    method: str = "unioncam"
    theta: float = 10.0
    batch_size: int | None = None
    max_memory: int | str | None = None
    budget: object = None

    def explainer(self, engine, method: str | None = None, progress: bool = False):
        """An `Explainer` over ``engine`` (``method`` overrides the settings' one)."""
        from ..explainer import Explainer

        return Explainer(engine=engine, method=method or self.method, theta=self.theta, batch_size=self.batch_size,
                         max_memory=self.max_memory, budget=self.budget, progress=progress)


@dataclass(frozen=True)
class RayRun:
    """A job on Ray Data (the ``serve`` extra) instead of in this process.

    Attributes:
        target: the Ray cluster (default: a local Ray started in this process).
        pool: the actor pool (default: one worker per CPU of the cluster).
    """

    target: RayTarget = field(default_factory=RayTarget)
    pool: WorkerPool = field(default_factory=WorkerPool)

    @classmethod
    def from_options(cls, ray: bool, address: str | None, workers: int | None) -> "RayRun | None":
        """``--ray``, ``--ray-address`` (implies ``--ray``) and ``--workers``: a `RayRun`, or
        None for a run in this process."""
        if not ray and address is None:
            if workers is not None:
                raise UnionCamError("--workers applies to --ray runs")
            return None
        return cls(RayTarget(address), WorkerPool(workers))
