"""Errors a request can cause, each with the HTTP status it is answered with.

Everything here is a `UnionCamError` (a one-line message a client can act on). Errors the
library raises for bad values (`ImageError`, `ModelError`, plain `UnionCamError`: an
unknown method, a theta out of range, a bad budget) are answered 400 unless they are one of
the classes below; see `http_status`. A failed request crosses from the engine replica to
the HTTP replica as a `Refusal` (plain values: no traceback travels, none reaches a client).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import UnionCamError

log = logging.getLogger(__name__)


class RequestError(UnionCamError):
    """A request the service refuses; ``status`` is the HTTP status of the answer."""

    status = 400


class PayloadTooLarge(RequestError):
    """The body is over ``--max-bytes``, the image over ``--max-pixels``, or a decompression bomb."""

    status = 413


class UnsupportedMediaType(RequestError):
    """The body is neither ``image/*``, ``application/octet-stream`` nor ``multipart/form-data``."""

    status = 415


class NotFound(RequestError):
    """No such endpoint."""

    status = 404


class MethodNotAllowed(RequestError):
    """The endpoint exists, not with this HTTP method."""

    status = 405


class RequestTimeout(RequestError):
    """The body did not arrive within ``--body-timeout-s``."""

    status = 408


class ServiceUnavailable(RequestError):
    """No engine replica answered: it stopped while working on the request, or every one is
    busy. The request was not answered and may be retried."""

    status = 503


def http_status(exc: BaseException) -> int:
    """The status a failed request is answered with: a `RequestError`'s own, 400 for any
    other `UnionCamError` (bad values), 500 for anything else (a bug)."""
    if isinstance(exc, RequestError):
        return exc.status
    if isinstance(exc, UnionCamError):
        return 400
    return 500


@dataclass(frozen=True)
class Refusal:
    """A failed request's answer as plain values: the HTTP status and a one-line message."""

    status: int
    message: str


def refusal(exc: BaseException) -> Refusal:
    """The `Refusal` of ``exc``; an unexpected error (a bug, 500) is logged with its traceback
    here and reaches the client as one line without it."""
    status = http_status(exc)
    if not isinstance(exc, UnionCamError):
        log.error("internal error", exc_info=exc)
        message = f"internal error: {type(exc).__name__}: {exc}"
    else:
        message = str(exc)
    return Refusal(status, " ".join(message.split()) or type(exc).__name__)
