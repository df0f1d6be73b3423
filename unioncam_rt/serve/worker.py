"""One engine's explanations, asynchronously: decode, queue, batch, answer (no Ray).

An `EngineWorker` is what an engine replica runs (`deployments.EngineReplica`): each request
is parsed and decoded on a thread (a bad one fails alone), then joins a `BatchQueue`; a batch
runs on the worker's single engine thread, so the event loop keeps decoding and answering
while the engine works. It is also an `http.EngineClient`, so the HTTP layer can be driven
by one in-process worker (tests).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .batching import BatchQueue
from .errors import Refusal, refusal
from .service import ExplainRequest, ExplainService


@dataclass(frozen=True)
class BatchOptions:
    """How requests are batched on one engine.

    Attributes:
        max_batch: requests explained together at most (default 8).
        wait_s: how long the first request of a batch waits for others when the engine is
            idle (default 0.02); requests that arrive while the engine works join the next
            batch without waiting.
    """

    max_batch: int = 8
    wait_s: float = 0.02


class EngineWorker:
    """Explanations over one `ExplainService`, batched across requests.

    Args:
        service: the engine and its explainers.
        batching: batch size and wait (default `BatchOptions()`).
    """

    def __init__(self, service: ExplainService, batching: BatchOptions = BatchOptions()):
        self.service = service
        self.engine_thread = ThreadPoolExecutor(1, thread_name_prefix="unioncam-engine")
        self.queue = BatchQueue(self._run_batch, batching.max_batch, batching.wait_s)

    async def _run_batch(self, requests: list[ExplainRequest]) -> list[dict | Exception]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.engine_thread, self.service.explain_batch, requests)

    async def explain(self, data: bytes, params: dict) -> dict | Refusal:
        """The response body of one request, or its `Refusal` (4xx for bad input, 500 for a bug)."""
        try:
            prepared = await asyncio.to_thread(self.service.prepare, data, params)
            answer = await self.queue.submit(prepared)
        except Exception as exc:  # noqa: BLE001 - answered, the replica goes on
            return refusal(exc)
        return refusal(answer) if isinstance(answer, Exception) else answer

    async def model_info(self) -> dict:
        """``GET /v1/model``."""
        return self.service.model_info()

    async def stats(self) -> dict:
        """``GET /v1/stats``: the service's counters plus the requests queued for the next batch."""
        return {**self.service.stats(), "queued": self.queue.waiting}
