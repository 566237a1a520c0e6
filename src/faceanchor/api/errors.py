"""Every error answers ``{"error": {"type", "message"}}`` with the right status code.

FastAPI's own validation (422), not-found (404) and method (405) answers are replaced so
clients see one shape; :class:`~faceanchor.errors.FaceAnchorError` maps its ``http_status``
and ``type``; anything unexpected is a 500 ``internal_error`` (bad input never ends there).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from faceanchor.errors import FaceAnchorError

log = logging.getLogger("faceanchor.api")

STATUS_TYPES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    501: "not_implemented",
    503: "unavailable",
    504: "deadline_exceeded",
}


class ErrorInfo(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorInfo


class ApiError(StarletteHTTPException):
    """An HTTP error with a machine-readable ``type`` (and optional headers such as Retry-After)."""

    def __init__(self, status_code: int, message: str, type_: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.type = type_ or STATUS_TYPES.get(status_code, "error")


def error_response(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "body"
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": STATUS_TYPES.get(code, "error")} for code in codes}


#: Error responses every authenticated route may give (documented in OpenAPI).
AUTH_ERRORS = _responses(401, 403, 422)
SUBMIT_ERRORS = _responses(400, 401, 403, 413, 415, 422, 429, 503)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return _responses(*codes)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FaceAnchorError)
    async def _faceanchor(_req: Request, exc: FaceAnchorError) -> JSONResponse:
        headers = None
        retry = getattr(exc, "retry_after", None)
        if retry is not None:
            headers = {"Retry-After": str(int(retry))}
        extra = getattr(exc, "headers", None)  # e.g. the X-Quota-* numbers of an exhausted quota
        if isinstance(extra, dict):
            headers = dict(headers or {}, **extra)
        return error_response(exc.http_status, exc.type, str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "validation_error", _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = getattr(exc, "type", None) or STATUS_TYPES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "no such resource"
        if exc.status_code == 405 and message == "Method Not Allowed":
            message = "this method is not allowed on this resource"
        return error_response(exc.status_code, type_, message, dict(exc.headers) if exc.headers else None)

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        from faceanchor.store.db import is_transient

        if is_transient(exc):  # the database dropped the connection or is restarting: retry shortly
            log.warning("database unavailable: %s", type(exc).__name__)
            return error_response(503, "unavailable", "the database is unavailable; retry shortly", {"Retry-After": "2"})
        log.exception("unexpected error", exc_info=exc)
        return error_response(500, "internal_error", "the server failed to handle this request")
