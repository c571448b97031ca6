"""Rendering the console's pages: one Jinja2 environment per language (autoescaped, with that
language's catalog and formatters installed, so rendering in threads shares nothing mutable),
the language of a request, and the context every page gets (who is logged in, what they may do,
the CSRF token for the meta tag htmx reads)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, pass_context, select_autoescape
from jinja2.runtime import Context

from meterdesk import __version__
from meterdesk.access import credentials
from meterdesk.access.credentials import Principal
from meterdesk.access.model import Permission
from meterdesk.api.context import CSRF_COOKIE, SESSION_COOKIE, ApiContext
from meterdesk.web import form_errors, reasons
from meterdesk.web.i18n import (
    DEFAULT_LOCALE,
    LANGUAGE_NAMES,
    LOCALES,
    formatter,
    normalise,
    translations,
)

LANG_COOKIE = "meterdesk_lang"
DEFAULT_ZONE = ZoneInfo("Asia/Shanghai")


def _zone(ctx: Context) -> ZoneInfo:
    found = ctx.get("tz")
    if isinstance(found, ZoneInfo):
        return found
    return ZoneInfo(found) if isinstance(found, str) and found else DEFAULT_ZONE


def _filters(locale: str) -> dict[str, Any]:
    fmt = formatter(locale)

    @pass_context
    def when(ctx: Context, value: datetime | str | None, part: str = "datetime") -> str:
        instant = datetime.fromisoformat(value) if isinstance(value, str) else value
        return fmt.datetime(instant, _zone(ctx), part=part)

    def money(value: Decimal | int | None) -> str:
        return fmt.money(value)

    def fen(value: int | None) -> str:
        return fmt.money(value, fen=True)

    def number(value: Decimal | int | float | str | None, places: int = 2) -> str:
        if isinstance(value, str):
            value = Decimal(value)
        return fmt.number(value, places) if isinstance(value, Decimal | int | float) else "—"

    def reason(value: str | None) -> str:
        return reasons.translate(value, locale)

    def form_error(value: str | None) -> str:
        return form_errors.translate(value, locale)

    return {
        "when": when,
        "money": money,
        "fen": fen,
        "number": number,
        "reason": reason,
        "form_error": form_error,
    }


@cache
def environment(locale: str) -> Environment:
    env = Environment(
        loader=PackageLoader("meterdesk.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    env.filters.update(_filters(locale))
    env.globals.update(
        locale=locale,
        html_lang="zh-CN" if locale == "zh-CN" else "en",
        languages=[(code, LANGUAGE_NAMES[code]) for code in LOCALES],
        version=__version__,
    )
    return env


def request_locale(request: Request, who: Principal | None = None) -> str:
    """Logged in: the user's own language (stored on the user, so every browser shows it).
    Before login: the language chosen in this browser for the login page, else zh-CN."""
    if who is not None:
        return normalise(who.locale) or DEFAULT_LOCALE
    return normalise(request.cookies.get(LANG_COOKIE)) or DEFAULT_LOCALE


def session_viewer(request: Request) -> Principal | None:
    """Who is logged in with this browser's session cookie, if anyone (for the pages that are
    not behind a permission: errors, the language switch)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    ctx = request.app.state.meterdesk
    assert isinstance(ctx, ApiContext)
    return credentials.session_principal(ctx.app.db, token=token, policy=ctx.config.session_policy)


def gettext_for(request: Request, who: Principal | None = None) -> Any:
    return translations(request_locale(request, who)).gettext


@dataclass(frozen=True)
class Viewer:
    """What a template needs to know about the person looking at it."""

    username: str
    role: str
    permissions: frozenset[str]

    def can(self, permission: str) -> bool:
        return permission in self.permissions


def viewer(who: Principal | None) -> Viewer | None:
    if who is None:
        return None
    return Viewer(
        who.username,
        "" if who.role is None else who.role.value,
        frozenset(p.value for p in who.permissions()),
    )


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    who: Principal | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    locale = request_locale(request, who)
    values = {
        "request": request,
        "me": viewer(who),
        "P": Permission,
        "csrf_token": request.cookies.get(CSRF_COOKIE, ""),
        "htmx": request.headers.get("HX-Request") == "true",
        **(context or {}),
    }
    body = environment(locale).get_template(template).render(values)
    return HTMLResponse(body, status_code=status_code, headers=headers)
