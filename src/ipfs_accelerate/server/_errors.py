"""Errors in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from .._exceptions import (
    AccelerateError,
    InvalidInput,
    ModelNotAvailable,
    OutOfMemory,
    Overloaded,
    UnsupportedTask,
)

if TYPE_CHECKING:
    from starlette.responses import JSONResponse

__all__ = ["ApiError", "error_body", "error_response", "status_of"]

log = logging.getLogger("ipfs_accelerate.server")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class ApiError(Exception):
    """An error answered to the client with ``status`` and the OpenAI error shape.

    Args:
        status: the HTTP status.
        message: what went wrong, for the client.
        param: the request field at fault, if any.
        code: a short machine-readable code.
        headers: extra response headers (``Retry-After`` …).
    """

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error document."""
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error" if status >= 500
                                                              else "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(exc: ApiError) -> JSONResponse:
    """The response that answers ``exc``: its status, the OpenAI error document and its headers."""
    from starlette.responses import JSONResponse

    return JSONResponse(error_body(exc.status, exc.message, param=exc.param, code=exc.code), status_code=exc.status,
                        headers=exc.headers)


def status_of(exc: BaseException) -> ApiError:
    """Map a library exception (or anything else) to the API error it answers.

    Unexpected exceptions become a 500 whose message names a request id; the traceback goes
    to the log under that id, never to the client.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Overloaded):
        return ApiError(429, str(exc), code="overloaded", headers={"Retry-After": "1"})
    if isinstance(exc, (InvalidInput, UnsupportedTask)):
        return ApiError(400, str(exc), code="invalid_input")
    if isinstance(exc, ModelNotAvailable):
        return ApiError(404, str(exc), code="model_not_found")
    if isinstance(exc, OutOfMemory):
        request_id = uuid.uuid4().hex
        log.error("request %s: out of memory: %s", request_id, exc)
        return ApiError(503, f"out of memory; retry later (request id {request_id})", code="out_of_memory",
                        headers={"Retry-After": "5", "x-request-id": request_id})
    request_id = uuid.uuid4().hex
    kind = "library error" if isinstance(exc, AccelerateError) else "unexpected error"
    log.error("request %s: %s %s", request_id, kind, type(exc).__name__, exc_info=exc)
    return ApiError(500, f"internal error (request id {request_id})", code="internal_error",
                    headers={"x-request-id": request_id})
