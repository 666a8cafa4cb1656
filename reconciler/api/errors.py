"""One error shape for every response: ``{"error": {"code": ..., "message": ...}}``.

FastAPI and Starlette answer 404, 405 and 422 with their own bodies; the handlers
installed by :func:`install_handlers` rewrite those, so a client (the CLI, the
dashboard, a script) parses one shape whatever went wrong. Unexpected exceptions are
logged with their traceback and answered with a message that reveals nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from reconciler.core.errors import (
    DuplicateRunError,
    OperationRefused,
    StoreError,
    TaskNotFoundError,
)

log = logging.getLogger("reconciler.api")

#: The ``code`` for a status when nothing more specific was given.
CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}


class ApiError(Exception):
    """Raised by handlers: becomes a JSON error response with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or CODES.get(status, "error")
        self.message = message
        self.headers = dict(headers or {})


def error_body(code: str, message: str, details: Sequence[Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = list(details)
    return {"error": error}


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
    details: Sequence[Any] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(code or CODES.get(status, "error"), message, details),
        status_code=status,
        headers=dict(headers or {}),
    )


def _where(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc) if loc else "request"


def validation_details(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Pydantic errors without the offending input (it could be large or sensitive)."""
    return [{"field": _where(e.get("loc", ())), "message": str(e.get("msg", ""))} for e in errors]


def install_handlers(app: FastAPI) -> None:
    async def api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.message, exc.code, exc.headers)

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) else CODES.get(status, "error")
        if status == 404 and message == "Not Found":
            message = "no such endpoint (the API lives under /api/v1; see /api/v1/openapi.json)"
        elif status == 405:
            message = "method not allowed on this endpoint"
        return error_response(status, message, headers=getattr(exc, "headers", None))

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = validation_details(exc.errors())
        first = details[0] if details else {"field": "request", "message": "invalid"}
        message = f"{first['field']}: {first['message']}"
        if len(details) > 1:
            message += f" (and {len(details) - 1} more)"
        return error_response(422, message, details=details)

    async def not_found(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TaskNotFoundError)
        return error_response(404, f"task {exc.name!r} not found")

    async def refused(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OperationRefused)
        return error_response(exc.status, exc.message, exc.code)

    async def duplicate(_request: Request, exc: Exception) -> JSONResponse:
        return error_response(409, str(exc))

    async def store_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return error_response(503, "the database is unavailable; try again", "database_unavailable")

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error (the daemon logged the details)")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(TaskNotFoundError, not_found)
    app.add_exception_handler(DuplicateRunError, duplicate)
    app.add_exception_handler(OperationRefused, refused)
    app.add_exception_handler(StoreError, store_error)
    app.add_exception_handler(Exception, internal)
