"""One replica's work, without Ray: requests in, response bodies out.

A replica holds one engine and an `Explainer` per (method, theta, budget) key, all over
that engine (a bounded cache: least recently used keys are dropped). A request is parsed
and its image decoded first (`prepare`), so a bad request fails alone; requests that arrive
together are then explained together (`explain_batch`): one `Explainer.explain_loaded` call
per key, so their masked passes share engine calls.
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import re
import socket
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..errors import UnionCamError
from .decode import ImageLimits, decode_image
from .errors import RequestError

log = logging.getLogger(__name__)

QUERY_PARAMETERS = ("method", "class", "theta", "budget", "npy")
CLASS_INDEX = re.compile(r"-?[0-9]+", re.ASCII)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class ServiceSettings:
    """What every replica applies to every request.

    Attributes:
        limits: body and pixel limits (default `ImageLimits()`).
        batch_size: masked images per engine call (default: the `Explainer`'s).
        max_memory: peak-memory budget of an `Explainer` (default: none).
        max_explainers: (method, theta, budget) keys kept per replica (default 16).
        body_timeout_s: seconds a request's body may take to arrive (default 30; 408 after).
    """

    limits: ImageLimits = ImageLimits()
    batch_size: int | None = None
    max_memory: int | str | None = None
    max_explainers: int = 16
    body_timeout_s: float = 30.0


@dataclass(frozen=True)
class ExplainKey:
    """Requests with the same key share one `Explainer` and one engine call per batch."""

    method: str = "unioncam"
    theta: float = 10.0
    budget: str | None = None


@dataclass
class ExplainRequest:
    """A parsed request with its decoded image, waiting for the engine."""

    key: ExplainKey
    image: object  # LoadedImage
    target: int
    npy: bool
    decode_s: float
    arrived: float


class ExplainService:
    """Explanations over one engine.

    Args:
        engine: the replica's `CamEngine`.
        settings: limits and explainer options.
    """

    def __init__(self, engine, settings: ServiceSettings = ServiceSettings()):
        self.engine = engine
        self.settings = settings
        self._explainers: OrderedDict[ExplainKey, object] = OrderedDict()
        self._lock = threading.Lock()
        self._calls = itertools.count(1)
        self.requests = 0
        self.images_per_call: Counter[int] = Counter()
        self.explaining = 0  # images in the engine call running now
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.explainer(ExplainKey())  # refuse bad --batch-size / --max-memory at start-up

    def model_info(self) -> dict:
        """``GET /v1/model``."""
        from ..method import METHODS

        engine = self.engine
        return {"model": engine.model_name, "labels": list(engine.class_names), "classes": len(engine.class_names),
                "input_size": list(engine.input_size), "backend": getattr(engine, "backend", None),
                "precision": getattr(engine, "precision", None), "methods": list(METHODS)}

    def stats(self) -> dict:
        """``GET /v1/stats``: this replica's counters (requests explained, images in the engine
        call running now, engine calls and images per `explain_loaded` call)."""
        return {"replica": self.replica, "requests": self.requests, "explaining": self.explaining,
                "explain_calls": sum(self.images_per_call.values()),
                "images_per_call": {str(k): v for k, v in sorted(self.images_per_call.items())}}

    def explainer(self, key: ExplainKey):
        """The `Explainer` of ``key`` (built on first use; raises `UnionCamError` for bad values)."""
        with self._lock:
            if key in self._explainers:
                self._explainers.move_to_end(key)
                return self._explainers[key]
        from ..explainer import Explainer

        extra = {} if key.budget is None else {"budget": key.budget}
        explainer = Explainer(engine=self.engine, method=key.method, theta=key.theta,
                              batch_size=self.settings.batch_size, max_memory=self.settings.max_memory, **extra)
        with self._lock:
            self._explainers[key] = explainer
            while len(self._explainers) > self.settings.max_explainers:
                self._explainers.popitem(last=False)
        return explainer

    def parse_query(self, params: Mapping[str, str]) -> tuple[ExplainKey, str | None, bool]:
        """(key, class, npy) from the query parameters; raises `RequestError` (400)."""
        unknown = sorted(set(params) - set(QUERY_PARAMETERS))
        if unknown:
            raise RequestError(f"unknown query parameter {unknown[0]!r}; known: {', '.join(QUERY_PARAMETERS)}")
        method = params.get("method", "unioncam").strip().lower()
        try:
            theta = float(params.get("theta", "10"))
        except ValueError:
            raise RequestError(f"theta {params['theta']!r} is not a number") from None
        budget = params.get("budget")
        if budget is not None:
            budget = budget.strip().lower()
            if not budget.isascii():
                raise RequestError(f"budget {params['budget']!r}: give 0 (exact), a channel count K or "
                                   "coverSHARE[:K], optionally /RULE[/FILL], in ASCII")
        npy = params.get("npy", "0").strip().lower()
        if npy not in _TRUE + _FALSE:
            raise RequestError(f"npy {params['npy']!r}: give 1 or 0")
        return ExplainKey(method, theta, budget), parse_class(params.get("class")), npy in _TRUE

    def prepare(self, data: bytes, params: Mapping[str, str]) -> ExplainRequest:
        """Parse and check a request and decode its image; raises a `UnionCamError` (4xx)."""
        arrived = time.perf_counter()
        key, target, npy = self.parse_query(params)
        try:
            explainer = self.explainer(key)
            index = explainer.class_index(target)
        except (ValueError, TypeError, OverflowError) as exc:  # a query value the library's parsers choke on
            raise RequestError(f"bad query value ({type(exc).__name__}: {exc}); "
                               f"parameters: {', '.join(QUERY_PARAMETERS)}") from None
        image = decode_image(data, self.engine.input_size, self.settings.limits)
        return ExplainRequest(key, image, index, npy, time.perf_counter() - arrived, arrived)

    def explain_batch(self, requests: list[ExplainRequest]) -> list[dict | Exception]:
        """Response bodies of requests that arrived together, in order: one `explain_loaded`
        call per key. A group that fails answers each of its requests with the error."""
        started = time.perf_counter()
        self.explaining = len(requests)
        try:
            return self._explain_groups(requests, started)
        finally:
            self.explaining = 0

    def _explain_groups(self, requests: list[ExplainRequest], started: float) -> list[dict | Exception]:
        groups: dict[ExplainKey, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(request.key, []).append(i)
        answers: list[dict | Exception] = [RuntimeError("not answered")] * len(requests)
        for key, members in groups.items():
            group = [requests[i] for i in members]
            call = next(self._calls)
            try:
                results = self.explainer(key).explain_loaded([r.image for r in group], [r.target for r in group])
            except Exception as exc:  # noqa: BLE001 - answered per request; the replica goes on
                if not isinstance(exc, UnionCamError):
                    log.exception("explain call %d failed", call)
                for i in members:
                    answers[i] = exc
                continue
            self.images_per_call[len(group)] += 1
            self.requests += len(group)
            for i, request, result in zip(members, group, results):
                batch = {"call": call, "images": len(group), "requests": len(requests), "replica": self.replica}
                answers[i] = response_body(result, request, started, batch)
        return answers


def parse_class(text: str | None) -> int | str | None:
    """``class``: an index in ASCII digits (``-1``: top-1), a class name, or None (top-1).

    Raises:
        RequestError: digits that are not an ASCII integer (``--5``, ``²``).
    """
    if text is None:
        return None
    stripped = text.strip()
    if CLASS_INDEX.fullmatch(stripped):
        return int(stripped)
    if stripped.lstrip("-+").isdigit():
        raise RequestError(f"class {text!r} is neither a class index (an integer in ASCII digits) nor a class name")
    return text


def response_body(result, request: ExplainRequest, started: float, batch: dict) -> dict:
    """``Explanation.summary()`` plus ``cam_png`` (base64 PNG, 8-bit, input resolution),
    ``cam_npy`` when asked (base64 of the float32 ``.npy``) and ``batch`` (which engine call
    it shared with how many images); timings: see `unioncam_rt.results.request_timings`."""
    from PIL import Image

    from ..fileio import npy_bytes, png_bytes
    from ..results import request_timings

    body = result.summary()
    body["timings"] = request_timings(body["timings"], request.decode_s, started - request.arrived - request.decode_s,
                                      time.perf_counter() - request.arrived)
    cam8 = np.round(result.cam * 255).astype(np.uint8)
    body["cam_png"] = base64.b64encode(png_bytes(Image.fromarray(cam8, "L"))).decode("ascii")
    if request.npy:
        body["cam_npy"] = base64.b64encode(npy_bytes(result.cam.astype(np.float32))).decode("ascii")
    body["batch"] = batch
    return body
