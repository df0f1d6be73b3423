"""HTTP: Starlette requests to `ExplainService` calls, JSON responses, errors as 4xx.

Routes: ``POST /explain``, ``GET /healthz``, ``GET /v1/model``, ``GET /v1/stats``. Every
failure is answered ``{"error": "<one line>"}`` with the status of `http_status`; nothing a
client sends can stop the replica.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Awaitable, Callable

from .decode import ImageLimits
from .errors import MethodNotAllowed, NotFound, PayloadTooLarge, RequestError, UnsupportedMediaType, http_status
from .service import ExplainRequest, ExplainService

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 64 * 2**10  # boundaries and part headers allowed on top of --max-bytes
RAW_TYPES = ("application/octet-stream", "")
ROUTES = {"/explain": "POST", "/healthz": "GET", "/v1/model": "GET", "/v1/stats": "GET"}

Explain = Callable[[ExplainRequest], Awaitable[dict | Exception]]


def json_response(body: dict, status: int = 200):
    from starlette.responses import Response

    return Response(json.dumps(body).encode(), status_code=status, media_type="application/json")


def error_response(exc: BaseException):
    """``{"error": ...}`` with the status of ``exc``; unexpected errors are logged (a bug)."""
    status = http_status(exc)
    if status >= 500:
        log.error("internal error", exc_info=exc)
        message = f"internal error: {type(exc).__name__}: {exc}"
    else:
        message = str(exc)
    return json_response({"error": " ".join(message.split()) or type(exc).__name__}, status)


async def read_body(request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"body of {length} bytes is over this service's limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over this service's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def image_bytes(request, limits: ImageLimits) -> bytes:
    """The image of ``POST /explain``: the raw body (``image/*``, ``application/octet-stream``
    or no content type) or the one ``image`` field of a ``multipart/form-data`` body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type.startswith("image/") or content_type in RAW_TYPES:
        return await read_body(request, limits.max_bytes)
    if content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"content type {content_type!r} unsupported; send the image as the body with Content-Type image/* "
            "(curl -H 'Content-Type: image/jpeg' --data-binary @photo.jpg) or as multipart field 'image' "
            "(curl -F image=@photo.jpg)")
    body = await read_body(request, limits.max_bytes + MULTIPART_OVERHEAD)
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


async def handle(request, service: ExplainService, explain: Explain):
    """Answer one HTTP request; ``explain`` runs a prepared request on the engine (batched)."""
    path = request.url.path.rstrip("/") or "/"
    try:
        if path not in ROUTES:
            raise NotFound(f"no endpoint {path}; endpoints: {', '.join(f'{m} {p}' for p, m in ROUTES.items())}")
        if request.method != ROUTES[path]:
            raise MethodNotAllowed(f"{path} takes {ROUTES[path]}, not {request.method}")
        if path == "/healthz":
            return json_response({"status": "ok"})
        if path == "/v1/model":
            return json_response(service.model_info())
        if path == "/v1/stats":
            return json_response(service.stats())
        data = await image_bytes(request, service.settings.limits)
        prepared = await asyncio.to_thread(service.prepare, data, dict(request.query_params))
        answer = await explain(prepared)
        if isinstance(answer, Exception):
            return error_response(answer)
        return json_response(answer)
    except Exception as exc:  # noqa: BLE001 - every failure is an answer, never a dead replica
        return error_response(exc)
