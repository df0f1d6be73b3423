"""The Ray Serve application: an HTTP ingress and replicas of one engine, batched explanations.

Two deployments (`deployments`): ``UnionCamHTTP`` answers HTTP (body deadline, health
checks, errors) and hands complete requests to ``UnionCam``, the engine replicas, which
batch requests across clients (`batching.BatchQueue`). `bind_application` builds it from
library objects (``unioncam-rt serve``); `build_app` is the application builder of Ray Serve
config files::

    applications:
      - name: unioncam
        route_prefix: /
        import_path: unioncam_rt.serve.app:build_app
        args: {engine: /models/lite0, max_batch: 8}

(``serve run config.yaml``, ``serve deploy``, KubeRay's RayService; see
``examples/serve-config.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnionCamError
from .deployments import ENGINE_DEPLOYMENT, HTTP_DEPLOYMENT
from .service import ServiceSettings
from .worker import BatchOptions

APP_NAME = "unioncam"


@dataclass(frozen=True)
class ReplicaOptions:
    """How many replicas, what each reserves, and how requests are batched and queued.

    Attributes:
        replicas: engine replicas (default 1).
        cpus_per_replica: CPUs Ray reserves per engine replica (default 1); also the
            engine's intra-op threads when ``threads`` is None.
        threads: engine intra-op threads (default: the replica's reserved CPUs).
        max_batch: requests explained together at most (default 8).
        batch_wait_s: how long the first request of a batch waits for others when the
            engine is idle (default 0.02).
        max_queued: requests waiting for an engine replica, beyond which new ones are
            answered 503 (default 100; 0 or -1: no limit).
        http_replicas: ingress replicas (default 1).
        http_max_ongoing: requests one ingress replica holds at once, reading bodies or
            waiting for the engine (default 1000).
    """

    replicas: int = 1
    cpus_per_replica: float = 1
    threads: int | None = None
    max_batch: int = 8
    batch_wait_s: float = 0.02
    max_queued: int = 100
    http_replicas: int = 1
    http_max_ongoing: int = 1000


def bind_application(spec, settings: ServiceSettings, options: ReplicaOptions = ReplicaOptions()):
    """The Serve application (``serve.run`` it); imports ray here, not at module import."""
    from ray import serve

    from .deployments import EngineReplica, HttpIngress

    max_queued = options.max_queued if options.max_queued > 0 else -1  # Ray's "no limit"
    engine = serve.deployment(
        EngineReplica, name=ENGINE_DEPLOYMENT, num_replicas=options.replicas,
        ray_actor_options={"num_cpus": options.cpus_per_replica},
        max_ongoing_requests=2 * options.max_batch, max_queued_requests=max_queued,
    ).bind(spec, settings, BatchOptions(options.max_batch, options.batch_wait_s), options.threads)
    return serve.deployment(
        HttpIngress, name=HTTP_DEPLOYMENT, num_replicas=options.http_replicas, ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=options.http_max_ongoing,
    ).bind(engine, settings)


# argument of build_app -> (type, default); documented in build_app
APP_ARGS = {
    "engine": (str, None), "model": (str, None), "weights": (str, None), "backend": (str, "onnxruntime"),
    "precision": (str, "fp32"), "threads": (int, None), "batch_size": (int, None), "max_memory": (str, None),
    "max_bytes": (str, None), "max_pixels": (int, None), "max_batch": (int, 8), "batch_wait_ms": (float, 20.0),
    "body_timeout_s": (float, 30.0), "replicas": (int, 1), "cpus_per_replica": (float, 1.0),
    "max_queued": (int, 100), "http_replicas": (int, 1), "http_max_ongoing": (int, 1000),
}


def app_args(args: dict | None) -> dict:
    """``args`` checked against `APP_ARGS` and completed with defaults; raises `UnionCamError`."""
    args = dict(args or {})
    unknown = sorted(set(args) - set(APP_ARGS))
    if unknown:
        raise UnionCamError(f"unknown argument {unknown[0]!r} of unioncam_rt.serve.app:build_app; known: "
                            f"{', '.join(APP_ARGS)}")
    values = {name: typed(name, args.get(name, default), kind) for name, (kind, default) in APP_ARGS.items()}
    for name in ("threads", "batch_size", "max_pixels", "max_batch", "replicas", "http_replicas", "http_max_ongoing"):
        if values[name] is not None and values[name] < 1:
            raise UnionCamError(f"argument {name} = {values[name]} must be at least 1")
    for name in ("batch_wait_ms", "cpus_per_replica"):
        if not values[name] >= 0:
            raise UnionCamError(f"argument {name} = {values[name]} must not be negative")
    if not values["body_timeout_s"] > 0:
        raise UnionCamError(f"argument body_timeout_s = {values['body_timeout_s']} must be positive")
    return values


def typed(name: str, value, kind: type):
    """``value`` as ``kind`` (None stays None); raises `UnionCamError` naming the argument."""
    if value is None:
        return None
    if isinstance(value, bool) or (kind is str and not isinstance(value, (str, int))):
        raise UnionCamError(f"argument {name} = {value!r} is not a {kind.__name__}")
    try:
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        raise UnionCamError(f"argument {name} = {value!r} is not a {kind.__name__}") from None


def build_app(args: dict):
    """Ray Serve application builder (``import_path: unioncam_rt.serve.app:build_app``).

    Args:
        args: the config file's ``args``, all optional:
            ``engine`` (an exported engine directory; on a cluster, the same path on every
            node) or ``model`` (+ ``weights``: exported into the cache now, as ``explain``
            does; default ``efficientnet-lite0``); ``backend`` (onnxruntime), ``precision``
            (fp32); ``threads`` (engine threads, default: the replica's ``num_cpus``);
            ``batch_size`` (masked images per engine call), ``max_memory`` (e.g. ``2GB``);
            ``max_bytes`` (default ``20MiB``), ``max_pixels`` (default 40000000);
            ``max_batch`` (8), ``batch_wait_ms`` (20), ``body_timeout_s`` (30);
            ``replicas`` (1), ``cpus_per_replica`` (1), ``max_queued`` (100),
            ``http_replicas`` (1), ``http_max_ongoing`` (1000). A config's ``deployments:``
            entries (``UnionCam``, ``UnionCamHTTP``) override replicas, autoscaling and
            ``ray_actor_options`` as usual.

    Raises:
        UnionCamError: an unknown argument or a bad value, in one line.
    """
    from ..jobs.engine_spec import prepare_engine
    from ..runtime.factory import EngineOptions
    from ..sources import ModelSource
    from .command import limits_from

    values = app_args(args)
    source = ModelSource(values["model"], values["weights"]) if values["model"] else None
    spec = prepare_engine(source, EngineOptions(values["backend"], values["engine"], None, values["precision"]),
                          progress=False)
    settings = ServiceSettings(limits_from(values["max_bytes"], values["max_pixels"]), values["batch_size"],
                               values["max_memory"], body_timeout_s=values["body_timeout_s"])
    options = ReplicaOptions(values["replicas"], values["cpus_per_replica"], values["threads"], values["max_batch"],
                             values["batch_wait_ms"] / 1000, values["max_queued"], values["http_replicas"],
                             values["http_max_ongoing"])
    return bind_application(spec, settings, options)
