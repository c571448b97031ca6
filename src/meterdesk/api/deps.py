"""Authentication, CSRF, roles and organisation scoping, as FastAPI dependencies.

Two ways in: ``Authorization: Bearer mdk_…`` (an API token, for integrations) or the console's
session cookie. A cookie-authenticated request that changes anything (any method but GET, HEAD,
OPTIONS) must repeat the session's CSRF token in the ``X-CSRF-Token`` header; the token is given
at login and set in the readable ``meterdesk_csrf`` cookie (double submit, checked against the
digest stored with the session). Every route names the one permission it needs with
:func:`need`; the :class:`Caller` it yields carries the organisation every query is scoped to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from meterdesk.access import credentials
from meterdesk.access.credentials import Principal
from meterdesk.access.model import AuthenticationError, Permission, PermissionDeniedError
from meterdesk.api.context import CSRF_HEADER, SESSION_COOKIE, ApiContext
from meterdesk.api.errors import BadRequestError
from meterdesk.db.database import Database

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

bearer_scheme = HTTPBearer(auto_error=False, description="API token: `Bearer mdk_…`")
cookie_scheme = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    description="Console session (from POST /api/v1/session); changes need X-CSRF-Token",
)


def context(request: Request) -> ApiContext:
    found = request.app.state.meterdesk
    assert isinstance(found, ApiContext)
    return found


def client_address(request: Request) -> str:
    """The caller's address as the server saw it (uvicorn applies X-Forwarded-For only from
    trusted proxies, by default 127.0.0.1)."""
    return request.client.host if request.client is not None else "unknown"


def principal(
    request: Request,
    ctx: Annotated[ApiContext, Depends(context)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    session_token: Annotated[str | None, Depends(cookie_scheme)],
) -> Principal:
    db = ctx.app.db
    if bearer is not None:
        found = credentials.token_principal(db, token=bearer.credentials)
        if found is None:
            raise AuthenticationError("the API token is invalid, expired or revoked")
        return found
    if session_token:
        found = credentials.session_principal(
            db, token=session_token, policy=ctx.config.session_policy
        )
        if found is None:
            raise AuthenticationError("the session has ended; log in again")
        if request.method not in SAFE_METHODS and not found.csrf_matches(
            request.headers.get(CSRF_HEADER)
        ):
            raise PermissionDeniedError(f"missing or wrong {CSRF_HEADER} header")
        return found
    raise AuthenticationError("log in, or send Authorization: Bearer <token>")


@dataclass(frozen=True)
class Caller:
    """An authenticated request allowed to do what its route needs, in one organisation."""

    principal: Principal
    organisation_id: int
    address: str
    ctx: ApiContext

    @property
    def db(self) -> Database:
        return self.ctx.app.db

    @property
    def actor(self) -> str:
        return self.principal.actor


def need(permission: Permission) -> Callable[..., Caller]:
    """The dependency for a route that needs ``permission`` in the caller's organisation."""

    def dependency(
        request: Request,
        who: Annotated[Principal, Depends(principal)],
        ctx: Annotated[ApiContext, Depends(context)],
    ) -> Caller:
        organisation_id = who.organisation(permission)
        return Caller(who, organisation_id, client_address(request), ctx)

    dependency.permission = permission  # type: ignore[attr-defined]  # read by the route tests
    return dependency


Reader = Annotated[Caller, Depends(need(Permission.READ))]
AuditReader = Annotated[Caller, Depends(need(Permission.AUDIT_READ))]
PlacesWriter = Annotated[Caller, Depends(need(Permission.PLACES_WRITE))]
MetersWriter = Annotated[Caller, Depends(need(Permission.METERS_WRITE))]
TariffsWriter = Annotated[Caller, Depends(need(Permission.TARIFFS_WRITE))]
AccountsWriter = Annotated[Caller, Depends(need(Permission.ACCOUNTS_WRITE))]
Cashier = Annotated[Caller, Depends(need(Permission.MONEY_WRITE))]
Reverser = Annotated[Caller, Depends(need(Permission.MONEY_REVERSE))]
ReadingsWriter = Annotated[Caller, Depends(need(Permission.READINGS_WRITE))]
QuarantineWriter = Annotated[Caller, Depends(need(Permission.QUARANTINE_WRITE))]
UsersManager = Annotated[Caller, Depends(need(Permission.USERS_MANAGE))]
NotificationsWriter = Annotated[Caller, Depends(need(Permission.NOTIFICATIONS_WRITE))]
SettingsWriter = Annotated[Caller, Depends(need(Permission.SETTINGS_WRITE))]
Authenticated = Annotated[Principal, Depends(principal)]


def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Required: the same key repeats the first answer and never moves money twice",
            max_length=150,
        ),
    ] = None,
) -> str:
    if key is None or not key.strip():
        raise BadRequestError("the Idempotency-Key header is required for this call")
    return key.strip()


def optional_idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Optional: the same key repeats the first answer",
            max_length=150,
        ),
    ] = None,
) -> str | None:
    return key.strip() if key and key.strip() else None


IdempotencyKey = Annotated[str, Depends(idempotency_key)]
OptionalIdempotencyKey = Annotated[str | None, Depends(optional_idempotency_key)]
