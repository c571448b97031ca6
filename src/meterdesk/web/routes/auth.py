"""Log in, log out, and the language switch (stored on the user once logged in; a cookie only
for the login page before anyone is logged in).

The login form posts to the console, which logs in through the API's own ``POST /session``
handler (same lockout, same session and CSRF cookies). The form carries a random token that must
match a cookie set with the form (login CSRF: a third-party page cannot log you in as someone
else). Logging out needs the session's CSRF header like every other change.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from meterdesk.access import credentials, service
from meterdesk.access.model import PermissionDeniedError
from meterdesk.api.context import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE, ApiContext
from meterdesk.api.deps import Authenticated, context
from meterdesk.api.routers import session
from meterdesk.api.schemas.access import LoginIn
from meterdesk.shared.errors import MeterdeskError
from meterdesk.web.i18n import DEFAULT_LOCALE, normalise
from meterdesk.web.render import LANG_COOKIE, gettext_for, render, session_viewer

router = APIRouter(include_in_schema=False)
LOGIN_COOKIE = "meterdesk_login"
YEAR_S = 365 * 86_400


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never ``//elsewhere`` or a full URL) may follow a login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/rooms"
    return target


def _login_page(
    request: Request, target: str, error: str | None, status: int = 200
) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        {"next": _safe_next(target), "login_token": token, "error": error},
        status_code=status,
    )
    response.set_cookie(
        LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="strict", path="/"
    )
    return response


@router.get("/login")
def login_form(
    request: Request, next_path: Annotated[str | None, Query(alias="next", max_length=500)] = None
) -> HTMLResponse:
    return _login_page(request, next_path or "/rooms", None)


@router.post("/login", response_model=None)
def log_in(
    request: Request,
    ctx: Annotated[ApiContext, Depends(context)],
    username: Annotated[str, Form(max_length=100)],
    password: Annotated[str, Form(max_length=1024)],
    login_token: Annotated[str, Form(max_length=100)] = "",
    next_path: Annotated[str, Form(alias="next", max_length=500)] = "/rooms",
) -> Response:
    _ = gettext_for(request)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, login_token):
        return _login_page(request, next_path, _("The form expired; please try again."), 400)
    response = RedirectResponse(_safe_next(next_path), status_code=303)
    try:
        answer = session.log_in(
            LoginIn(username=username, password=password), request, response, ctx
        )
    except MeterdeskError:
        return _login_page(
            request, next_path, _("Wrong username or password, or too many tries."), 401
        )
    response.delete_cookie(LOGIN_COOKIE, path="/")
    # The pages follow the user's own language; the cookie makes the login page after logging
    # out in this browser follow it too.
    remember_language(response, normalise(answer.locale) or DEFAULT_LOCALE)
    return response


@router.post("/logout")
def log_out(who: Authenticated, ctx: Annotated[ApiContext, Depends(context)]) -> Response:
    if who.via == "session":
        credentials.end_session(ctx.app.db, session_id=who.credential_id)
    response = Response(status_code=204, headers={"HX-Redirect": "/login"})
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/")
    return response


def remember_language(response: Response, locale: str) -> None:
    response.set_cookie(LANG_COOKIE, locale, max_age=YEAR_S, samesite="lax", path="/")


@router.post("/lang")
def switch_language(
    request: Request,
    ctx: Annotated[ApiContext, Depends(context)],
    locale: Annotated[str, Form(max_length=10)],
) -> Response:
    """Logged in: store the language on the user (every page, every browser, from now on).
    Before login: remember it in this browser for the login page. The page reloads in it."""
    chosen = normalise(locale) or DEFAULT_LOCALE
    who = session_viewer(request)
    if who is not None:
        if not who.csrf_matches(request.headers.get(CSRF_HEADER)):
            raise PermissionDeniedError(f"missing or wrong {CSRF_HEADER} header")
        service.set_locale(ctx.app.db, user_id=who.user_id, locale=chosen)
    response = Response(status_code=204, headers={"HX-Refresh": "true"})
    remember_language(response, chosen)
    return response
