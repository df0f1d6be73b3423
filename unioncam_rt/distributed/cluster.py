"""Connecting to a Ray cluster, or starting a local one in this process."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from ..errors import require


@dataclass(frozen=True)
class RayTarget:
    """Where to run.

    Attributes:
        address: a Ray cluster address (``auto``, ``HOST:6379``, ``ray://HOST:10001``), or
            None (default) for a local Ray started in this process and stopped at the end.
        num_cpus: CPUs of a local Ray (default: all cores); ignored with ``address``.
    """

    address: str | None = None
    num_cpus: int | None = None


@contextmanager
def ray_session(target: RayTarget = RayTarget()) -> Iterator[object]:
    """Ray connected for the duration of the block (yields the ``ray`` module).

    A Ray already initialised in this process is used as it is and left running. A local
    Ray is started on the loopback address, without its dashboard and with usage
    statistics off (unless the environment says otherwise: ``RAY_USAGE_STATS_ENABLED``),
    and shut down at the end.
    """
    ray = require("ray", "serve")
    if ray.is_initialized():
        yield ray
        return
    if target.address is None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=target.num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                 _node_ip_address="127.0.0.1")
    else:
        ray.init(address=target.address, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_cpus(ray) -> int:
    """CPUs the connected cluster has (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


@dataclass(frozen=True)
class WorkerPool:
    """The actor pool of a job.

    Attributes:
        workers: actors, each holding one engine (default: the cluster's CPUs divided by
            ``cpus_per_worker``).
        cpus_per_worker: CPUs reserved per actor (default 1); it is also each engine's
            intra-op thread count, so workers do not oversubscribe the cores.
    """

    workers: int | None = None
    cpus_per_worker: int = 1

    def size(self, ray) -> int:
        """Actors to start on the connected cluster."""
        return self.workers or max(1, cluster_cpus(ray) // self.cpus_per_worker)
