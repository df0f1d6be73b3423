"""The Ray Serve application: replicas of one engine, batched explanations.

Each replica opens the engine once and answers HTTP itself (`http.handle`). Explanations
go through ``@serve.batch``: requests that reach a replica within ``batch_wait_s`` of each
other (up to ``max_batch``) become one `ExplainService.explain_batch` call, run on the
replica's single engine thread so the event loop keeps answering (health checks, other
requests' decoding) while the engine works. Requests queued while a batch runs form the
next one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..distributed.engines import EngineSpec
from .service import ServiceSettings

APP_NAME = "unioncam"


@dataclass(frozen=True)
class ReplicaOptions:
    """How many replicas, and how requests are batched on each.

    Attributes:
        replicas: replicas of the deployment (default 1).
        cpus_per_replica: CPUs Ray reserves per replica (default 1); also the engine's
            intra-op threads when ``threads`` is None.
        threads: engine intra-op threads (default: ``cpus_per_replica``).
        max_batch: requests explained together at most (default 8).
        batch_wait_s: how long the first request of a batch waits for others (default 0.02).
        max_ongoing_requests: requests a replica accepts at once (default 32); more wait in
            Serve's queue.
    """

    replicas: int = 1
    cpus_per_replica: int = 1
    threads: int | None = None
    max_batch: int = 8
    batch_wait_s: float = 0.02
    max_ongoing_requests: int = 32


def build_app(spec: EngineSpec, settings: ServiceSettings, options: ReplicaOptions = ReplicaOptions()):
    """The Serve application (``serve.run`` it); imports ray here, not at module import."""
    from ray import serve

    @serve.deployment(name="UnionCam", num_replicas=options.replicas,
                      ray_actor_options={"num_cpus": options.cpus_per_replica},
                      max_ongoing_requests=max(options.max_ongoing_requests, options.max_batch))
    class UnionCamReplica:
        """One engine; HTTP in, batched explanations out."""

        def __init__(self, spec: EngineSpec, settings: ServiceSettings):
            from concurrent.futures import ThreadPoolExecutor

            from .service import ExplainService

            self.service = ExplainService(spec.open(), settings)
            self.engine_thread = ThreadPoolExecutor(1, thread_name_prefix="unioncam-engine")

        async def __call__(self, request):
            from .http import handle

            return await handle(request, self.service, self.explain)

        @serve.batch(max_batch_size=options.max_batch, batch_wait_timeout_s=options.batch_wait_s)
        async def explain(self, requests: list) -> list:
            import asyncio

            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.engine_thread, self.service.explain_batch, requests)

    threads = options.threads if options.threads is not None else options.cpus_per_replica
    return UnionCamReplica.bind(spec.with_threads(threads), settings)
