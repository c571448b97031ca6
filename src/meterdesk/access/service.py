"""Access use cases: users, memberships and roles, passwords, and password login with a lockout.

Sessions and API tokens (the credentials a login or an admin hands out) are in
:mod:`meterdesk.access.credentials`. Changes to an organisation's members are audited in that
organisation; creating a bare user is not (a user belongs to no organisation until added).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from meterdesk.access.model import (
    PermissionDeniedError,
    Role,
    check_password,
    check_username,
    parse_role,
)
from meterdesk.access.tables import api_tokens, memberships, sessions, users
from meterdesk.audit import service as audit
from meterdesk.db.database import Database
from meterdesk.shared.errors import ConflictError, NotFoundError, ValidationError
from meterdesk.sites.tables import organisations

# argon2id with the library's defaults (RFC 9106 "low memory" profile: t=3, m=64 MiB, p=4).
DEFAULT_HASHER = PasswordHasher()
LOCALES = ("zh-CN", "en")


@dataclass(frozen=True)
class NewUser:
    username: str
    display_name: str = ""
    password: str | None = None  # None: no password login (an integration user with tokens)
    locale: str = "zh-CN"
    is_platform_admin: bool = False


@dataclass(frozen=True)
class Membership:
    organisation_id: int
    organisation: str
    role: Role


@dataclass(frozen=True)
class Identity:
    """A user who proved who they are (by password)."""

    user_id: int
    username: str
    is_platform_admin: bool
    memberships: tuple[Membership, ...]


def _password_hash(password: str | None, hasher: PasswordHasher) -> str | None:
    return None if password is None else hasher.hash(check_password(password))


def create_user_in(conn: Connection, *, user: NewUser, at: datetime, hasher: PasswordHasher) -> int:
    if user.locale not in LOCALES:
        raise ValidationError(f"locale: {user.locale!r} is not one of {', '.join(LOCALES)}")
    username = check_username(user.username)
    values = {
        "username": username,
        "display_name": user.display_name.strip() or username,
        "password_hash": _password_hash(user.password, hasher),
        "locale": user.locale,
        "is_active": True,
        "is_platform_admin": user.is_platform_admin,
        "created_at": at,
        "password_changed_at": at if user.password is not None else None,
    }
    try:
        result = conn.execute(insert(users).values(**values))
    except IntegrityError:
        raise ConflictError(f"user {username!r} already exists") from None
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def create_user(db: Database, *, user: NewUser, hasher: PasswordHasher = DEFAULT_HASHER) -> int:
    with db.transaction() as conn:
        return create_user_in(conn, user=user, at=db.clock(), hasher=hasher)


def create_member(
    db: Database,
    *,
    organisation_id: int,
    user: NewUser,
    role: str,
    actor: str,
    hasher: PasswordHasher = DEFAULT_HASHER,
) -> int:
    """A new user who is at once a member of the organisation with ``role``."""
    parsed = parse_role(role)
    with db.transaction() as conn:
        user_id = create_user_in(conn, user=user, at=db.clock(), hasher=hasher)
        _add_membership(conn, organisation_id, user_id, parsed, actor, db.clock())
        return user_id


def add_member(db: Database, *, organisation_id: int, user_id: int, role: str, actor: str) -> None:
    parsed = parse_role(role)
    with db.transaction() as conn:
        if conn.execute(select(users.c.id).where(users.c.id == user_id)).first() is None:
            raise NotFoundError(f"user {user_id} not found")
        _add_membership(conn, organisation_id, user_id, parsed, actor, db.clock())


def _add_membership(
    conn: Connection, organisation_id: int, user_id: int, role: Role, actor: str, at: datetime
) -> None:
    if (
        conn.execute(
            select(organisations.c.id).where(organisations.c.id == organisation_id)
        ).first()
        is None
    ):
        raise NotFoundError(f"organisation {organisation_id} not found")
    try:
        conn.execute(
            insert(memberships).values(
                user_id=user_id, organisation_id=organisation_id, role=role.value, created_at=at
            )
        )
    except IntegrityError:
        raise ConflictError(f"user {user_id} is already a member") from None
    audit.record(
        conn,
        organisation_id=organisation_id,
        actor=actor,
        action="user.add",
        subject=f"user:{user_id}",
        at=at,
        detail={"role": role.value},
    )


def _member_role(conn: Connection, organisation_id: int, user_id: int) -> Role:
    found = conn.execute(
        select(memberships.c.role).where(
            memberships.c.organisation_id == organisation_id, memberships.c.user_id == user_id
        )
    ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"user {user_id} not found")
    return Role(found)


def _keep_an_admin(conn: Connection, organisation_id: int, user_id: int) -> None:
    admins = conn.execute(
        select(func.count()).where(
            memberships.c.organisation_id == organisation_id,
            memberships.c.role == Role.ADMIN.value,
            memberships.c.user_id != user_id,
        )
    ).scalar_one()
    if not admins:
        raise ConflictError("an organisation keeps at least one admin")


def set_role(db: Database, *, organisation_id: int, user_id: int, role: str, actor: str) -> None:
    parsed = parse_role(role)
    with db.transaction() as conn:
        current = _member_role(conn, organisation_id, user_id)
        if current is Role.ADMIN and parsed is not Role.ADMIN:
            _keep_an_admin(conn, organisation_id, user_id)
        conn.execute(
            update(memberships)
            .where(
                memberships.c.organisation_id == organisation_id, memberships.c.user_id == user_id
            )
            .values(role=parsed.value)
        )
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="user.set_role",
            subject=f"user:{user_id}",
            at=db.clock(),
            detail={"from": current.value, "to": parsed.value},
        )


def remove_member(db: Database, *, organisation_id: int, user_id: int, actor: str) -> None:
    """End a membership; the user's tokens and sessions in this organisation end with it."""
    at = db.clock()
    with db.transaction() as conn:
        if _member_role(conn, organisation_id, user_id) is Role.ADMIN:
            _keep_an_admin(conn, organisation_id, user_id)
        conn.execute(
            memberships.delete().where(
                memberships.c.organisation_id == organisation_id, memberships.c.user_id == user_id
            )
        )
        for table in (api_tokens, sessions):
            conn.execute(
                update(table)
                .where(
                    table.c.organisation_id == organisation_id,
                    table.c.user_id == user_id,
                    table.c.revoked_at.is_(None),
                )
                .values(revoked_at=at)
            )
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="user.remove",
            subject=f"user:{user_id}",
            at=at,
        )


def set_password(
    db: Database,
    *,
    user_id: int,
    password: str,
    hasher: PasswordHasher = DEFAULT_HASHER,
    keep_session_id: int | None = None,
) -> None:
    """Set a new password; every other console session of the user ends."""
    hashed = _password_hash(password, hasher)
    at = db.clock()
    with db.transaction() as conn:
        done = conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(password_hash=hashed, password_changed_at=at)
        )
        if done.rowcount != 1:
            raise NotFoundError(f"user {user_id} not found")
        conn.execute(
            update(sessions)
            .where(
                sessions.c.user_id == user_id,
                sessions.c.revoked_at.is_(None),
                sessions.c.id != (keep_session_id or -1),
            )
            .values(revoked_at=at)
        )


def reset_password(
    db: Database,
    *,
    organisation_id: int,
    user_id: int,
    password: str,
    actor: str,
    hasher: PasswordHasher = DEFAULT_HASHER,
) -> None:
    """An organisation admin sets a member's password — only for a user who belongs to no other
    organisation, so one company's admin can never take over an account another company uses."""
    with db.read() as conn:
        _member_role(conn, organisation_id, user_id)
        others = conn.execute(
            select(func.count()).where(
                memberships.c.user_id == user_id,
                memberships.c.organisation_id != organisation_id,
            )
        ).scalar_one()
        platform = conn.execute(
            select(users.c.is_platform_admin).where(users.c.id == user_id)
        ).scalar_one()
    if others or platform:
        raise PermissionDeniedError(
            "this user also belongs elsewhere; only they (or a platform admin) can change the password"
        )
    set_password(db, user_id=user_id, password=password, hasher=hasher)
    with db.transaction() as conn:
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="user.reset_password",
            subject=f"user:{user_id}",
            at=db.clock(),
        )


def change_own_password(
    db: Database,
    *,
    user_id: int,
    current: str,
    new: str,
    hasher: PasswordHasher = DEFAULT_HASHER,
    keep_session_id: int | None = None,
) -> None:
    with db.read() as conn:
        stored = conn.execute(
            select(users.c.password_hash).where(users.c.id == user_id)
        ).scalar_one_or_none()
    if stored is None or not verify_password(hasher, stored, current):
        raise ValidationError("current_password: does not match")
    set_password(db, user_id=user_id, password=new, hasher=hasher, keep_session_id=keep_session_id)


def set_locale(db: Database, *, user_id: int, locale: str) -> None:
    """The user's own language (zh-CN or en): the console shows every page in it after login,
    in any browser. Not audited: it moves neither money nor supply."""
    if locale not in LOCALES:
        raise ValidationError(f"locale: {locale!r} is not one of {', '.join(LOCALES)}")
    with db.transaction() as conn:
        found = conn.execute(update(users).where(users.c.id == user_id).values(locale=locale))
        if found.rowcount != 1:
            raise NotFoundError(f"user {user_id} not found")


def verify_password(hasher: PasswordHasher, stored: str, password: str) -> bool:
    try:
        return hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def identity(db: Database, *, user_id: int) -> Identity:
    with db.read() as conn:
        user = conn.execute(select(users).where(users.c.id == user_id)).mappings().one_or_none()
        if user is None:
            raise NotFoundError(f"user {user_id} not found")
        rows = conn.execute(
            select(memberships.c.organisation_id, organisations.c.name, memberships.c.role)
            .join(organisations, organisations.c.id == memberships.c.organisation_id)
            .where(memberships.c.user_id == user_id)
            .order_by(memberships.c.organisation_id)
        ).all()
    return Identity(
        user_id=user_id,
        username=str(user["username"]),
        is_platform_admin=bool(user["is_platform_admin"]),
        memberships=tuple(Membership(int(o), str(n), Role(r)) for o, n, r in rows),
    )


def user_id_by_username(db: Database, *, username: str) -> int:
    with db.read() as conn:
        found = conn.execute(
            select(users.c.id).where(users.c.username == username)
        ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"user {username!r} not found")
    return int(found)


def list_members(db: Database, *, organisation_id: int) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(
            select(
                users.c.id,
                users.c.username,
                users.c.display_name,
                users.c.locale,
                users.c.is_active,
                memberships.c.role,
                memberships.c.created_at.label("member_since"),
            )
            .join(memberships, memberships.c.user_id == users.c.id)
            .where(memberships.c.organisation_id == organisation_id)
            .order_by(users.c.id)
        ).mappings()
        return [dict(row) for row in rows]
