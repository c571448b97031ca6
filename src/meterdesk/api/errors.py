"""The one table from error class to HTTP status and error code, and the handlers that answer
every error with ``{"error": {"code": ..., "message": ...}}``.

Classes are checked in order, most specific first (as in the CLI's exit-code table).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from meterdesk.access.model import AuthenticationError, PermissionDeniedError, RateLimitedError
from meterdesk.shared.errors import (
    ConflictError,
    IdempotencyConflictError,
    InsufficientFundsError,
    MeterdeskError,
    NotFoundError,
    ValidationError,
)


class BadRequestError(MeterdeskError):
    """A request the API cannot take as sent (e.g. a missing Idempotency-Key header)."""


ERROR_TABLE: tuple[tuple[type[MeterdeskError], int, str], ...] = (
    (RateLimitedError, 429, "rate_limited"),
    (AuthenticationError, 401, "unauthenticated"),
    (PermissionDeniedError, 403, "forbidden"),
    (BadRequestError, 400, "bad_request"),
    (ValidationError, 422, "validation_error"),
    (NotFoundError, 404, "not_found"),
    (IdempotencyConflictError, 409, "idempotency_conflict"),
    (InsufficientFundsError, 409, "insufficient_funds"),
    (ConflictError, 409, "conflict"),
    (MeterdeskError, 400, "error"),
)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def _documented(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# Documented on every route, so clients (and schemathesis) know each error's shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented("Bad request (e.g. a missing Idempotency-Key)"),
    401: _documented("Not logged in, or the token is invalid"),
    403: _documented("The role does not allow this, or the CSRF token is missing"),
    404: _documented("Not found in the caller's organisation"),
    409: _documented("Conflict: state, idempotency key reused, insufficient funds"),
    422: _documented("Invalid input"),
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def status_of(error: MeterdeskError) -> tuple[int, str]:
    return next((status, code) for kind, status, code in ERROR_TABLE if isinstance(error, kind))


def _meterdesk_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, MeterdeskError)
    status, code = status_of(error)
    headers = None
    if isinstance(error, RateLimitedError):
        headers = {"Retry-After": str(error.retry_after_s)}
    elif status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return error_response(status, code, str(error), headers)


def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    messages = []
    for item in error.errors()[:5]:
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        messages.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg")))
    return error_response(422, "validation_error", "; ".join(messages) or "invalid request")


def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = _HTTP_CODES.get(error.status_code, "http_error")
    return error_response(error.status_code, code, str(error.detail), dict(error.headers or {}))


def install(app: FastAPI) -> None:
    app.add_exception_handler(MeterdeskError, _meterdesk_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
