"""``unioncam-rt serve``: the typer command (parse options, build a `ServeConfig`, call
`run_serve`). Registered by the main CLI, and run alone by ``python -m unioncam_rt.serve``.
Light at import: typer and the backends table; the library is imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..runtime.backends import DEFAULT_BACKEND, backends_help, precisions_help


def limits_from(max_bytes: str | int | None, max_pixels: int | None):
    """`ImageLimits` from the options (None: its default)."""
    from ..memory import parse_size
    from .decode import ImageLimits

    defaults = ImageLimits()
    return ImageLimits(defaults.max_bytes if max_bytes is None else parse_size(max_bytes),
                       defaults.max_pixels if max_pixels is None else max_pixels)


def serve_command(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="A zoo name, PATH.py:FUNCTION or ONNX "
                     "classifier, exported once into the cache as explain does. Default: efficientnet-lite0, or the "
                     "--engine directory's model.")] = None,
    weights: Annotated[Optional[str], typer.Option(help="Weights of --model (as explain). Default: its real "
                       "ones.")] = None,
    engine: Annotated[Optional[Path], typer.Option("--engine", help="Exported engine directory (unioncam-rt export). "
                      "On a Ray cluster it must exist at this path on every node.")] = None,
    backend: Annotated[str, typer.Option(help=backends_help() + ".")] = DEFAULT_BACKEND,
    precision: Annotated[str, typer.Option(help=precisions_help() + "; see explain.")] = "fp32",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port.")] = 8000,
    replicas: Annotated[int, typer.Option(min=1, help="Replicas, each holding one engine.")] = 1,
    cpus_per_replica: Annotated[Optional[int], typer.Option(min=1, help="CPUs per replica (and its engine threads). "
                                "Default: the local Ray's CPUs divided among the replicas; 1 on a cluster.")] = None,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Run on this Ray cluster (auto, "
                           "HOST:6379, ray://HOST:10001). Default: start a local Ray in this process.")] = None,
    num_cpus: Annotated[Optional[int], typer.Option(min=1, help="CPUs of the local Ray. Default: all cores.")] = None,
    max_pixels: Annotated[Optional[int], typer.Option(min=1, help="Largest image, width x height (413 above). "
                          "Default: 40000000.")] = None,
    max_bytes: Annotated[Optional[str], typer.Option(help="Largest encoded image, e.g. 20MiB (413 above). "
                         "Default: 20MiB.")] = None,
    max_memory: Annotated[Optional[str], typer.Option(help="Peak-memory budget per explainer, e.g. 2GB (caps the "
                          "masked batch, as explain). Default: none.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", min=1, help="Masked images per engine "
                          "call. Default: 16.")] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Requests explained together at most (their masked "
                         "passes share engine calls).")] = 8,
    batch_wait_ms: Annotated[float, typer.Option(min=0, help="How long a request waits for others to batch "
                             "with when the engine is idle (requests arriving while it works join the next batch "
                             "anyway).")] = 20.0,
    body_timeout_s: Annotated[float, typer.Option(min=0.001, help="Seconds a request's body may take to arrive; "
                              "answered 408 after.")] = 30.0,
    max_queued: Annotated[int, typer.Option(min=-1, help="Requests waiting for an engine replica beyond which new "
                          "ones are answered 503 (0 or -1: no limit).")] = 100,
):
    """Serve explanations over HTTP (Ray Serve): POST /explain, GET /healthz, GET /v1/model, GET /v1/stats."""
    from ..errors import UnionCamError
    from ..runtime.factory import EngineOptions
    from ..sources import ModelSource
    from ..zoo.spec import DEFAULT_MODEL
    from .app import ReplicaOptions
    from .runner import ServeConfig, run_serve
    from .service import ServiceSettings

    try:
        source = ModelSource(model or DEFAULT_MODEL, weights) if model or weights else None
        config = ServeConfig(
            source, EngineOptions(backend, engine, None, precision), host, port, ray_address, num_cpus,
            ServiceSettings(limits_from(max_bytes, max_pixels), batch_size, max_memory, body_timeout_s=body_timeout_s),
            ReplicaOptions(replicas, cpus_per_replica or 0, None, max_batch, batch_wait_ms / 1000, max_queued))
        run_serve(config)
    except UnionCamError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
