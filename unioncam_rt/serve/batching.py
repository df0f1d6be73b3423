"""Cross-request batching on one replica: a queue whose batches form while the engine is free.

Ray Serve's ``@serve.batch`` forms the next batch as soon as the first request of it arrives
(after ``batch_wait_timeout_s``), even while the previous batch still runs on the engine;
formed batches then wait their turn. With explanations that take seconds, requests arriving
during one engine call were split into many batches of one (measured: 110 of 141 engine calls
held one image under 8 clients). Here a batch is taken from the queue only when the engine is
free, so everything that arrived during one engine call (up to ``max_batch``) goes into the
next one; ``wait_s`` only matters when the engine is idle.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Awaitable, Callable, Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class BatchQueue(Generic[Item, Answer]):
    """Items in, one answer each, computed in batches of up to ``max_batch``, one batch at a time.

    Args:
        run_batch: computes the answers of a batch, in order (an exception fails the whole batch).
        max_batch: items in one batch at most.
        wait_s: how long the first item of a batch waits for others when the engine is idle.
    """

    def __init__(self, run_batch: Callable[[list[Item]], Awaitable[list[Answer]]], max_batch: int, wait_s: float):
        if max_batch < 1 or wait_s < 0:
            raise ValueError(f"max_batch {max_batch} must be >= 1 and wait_s {wait_s} >= 0")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self.batch_sizes: Counter[int] = Counter()  # batches run, by size

    @property
    def waiting(self) -> int:
        """Items queued, not yet in a batch."""
        return 0 if self._queue is None else self._queue.qsize()

    async def submit(self, item: Item) -> Answer:
        """The answer of ``item``, once the batch it joins has run."""
        if self._worker is None or self._worker.done():
            self._queue = self._queue or asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._work())
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch:
                await self._run(batch)

    async def _next_batch(self) -> list:
        """Waits for a first item, then takes what is queued, waiting up to ``wait_s`` for more;
        items whose caller is gone (cancelled) are dropped and do not count."""
        batch: list = []
        self._add(batch, await self._queue.get())
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                self._add(batch, self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                self._add(batch, await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    @staticmethod
    def _add(batch: list, entry: tuple) -> None:
        if not entry[1].done():
            batch.append(entry)

    async def _run(self, batch: list) -> None:
        self.batch_sizes[len(batch)] += 1
        try:
            answers = await self.run_batch([item for item, _ in batch])
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets the error
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("batch cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), answer in zip(batch, answers):
            if not future.done():
                future.set_result(answer)
