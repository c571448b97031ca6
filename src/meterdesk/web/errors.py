"""Errors on console pages: a page asks you to log in (a redirect, or ``HX-Redirect`` for an
htmx request); anything else is shown as a message in the page or in the dialog that asked.

The API keeps its JSON errors: the handlers installed here wrap the API's own and pass every
request under ``/api/`` (and the OpenAPI document) to them unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from meterdesk.access.model import AuthenticationError, RateLimitedError
from meterdesk.api.errors import status_of
from meterdesk.shared.errors import MeterdeskError
from meterdesk.web.render import render, session_viewer

Handler = Callable[[Request, Exception], Response | Awaitable[Response]]
API_PREFIXES = ("/api/", "/openapi.json")


def is_console(request: Request) -> bool:
    return not request.url.path.startswith(API_PREFIXES)


def login_redirect(request: Request) -> Response:
    target = "/login?next=" + quote(request.url.path, safe="/")
    if request.headers.get("HX-Request") == "true":
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def _message(error: Exception) -> tuple[int, str]:
    if isinstance(error, MeterdeskError):
        return status_of(error)[0], str(error)
    if isinstance(error, StarletteHTTPException):
        return error.status_code, str(error.detail)
    if isinstance(error, RequestValidationError):
        parts = [
            f"{'.'.join(str(p) for p in item.get('loc', ())[1:])}: {item.get('msg', 'invalid')}"
            for item in error.errors()[:5]
        ]
        return 422, "; ".join(parts) or "invalid request"
    return 500, "internal error"


def console_error(request: Request, error: Exception) -> Response:
    if isinstance(error, AuthenticationError) and not isinstance(error, RateLimitedError):
        return login_redirect(request)
    status, message = _message(error)
    template = (
        "partials/error.html" if request.headers.get("HX-Request") == "true" else "error.html"
    )
    context = {"status": status, "message": message}
    # In the user's language (and with the menu) when someone is logged in.
    return render(request, template, context, who=session_viewer(request), status_code=status)


def _wrap(original: Handler) -> Callable[[Request, Exception], Any]:
    async def handler(request: Request, error: Exception) -> Response:
        if is_console(request):
            return console_error(request, error)
        answer = original(request, error)
        return await answer if isinstance(answer, Awaitable) else answer

    return handler


def install(api: FastAPI) -> None:
    for kind in (MeterdeskError, RequestValidationError, StarletteHTTPException):
        original = api.exception_handlers.get(kind)
        if original is not None:
            api.add_exception_handler(kind, _wrap(original))
