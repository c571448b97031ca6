"""``meterdesk user`` — users, their role per organisation, and API tokens.

The first admin of a new installation is made here (``meterdesk user create alice --org "Sunrise
Property" --role admin``); after that, admins manage members through the API or the console.
Passwords are asked for on the terminal (or read from ``METERDESK_PASSWORD``), never taken as a
command-line argument that would land in the shell history.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from meterdesk.access import credentials, service
from meterdesk.cli.common import (
    ActorOption,
    JsonOption,
    OrgOption,
    app,
    emit,
    handled,
    organisation_id,
    who,
)

user_cli = typer.Typer(
    help="Users: create, roles per organisation, passwords, API tokens.", no_args_is_help=True
)
token_cli = typer.Typer(help="API tokens for integrations.", no_args_is_help=True)
user_cli.add_typer(token_cli, name="token")

RoleOption = Annotated[str, typer.Option(help="admin | operator | cashier | readonly")]
PasswordOption = Annotated[
    str | None,
    typer.Option(
        envvar="METERDESK_PASSWORD", help="default: asked on the terminal", show_default=False
    ),
]


def _password(given: str | None) -> str:
    if given is not None:
        return given
    return str(typer.prompt("password", hide_input=True, confirmation_prompt=True))


@user_cli.command("create")
def create(
    username: str,
    org: OrgOption,
    role: RoleOption,
    password: PasswordOption = None,
    no_password: Annotated[bool, typer.Option(help="token-only user (an integration)")] = False,
    display_name: Annotated[str, typer.Option()] = "",
    locale: Annotated[str, typer.Option(help="zh-CN | en")] = "zh-CN",
    platform_admin: Annotated[bool, typer.Option(help="may create organisations")] = False,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Create a user who is a member of ORG with ROLE."""
    with handled():
        user = service.NewUser(
            username=username,
            display_name=display_name,
            password=None if no_password else _password(password),
            locale=locale,
            is_platform_admin=platform_admin,
        )
        user_id = service.create_member(
            app().db, organisation_id=organisation_id(org), user=user, role=role, actor=who(actor)
        )
        emit(
            {"id": user_id, "username": username, "role": role},
            as_json,
            lambda v: f"user {v['username']} created (id {v['id']}, {v['role']} of {org})",
        )


@user_cli.command("add")
def add(
    username: str,
    org: OrgOption,
    role: RoleOption,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Make an existing user a member of another organisation."""
    with handled():
        user_id = service.user_id_by_username(app().db, username=username)
        service.add_member(
            app().db,
            organisation_id=organisation_id(org),
            user_id=user_id,
            role=role,
            actor=who(actor),
        )
        emit({"id": user_id, "role": role}, as_json, lambda v: f"{username} is now {role} of {org}")


@user_cli.command("set-role")
def set_role(
    username: str,
    org: OrgOption,
    role: RoleOption,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Change a member's role in ORG."""
    with handled():
        user_id = service.user_id_by_username(app().db, username=username)
        service.set_role(
            app().db,
            organisation_id=organisation_id(org),
            user_id=user_id,
            role=role,
            actor=who(actor),
        )
        emit({"id": user_id, "role": role}, as_json, lambda v: f"{username} is now {role} of {org}")


@user_cli.command("password")
def password(username: str, password: PasswordOption = None) -> None:
    """Set a user's password (their console sessions end)."""
    with handled():
        user_id = service.user_id_by_username(app().db, username=username)
        service.set_password(app().db, user_id=user_id, password=_password(password))
        typer.echo(f"password of {username} changed")


@token_cli.command("create")
def token_create(
    username: str,
    org: OrgOption,
    name: Annotated[str, typer.Option(help="what the token is for")],
    role: Annotated[str | None, typer.Option(help="narrow the token to this role")] = None,
    expires_days: Annotated[int | None, typer.Option(min=1, help="default: never")] = None,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Issue an API token for USERNAME in ORG; it is printed once, only its digest is kept."""
    with handled():
        db = app().db
        made = credentials.create_token(
            db,
            organisation_id=organisation_id(org),
            user_id=service.user_id_by_username(db, username=username),
            name=name,
            actor=who(actor),
            role=role,
            expires_at=None if expires_days is None else db.clock() + timedelta(days=expires_days),
        )
        emit(
            {"id": made.token_id, "token": made.token},
            as_json,
            lambda v: f"token {v['id']} (shown once, keep it safe):\n{v['token']}",
        )


@token_cli.command("revoke")
def token_revoke(token_id: int, org: OrgOption, actor: ActorOption = "") -> None:
    """Revoke an API token of ORG at once."""
    with handled():
        credentials.revoke_token(
            app().db, organisation_id=organisation_id(org), token_id=token_id, actor=who(actor)
        )
        typer.echo(f"token {token_id} revoked")
