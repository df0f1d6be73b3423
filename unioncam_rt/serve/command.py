"""``unioncam-rt serve``: start Ray (or join a cluster), run the application, wait for a signal.

`run_serve` is the library function; `serve_command` is the typer command (registered
by the main CLI, and run alone by ``python -m unioncam_rt.serve``).
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UnionCamError
from ..runtime.factory import EngineOptions
from .app import APP_NAME, ReplicaOptions
from .decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageLimits
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
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UnionCamError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port") from None


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM (handlers restored afterwards)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_serve(config: ServeConfig, ready=None) -> None:
    """Serve until SIGINT/SIGTERM; ``ready(url)`` is called once the replicas are up.

    The model is exported into the cache first if needed, and one engine is opened here to
    refuse bad options (``--batch-size``, ``--max-memory``) before Ray starts.
    """
    from ..distributed.cluster import RayTarget, cluster_cpus, ray_session
    from ..distributed.engines import prepare_engine
    from .app import build_app
    from .service import ExplainService

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
        serve.start(http_options={"host": config.host, "port": config.port})
        try:
            serve.run(build_app(spec, config.service, options), name=APP_NAME, route_prefix="/")
            url = f"http://{config.host}:{config.port}"
            print(f"unioncam-rt serve: {url} ({options.replicas} replica(s), {options.cpus_per_replica} CPU(s) each); "
                  "Ctrl-C stops", file=sys.stderr, flush=True)
            if ready is not None:
                ready(url)
            wait_for_signal()
        finally:
            if config.ray_address is None:
                serve.shutdown()
            else:
                serve.delete(APP_NAME)


def _size(text: str | None, default: int) -> int:
    from ..memory import parse_size

    return default if text is None else parse_size(text)


def serve_command(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="A zoo name, PATH.py:FUNCTION or ONNX "
                     "classifier, exported once into the cache as explain does. Default: efficientnet-lite0, or the "
                     "--engine directory's model.")] = None,
    weights: Annotated[Optional[str], typer.Option(help="Weights of --model (as explain). Default: its real ones.")] = None,
    engine: Annotated[Optional[Path], typer.Option("--engine", help="Exported engine directory (unioncam-rt export). "
                      "On a Ray cluster it must exist at this path on every node.")] = None,
    backend: Annotated[str, typer.Option(help="onnxruntime, openvino, tensorrt or torch.")] = "onnxruntime",
    precision: Annotated[str, typer.Option(help="fp32 (exact), bf16, fp16 or int8; see explain.")] = "fp32",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port.")] = 8000,
    replicas: Annotated[int, typer.Option(min=1, help="Replicas, each holding one engine.")] = 1,
    cpus_per_replica: Annotated[Optional[int], typer.Option(min=1, help="CPUs per replica (and its engine threads). "
                                "Default: the local Ray's CPUs divided among the replicas; 1 on a cluster.")] = None,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Run on this Ray cluster (auto, "
                           "HOST:6379, ray://HOST:10001). Default: start a local Ray in this process.")] = None,
    num_cpus: Annotated[Optional[int], typer.Option(min=1, help="CPUs of the local Ray. Default: all cores.")] = None,
    max_pixels: Annotated[int, typer.Option(min=1, help="Largest image, width x height (413 above).")] = DEFAULT_MAX_PIXELS,
    max_bytes: Annotated[Optional[str], typer.Option(help="Largest encoded image, e.g. 20MiB (413 above). "
                         "Default: 20MiB.")] = None,
    max_memory: Annotated[Optional[str], typer.Option(help="Peak-memory budget per explainer, e.g. 2GB (caps the "
                          "masked batch, as explain). Default: none.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", min=1, help="Masked images per engine "
                          "call. Default: 16.")] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Requests explained together at most (their masked "
                         "passes share engine calls).")] = 8,
    batch_wait_ms: Annotated[float, typer.Option(min=0, help="How long a request waits for others to batch with.")] = 20.0,
):
    """Serve explanations over HTTP (Ray Serve): POST /explain, GET /healthz, GET /v1/model, GET /v1/stats."""
    from ..sources import ModelSource
    from ..zoo.spec import DEFAULT_MODEL

    try:
        source = ModelSource(model or DEFAULT_MODEL, weights) if model or weights else None
        config = ServeConfig(
            source, EngineOptions(backend, engine, None, precision), host, port, ray_address, num_cpus,
            ServiceSettings(ImageLimits(_size(max_bytes, DEFAULT_MAX_BYTES), max_pixels), batch_size, max_memory),
            ReplicaOptions(replicas, cpus_per_replica or 0, None, max_batch, batch_wait_ms / 1000))
        run_serve(config)
    except UnionCamError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
