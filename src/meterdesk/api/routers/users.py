"""Organisations, members and their roles, API tokens."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select

from meterdesk.access import credentials, service
from meterdesk.access.model import PermissionDeniedError
from meterdesk.api.context import ApiContext
from meterdesk.api.deps import Authenticated, UsersManager, context
from meterdesk.api.errors import ERROR_RESPONSES
from meterdesk.api.pagination import Cursor, Limit, Page, after_id, encode
from meterdesk.api.schemas.access import (
    MemberIn,
    MemberOut,
    NewTokenOut,
    OrganisationIn,
    OrganisationOut,
    PasswordIn,
    RoleIn,
    TokenIn,
    TokenOut,
)
from meterdesk.api.schemas.common import Id
from meterdesk.shared.errors import NotFoundError
from meterdesk.sites import service as sites
from meterdesk.sites.tables import organisations

router = APIRouter(responses=ERROR_RESPONSES)
Context = Annotated[ApiContext, Depends(context)]


def _slice(
    rows: list[dict[str, Any]], cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Keyset paging of a short list already in id order."""
    after = after_id(cursor)
    rest = [row for row in rows if after is None or int(row["id"]) > after]
    if len(rest) <= limit:
        return rest, None
    return rest[:limit], encode(int(rest[limit - 1]["id"]))


# -- organisations -------------------------------------------------------------------------------


def _organisation(ctx: ApiContext, organisation_id: Id, role: str | None) -> OrganisationOut:
    with ctx.app.db.read() as conn:
        row = (
            conn.execute(select(organisations).where(organisations.c.id == organisation_id))
            .mappings()
            .one()
        )
    return OrganisationOut(id=row["id"], name=row["name"], timezone=row["timezone"], role=role)  # type: ignore[arg-type]


@router.get("/organisations", response_model=list[OrganisationOut], tags=["organisations"])
def list_organisations(who: Authenticated, ctx: Context) -> list[OrganisationOut]:
    """The organisations you belong to, with your role in each."""
    identity = service.identity(ctx.app.db, user_id=who.user_id)
    return [_organisation(ctx, m.organisation_id, m.role.value) for m in identity.memberships]


@router.post(
    "/organisations", response_model=OrganisationOut, status_code=201, tags=["organisations"]
)
def create_organisation(body: OrganisationIn, who: Authenticated, ctx: Context) -> OrganisationOut:
    """Create an organisation (platform admins only); you become its admin."""
    if not who.is_platform_admin:
        raise PermissionDeniedError("only a platform admin creates organisations")
    db = ctx.app.db
    organisation_id = sites.create_organisation(db, name=body.name, timezone=body.timezone)
    service.add_member(
        db, organisation_id=organisation_id, user_id=who.user_id, role="admin", actor=who.actor
    )
    return _organisation(ctx, organisation_id, "admin")


@router.get(
    "/organisations/{organisation_id}", response_model=OrganisationOut, tags=["organisations"]
)
def get_organisation(organisation_id: Id, who: Authenticated, ctx: Context) -> OrganisationOut:
    """One of your organisations (any other answers 404)."""
    identity = service.identity(ctx.app.db, user_id=who.user_id)
    for membership in identity.memberships:
        if membership.organisation_id == organisation_id:
            return _organisation(ctx, organisation_id, membership.role.value)
    raise NotFoundError(f"organisation {organisation_id} not found")


# -- members -------------------------------------------------------------------------------------


def _member(caller: Any, user_id: Id) -> MemberOut:
    for row in service.list_members(caller.db, organisation_id=caller.organisation_id):
        if row["id"] == user_id:
            return MemberOut.model_validate(row)
    raise NotFoundError(f"user {user_id} not found")


@router.get("/users", response_model=Page[MemberOut], tags=["users"])
def list_users(caller: UsersManager, limit: Limit = 100, cursor: Cursor = None) -> Page[MemberOut]:
    """Members of your organisation with their roles."""
    rows, next_cursor = _slice(
        service.list_members(caller.db, organisation_id=caller.organisation_id), cursor, limit
    )
    return Page[MemberOut](
        items=[MemberOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.post("/users", response_model=MemberOut, status_code=201, tags=["users"])
def create_user(body: MemberIn, caller: UsersManager) -> MemberOut:
    """Create a user who is a member of your organisation with a role."""
    user = service.NewUser(
        username=body.username,
        display_name=body.display_name,
        password=body.password,
        locale=body.locale,
    )
    user_id = service.create_member(
        caller.db,
        organisation_id=caller.organisation_id,
        user=user,
        role=body.role,
        actor=caller.actor,
        hasher=caller.ctx.config.hasher,
    )
    return _member(caller, user_id)


@router.get("/users/{user_id}", response_model=MemberOut, tags=["users"])
def get_user(user_id: Id, caller: UsersManager) -> MemberOut:
    return _member(caller, user_id)


@router.put("/users/{user_id}/role", response_model=MemberOut, tags=["users"])
def set_role(user_id: Id, body: RoleIn, caller: UsersManager) -> MemberOut:
    """Change a member's role (an organisation always keeps one admin)."""
    service.set_role(
        caller.db,
        organisation_id=caller.organisation_id,
        user_id=user_id,
        role=body.role,
        actor=caller.actor,
    )
    return _member(caller, user_id)


@router.put("/users/{user_id}/password", tags=["users"], status_code=204, response_class=Response)
def reset_password(user_id: Id, body: PasswordIn, caller: UsersManager) -> Response:
    """Set a member's password (only for users of no other organisation); their sessions end."""
    service.reset_password(
        caller.db,
        organisation_id=caller.organisation_id,
        user_id=user_id,
        password=body.password,
        actor=caller.actor,
        hasher=caller.ctx.config.hasher,
    )
    return Response(status_code=204)


@router.delete("/users/{user_id}", tags=["users"], status_code=204, response_class=Response)
def remove_user(user_id: Id, caller: UsersManager) -> Response:
    """End a membership; the user's tokens and sessions here end with it."""
    service.remove_member(
        caller.db, organisation_id=caller.organisation_id, user_id=user_id, actor=caller.actor
    )
    return Response(status_code=204)


# -- API tokens ----------------------------------------------------------------------------------


@router.get("/tokens", response_model=Page[TokenOut], tags=["tokens"])
def list_tokens(caller: UsersManager, limit: Limit = 100, cursor: Cursor = None) -> Page[TokenOut]:
    """API tokens of your organisation (never the secrets)."""
    rows, next_cursor = _slice(
        credentials.list_tokens(caller.db, organisation_id=caller.organisation_id), cursor, limit
    )
    return Page[TokenOut](items=[TokenOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post("/tokens", response_model=NewTokenOut, status_code=201, tags=["tokens"])
def create_token(body: TokenIn, caller: UsersManager) -> NewTokenOut:
    """Issue an API token for a member (default: you); the secret is shown only now."""
    made = credentials.create_token(
        caller.db,
        organisation_id=caller.organisation_id,
        user_id=body.user_id if body.user_id is not None else caller.principal.user_id,
        name=body.name,
        actor=caller.actor,
        role=body.role,
        expires_at=body.expires_at,
    )
    return NewTokenOut(id=made.token_id, token=made.token, prefix=made.prefix)


@router.delete("/tokens/{token_id}", tags=["tokens"], status_code=204, response_class=Response)
def revoke_token(token_id: Id, caller: UsersManager) -> Response:
    credentials.revoke_token(
        caller.db, organisation_id=caller.organisation_id, token_id=token_id, actor=caller.actor
    )
    return Response(status_code=204)
