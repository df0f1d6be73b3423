"""Errors a request can cause, each with the HTTP status it is answered with.

Everything here is a `UnionCamError` (a one-line message a client can act on). Errors the
library raises for bad values (`ImageError`, `ModelError`, plain `UnionCamError`: an
unknown method, a theta out of range, a bad budget) are answered 400 unless they are one of
the classes below; see `http_status`.
"""

from __future__ import annotations

from ..errors import UnionCamError


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


def http_status(exc: BaseException) -> int:
    """The status a failed request is answered with: a `RequestError`'s own, 400 for any
    other `UnionCamError` (bad values), 500 for anything else (a bug)."""
    if isinstance(exc, RequestError):
        return exc.status
    if isinstance(exc, UnionCamError):
        return 400
    return 500
