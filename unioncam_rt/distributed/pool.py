"""Rows of an actor-pool job on Ray Data, in input order, streamed as calls finish."""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def actor_pool_rows(ray, worker_class, worker_args: tuple, items: list[dict], workers: int, cpus_per_worker: int,
                    per_call: int) -> Iterator[Iterator[dict]]:
    """Run ``worker_class(*worker_args)`` on ``workers`` actors over ``items``.

    Each actor call takes ``per_call`` items (one Ray Data block each, so results stream
    back call by call). Within the block, Ray Data keeps the input order and shows no
    progress bars and no INFO logs of its own (the caller shows progress); both are
    restored after it.

    Args:
        ray: the connected ``ray`` module.
        worker_class: a callable class: ``__init__(*worker_args)``, ``__call__(batch) -> rows``
            on numpy batches (dict of column arrays).
        worker_args: its constructor arguments (pickled to every actor).
        items: one dict per input row.
        workers: actors in the pool.
        cpus_per_worker: CPUs reserved per actor.
        per_call: rows per actor call.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    context.execution_options.preserve_order, context.enable_progress_bars = True, False
    quieter = {"ray.data": logging.WARNING, "ray.data._internal.progress": logging.ERROR}  # INFO; "bars disabled"
    levels = {name: logging.getLogger(name).level for name in quieter}
    for name, level in quieter.items():
        logging.getLogger(name).setLevel(max(levels[name], level))
    try:
        dataset = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / per_call)).map_batches(
            worker_class, fn_constructor_args=worker_args, batch_size=per_call, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker)
        yield dataset.iter_rows()
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
