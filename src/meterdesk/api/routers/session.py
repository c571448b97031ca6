"""Console login and logout (``/session``): a password login answers a session cookie and the
CSRF token the console repeats in ``X-CSRF-Token`` on every change. The caller's own password and
language (``/session/password``, ``/session/locale``) are here too."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from meterdesk.access import credentials, login, service
from meterdesk.access.credentials import Principal
from meterdesk.api.context import CSRF_COOKIE, SESSION_COOKIE, ApiConfig, ApiContext
from meterdesk.api.deps import Authenticated, client_address, context
from meterdesk.api.errors import ERROR_RESPONSES, BadRequestError, ErrorBody
from meterdesk.api.schemas.access import (
    LocaleIn,
    LoginIn,
    MembershipOut,
    PasswordChangeIn,
    SessionOut,
)

router = APIRouter(tags=["session"], responses=ERROR_RESPONSES)


def describe(ctx: ApiContext, who: Principal) -> SessionOut:
    identity = service.identity(ctx.app.db, user_id=who.user_id)
    return SessionOut(
        user_id=who.user_id,
        username=who.username,
        via="session" if who.via == "session" else "token",
        organisation_id=who.organisation_id,
        role=None if who.role is None else who.role.value,
        token_role=None if who.token_role is None else who.token_role.value,
        permissions=sorted(p.value for p in who.permissions()),
        locale=who.locale,
        memberships=[
            MembershipOut(
                organisation_id=m.organisation_id, organisation=m.organisation, role=m.role.value
            )
            for m in identity.memberships
        ],
    )


def _set_cookies(response: Response, started: credentials.NewSession, config: ApiConfig) -> None:
    """The session cookie (HttpOnly) and the CSRF cookie the console's script reads."""
    max_age = int(config.session_policy.max_age.total_seconds())
    for name, value, http_only in (
        (SESSION_COOKIE, started.token, True),
        (CSRF_COOKIE, started.csrf_token, False),
    ):
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            httponly=http_only,
            secure=config.cookie_secure,
            samesite="lax",
            path="/",
        )


@router.post(
    "/session",
    response_model=SessionOut,
    responses={429: {"model": ErrorBody, "description": "Too many failed logins"}},
)
def log_in(
    body: LoginIn,
    request: Request,
    response: Response,
    ctx: Annotated[ApiContext, Depends(context)],
) -> SessionOut:
    """Log in with a password; sets the session cookie and answers the CSRF token."""
    db, config = ctx.app.db, ctx.config
    address = client_address(request)
    who = login.authenticate(
        db,
        username=body.username,
        password=body.password,
        address=address,
        hasher=config.hasher,
        policy=config.login_policy,
    )
    started = credentials.start_session(
        db,
        who=who,
        organisation_id=body.organisation_id,
        address=address,
        policy=config.session_policy,
    )
    _set_cookies(response, started, config)
    principal = credentials.session_principal(db, token=started.token, policy=config.session_policy)
    assert principal is not None
    answer = describe(ctx, principal)
    return answer.model_copy(
        update={"csrf_token": started.csrf_token, "expires_at": started.expires_at}
    )


@router.get("/session", response_model=SessionOut)
def who_am_i(who: Authenticated, ctx: Annotated[ApiContext, Depends(context)]) -> SessionOut:
    """The caller: user, organisation, role and permissions (for a session or a token)."""
    return describe(ctx, who)


@router.delete("/session", status_code=204, response_class=Response)
def log_out(who: Authenticated, ctx: Annotated[ApiContext, Depends(context)]) -> Response:
    """End the console session (an API token is revoked with DELETE /tokens/{token_id})."""
    if who.via != "session":
        raise BadRequestError("an API token is revoked with DELETE /api/v1/tokens/{token_id}")
    credentials.end_session(ctx.app.db, session_id=who.credential_id)
    response = Response(status_code=204)
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/")
    return response


@router.put("/session/password", status_code=204, response_class=Response)
def change_password(
    body: PasswordChangeIn, who: Authenticated, ctx: Annotated[ApiContext, Depends(context)]
) -> Response:
    """Change your own password; your other console sessions end."""
    service.change_own_password(
        ctx.app.db,
        user_id=who.user_id,
        current=body.current_password,
        new=body.new_password,
        hasher=ctx.config.hasher,
        keep_session_id=who.credential_id if who.via == "session" else None,
    )
    return Response(status_code=204)


@router.put("/session/locale", response_model=SessionOut)
def set_locale(
    body: LocaleIn, who: Authenticated, ctx: Annotated[ApiContext, Depends(context)]
) -> SessionOut:
    """Set your own language (zh-CN or en): the console shows every page in it after login, on
    any browser. Answers the session with the new ``locale``."""
    service.set_locale(ctx.app.db, user_id=who.user_id, locale=body.locale)
    return describe(ctx, replace(who, locale=body.locale))
