"""The two Ray Serve deployments of the application; ray is imported only inside methods.

* ``UnionCamHTTP`` (`HttpIngress`, the ingress): answers HTTP. It reads bodies under a
  deadline, answers ``/healthz`` itself and passes complete requests to the engine
  deployment through a handle. It takes no CPU reservation and many requests at once
  (``http_max_ongoing``), so slow or stalled uploads wait here, never in an engine slot, and
  a health check is never queued behind explanations. When an engine replica dies with a
  request on it, the ingress answers that request 503 (JSON, may be retried) instead of the
  proxy's ``500 Internal Server Error``.
* ``UnionCam`` (`EngineReplica`): one engine each; decodes, batches and explains
  (`worker.EngineWorker`). It accepts two batches' worth of requests (one running, one
  forming); more wait in the ingress's queue, up to ``max_queued``, then 503.
"""

from __future__ import annotations

from .errors import ServiceUnavailable
from .service import ExplainService, ServiceSettings
from .worker import BatchOptions, EngineWorker

ENGINE_DEPLOYMENT = "UnionCam"
HTTP_DEPLOYMENT = "UnionCamHTTP"


def replica_cpus() -> int:
    """CPUs Ray reserved for this replica (at least 1): the engine's intra-op threads."""
    import ray

    return max(1, round(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


class EngineReplica(EngineWorker):
    """An engine replica: opens the engine once, then explains batches of requests.

    Args:
        spec: the engine to open (`unioncam_rt.jobs.engine_spec.EngineSpec`).
        settings: limits and explainer options.
        batching: batch size and wait.
        threads: engine intra-op threads (None: the CPUs Ray reserved for the replica).
    """

    def __init__(self, spec, settings: ServiceSettings, batching: BatchOptions, threads: int | None = None):
        engine = spec.with_threads(threads or replica_cpus()).open()
        super().__init__(ExplainService(engine, settings), batching)


class ReplicaClient:
    """`http.EngineClient` over a handle of the engine deployment: Ray's failures become 503s.

    Args:
        handle: the engine deployment's ``DeploymentHandle``.
    """

    def __init__(self, handle):
        self.handle = handle
        self._model_info: dict | None = None

    async def _call(self, method: str, *args):
        from ray.exceptions import RayActorError, RayTaskError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

        try:
            return await getattr(self.handle, method).remote(*args)
        except RayActorError as exc:
            raise ServiceUnavailable(f"the engine replica stopped ({type(exc).__name__}) before answering; the "
                                     "request was not answered and may be retried") from None
        except (BackPressureError, DeploymentUnavailableError) as exc:
            raise ServiceUnavailable(f"no engine replica can take the request now ({type(exc).__name__}: every "
                                     "one is busy or starting); retry later") from None
        except RayTaskError as exc:  # a bug on the engine side: one line, its type and message, no traceback
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            raise RuntimeError(f"engine replica failed: {type(cause).__name__}: {str(cause)[:500]}") from None

    async def explain(self, data: bytes, params: dict):
        return await self._call("explain", data, params)

    async def model_info(self) -> dict:
        if self._model_info is None:
            self._model_info = await self._call("model_info")
        return self._model_info

    async def stats(self) -> dict:
        return await self._call("stats")


class HttpIngress:
    """The ingress replica: HTTP in, engine calls through ``engine`` (a handle), JSON out.

    Args:
        engine: the engine deployment's handle.
        settings: limits and the body deadline.
    """

    def __init__(self, engine, settings: ServiceSettings):
        self.client = ReplicaClient(engine)
        self.settings = settings

    async def __call__(self, request):
        from .http import handle

        return await handle(request, self.client, self.settings)
