"""HTTP: Starlette requests to engine calls, JSON responses, errors as 4xx.

Routes: ``POST /explain``, ``GET /healthz``, ``GET /v1/model``, ``GET /v1/stats``. Every
failure is answered ``{"error": "<one line>"}`` with the status of `http_status`; nothing a
client sends can stop the replica. ``/healthz`` is answered here, without the engine; a body
is read under a deadline (``body_timeout_s``, 408 after), so a client that stalls holds its
request for that long at most. The engine is reached through an `EngineClient`.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Protocol

from .decode import ImageLimits
from .errors import (
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Refusal,
    RequestError,
    RequestTimeout,
    UnsupportedMediaType,
    refusal,
)
from .service import ServiceSettings

MULTIPART_OVERHEAD = 64 * 2**10  # boundaries and part headers allowed on top of --max-bytes
RAW_TYPES = ("application/octet-stream", "")
ROUTES = {"/explain": "POST", "/healthz": "GET", "/v1/model": "GET", "/v1/stats": "GET"}
RETRY_AFTER_S = 1  # told to clients answered 503
DIGITS = re.compile(r"[0-9]+", re.ASCII)


class EngineClient(Protocol):
    """Where explanations are computed (an engine replica, or a service in this process)."""

    async def explain(self, data: bytes, params: dict) -> dict | Refusal:
        """The response body of one request, or its refusal."""

    async def model_info(self) -> dict:
        """``GET /v1/model``."""

    async def stats(self) -> dict:
        """``GET /v1/stats``."""


def json_response(body: dict, status: int = 200):
    from starlette.responses import Response

    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return Response(json.dumps(body).encode(), status_code=status, media_type="application/json", headers=headers)


def refusal_response(answer: Refusal):
    """``{"error": ...}`` with the refusal's status (503s say when to retry)."""
    return json_response({"error": answer.message}, answer.status)


def error_response(exc: BaseException):
    """``{"error": ...}`` with the status of ``exc``; unexpected errors are logged (a bug)."""
    return refusal_response(refusal(exc))


async def read_body(request, limit: int, timeout_s: float) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes, and with
    408 if it has not all arrived ``timeout_s`` seconds after the read began."""
    length = request.headers.get("content-length", "").strip()
    if DIGITS.fullmatch(length) and int(length) > limit:
        raise PayloadTooLarge(f"body of {length} bytes is over this service's limit of {limit} bytes")
    chunks: list[bytes] = []

    async def receive_all() -> None:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is over this service's limit of {limit} bytes")
            chunks.append(chunk)

    from starlette.requests import ClientDisconnect

    try:
        await asyncio.wait_for(receive_all(), timeout_s)
    except ClientDisconnect:
        raise RequestError(f"body incomplete: the client disconnected after {sum(len(c) for c in chunks)} "
                           "bytes") from None
    except asyncio.TimeoutError:
        got = sum(len(c) for c in chunks)
        expected = f" of {length}" if DIGITS.fullmatch(length) else ""
        raise RequestTimeout(f"body not received within {timeout_s:g} s ({got}{expected} bytes arrived); "
                             "send the whole body at once") from None
    return b"".join(chunks)


async def image_bytes(request, limits: ImageLimits, timeout_s: float) -> bytes:
    """The image of ``POST /explain``: the raw body (``image/*``, ``application/octet-stream``
    or no content type) or the one ``image`` field of a ``multipart/form-data`` body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type.startswith("image/") or content_type in RAW_TYPES:
        return await read_body(request, limits.max_bytes, timeout_s)
    if content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"content type {content_type!r} unsupported; send the image as the body with Content-Type image/* "
            "(curl -H 'Content-Type: image/jpeg' --data-binary @photo.jpg) or as multipart field 'image' "
            "(curl -F image=@photo.jpg)")
    body = await read_body(request, limits.max_bytes + MULTIPART_OVERHEAD, timeout_s)
    return await multipart_image(request.headers, body)


async def multipart_image(headers, body: bytes) -> bytes:
    """The bytes of the single ``image`` field of a multipart body."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def once():
        yield body

    try:
        form = await MultiPartParser(headers, once(), max_files=8, max_fields=16).parse()
    except MultiPartException as exc:
        raise RequestError(f"malformed multipart body ({exc})") from None
    parts = form.getlist("image")
    try:
        if not parts:
            raise RequestError(f"multipart body has no 'image' field (fields: {', '.join(form.keys()) or 'none'})")
        if len(parts) > 1:
            raise PayloadTooLarge(f"{len(parts)} images in one request; send one image per request "
                                  "(concurrent requests are batched)")
        part = parts[0]
        return part.encode() if isinstance(part, str) else await part.read()
    finally:
        await form.close()


def route(request) -> str:
    """The endpoint of ``request``; raises `NotFound` or `MethodNotAllowed`."""
    path = request.url.path.rstrip("/") or "/"
    if path not in ROUTES:
        raise NotFound(f"no endpoint {path}; endpoints: {', '.join(f'{m} {p}' for p, m in ROUTES.items())}")
    if request.method != ROUTES[path]:
        raise MethodNotAllowed(f"{path} takes {ROUTES[path]}, not {request.method}")
    return path


async def handle(request, engine: EngineClient, settings: ServiceSettings):
    """Answer one HTTP request; ``engine`` computes explanations (batched there)."""
    try:
        path = route(request)
        if path == "/healthz":
            return json_response({"status": "ok"})
        if path == "/v1/model":
            return json_response(await engine.model_info())
        if path == "/v1/stats":
            return json_response(await engine.stats())
        data = await image_bytes(request, settings.limits, settings.body_timeout_s)
        answer = await engine.explain(data, dict(request.query_params))
        return refusal_response(answer) if isinstance(answer, Refusal) else json_response(answer)
    except Exception as exc:  # noqa: BLE001 - every failure is an answer, never a dead replica
        return error_response(exc)
