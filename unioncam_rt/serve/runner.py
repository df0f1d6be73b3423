"""Serving: start Ray (or join a cluster), run the application, wait for a signal.

`run_serve` is the library function behind ``unioncam-rt serve`` (`unioncam_rt.serve.command`).
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from dataclasses import dataclass, field, replace

from ..errors import UnionCamError, require
from ..runtime.factory import EngineOptions
from .app import APP_NAME, ReplicaOptions
from .service import ServiceSettings


@dataclass
class ServeConfig:
    """Options of ``unioncam-rt serve``.

    Attributes:
        source: the model (`ModelSource`), or None (the engine directory's, else the default).
        engine: backend, engine directory, precision.
        host, port: where Serve listens (default 127.0.0.1:8000).
        ray_address: a Ray cluster to run on (default None: a local Ray in this process).
        num_cpus: CPUs of the local Ray (default: all cores).
        service: limits and explainer options of every replica.
        replicas: replicas and batching (``cpus_per_replica`` 0: the local Ray's CPUs divided
            among the replicas, or 1 on a cluster).
    """

    source: object = None
    engine: EngineOptions = field(default_factory=EngineOptions)
    host: str = "127.0.0.1"
    port: int = 8000
    ray_address: str | None = None
    num_cpus: int | None = None
    service: ServiceSettings = ServiceSettings()
    replicas: ReplicaOptions = ReplicaOptions(cpus_per_replica=0)


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on (a local Serve could not bind it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server: TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UnionCamError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port") from None


class StopSignals:
    """From entry on, SIGINT or SIGTERM asks to stop (a flag, so that start-up finishes
    cleanly and the service is then shut down); a second one interrupts at once. The
    previous handlers come back on exit."""

    def __init__(self):
        self.requested = threading.Event()
        self.previous = {}

    def _handle(self, signum, frame):
        if self.requested.is_set():
            raise KeyboardInterrupt
        self.requested.set()

    def __enter__(self) -> "StopSignals":
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def wait(self) -> None:
        """Block until a stop is asked for (at once if it already was)."""
        while not self.requested.wait(0.5):
            pass


def run_serve(config: ServeConfig, ready=None) -> None:
    """Serve until SIGINT/SIGTERM; ``ready(url)`` is called once the replicas are up.

    The model is exported into the cache first if needed, and one engine is opened here to
    refuse bad options (``--batch-size``, ``--max-memory``) before Ray starts.
    """
    from ..distributed.cluster import RayTarget, cluster_cpus, ray_session
    from ..jobs.engine_spec import prepare_engine
    from .app import bind_application
    from .service import ExplainService

    require("ray", "serve")
    spec = prepare_engine(config.source, config.engine, progress=True)
    ExplainService(spec.open(), config.service)
    if config.ray_address is None:
        check_port_free(config.host, config.port)
    with ray_session(RayTarget(config.ray_address, config.num_cpus)) as ray:
        from ray import serve

        options = config.replicas
        if not options.cpus_per_replica:
            local = config.ray_address is None
            options = replace(options, cpus_per_replica=max(1, cluster_cpus(ray) // options.replicas) if local else 1)
        with StopSignals() as stop:  # after ray.init, which installs handlers of its own
            serve.start(http_options={"host": config.host, "port": config.port})
            try:
                serve.run(bind_application(spec, config.service, options), name=APP_NAME, route_prefix="/")
                url = f"http://{config.host}:{config.port}"
                if not stop.requested.is_set():
                    print(f"unioncam-rt serve: {url} ({options.replicas} replica(s), {options.cpus_per_replica} "
                          "CPU(s) each); Ctrl-C stops", file=sys.stderr, flush=True)
                    if ready is not None:
                        ready(url)
                stop.wait()
            finally:
                if config.ray_address is None:
                    serve.shutdown()
                else:
                    serve.delete(APP_NAME)
