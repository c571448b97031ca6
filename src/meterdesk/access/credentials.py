"""Console sessions and API tokens, and the :class:`Principal` a request acts as.

A session is created by a password login for one organisation; its cookie value and its CSRF
token are random 256-bit secrets stored only as SHA-256 digests. Sessions expire after
``idle`` without use and at the latest ``max_age`` after login. An API token (``mdk_…``) acts in
the organisation it was issued for, as its user, optionally narrowed to a role. Both stop
working at once when revoked, when the user is deactivated, or when the membership ends.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from meterdesk.access.model import (
    Permission,
    PermissionDeniedError,
    Role,
    parse_role,
    permissions,
    require,
)
from meterdesk.access.service import Identity
from meterdesk.access.tables import api_tokens, memberships, sessions, users
from meterdesk.audit import service as audit
from meterdesk.db.database import Database
from meterdesk.shared.errors import NotFoundError, ValidationError

TOKEN_PREFIX = "mdk_"  # noqa: S105 - a marker, not a secret
TOUCH_EVERY = timedelta(minutes=1)  # write last-use times at most this often


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request acts as, in which organisation, with which role."""

    user_id: int
    username: str
    organisation_id: int | None
    role: Role | None
    token_role: Role | None
    via: str  # "session" | "token"
    credential_id: int
    is_platform_admin: bool
    locale: str
    csrf_hash: str | None = None

    @property
    def actor(self) -> str:
        """The name written to the audit log."""
        return (
            self.username
            if self.via == "session"
            else f"{self.username}/token:{self.credential_id}"
        )

    def permissions(self) -> frozenset[Permission]:
        return frozenset() if self.role is None else permissions(self.role, self.token_role)

    def organisation(self, permission: Permission) -> int:
        """The organisation to act in, provided the role allows ``permission`` there."""
        if self.organisation_id is None or self.role is None:
            raise PermissionDeniedError("this login has no organisation; log in to one")
        require(self.role, self.token_role, permission)
        return self.organisation_id

    def csrf_matches(self, token: str | None) -> bool:
        if self.csrf_hash is None or not token:
            return False
        return hmac.compare_digest(digest(token), self.csrf_hash)


# -- sessions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta = timedelta(hours=12)
    max_age: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class NewSession:
    session_id: int
    token: str
    csrf_token: str
    organisation_id: int | None
    expires_at: datetime


def start_session(
    db: Database,
    *,
    who: Identity,
    organisation_id: int | None,
    address: str,
    policy: SessionPolicy = SessionPolicy(),
) -> NewSession:
    """A console session for a user who just logged in, in one of their organisations (the
    first one when none is named)."""
    allowed = [m.organisation_id for m in who.memberships]
    if organisation_id is None:
        organisation_id = allowed[0] if allowed else None
    elif organisation_id not in allowed:
        raise NotFoundError(f"organisation {organisation_id} not found")
    now = db.clock()
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    expires = now + min(policy.idle, policy.max_age)
    with db.transaction() as conn:
        result = conn.execute(
            insert(sessions).values(
                token_hash=digest(token),
                csrf_hash=digest(csrf),
                user_id=who.user_id,
                organisation_id=organisation_id,
                address=address[:64],
                created_at=now,
                last_seen_at=now,
                expires_at=expires,
                revoked_at=None,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
    return NewSession(int(key[0]), token, csrf, organisation_id, expires)


def _principal(row: Any, via: str, credential_id: int, csrf_hash: str | None) -> Principal:
    return Principal(
        user_id=int(row["user_id"]),
        username=str(row["username"]),
        organisation_id=None if row["organisation_id"] is None else int(row["organisation_id"]),
        role=None if row["member_role"] is None else Role(row["member_role"]),
        token_role=None if row.get("token_role") is None else Role(row["token_role"]),
        via=via,
        credential_id=credential_id,
        is_platform_admin=bool(row["is_platform_admin"]),
        locale=str(row["locale"]),
        csrf_hash=csrf_hash,
    )


_USER_COLUMNS = (users.c.username, users.c.is_platform_admin, users.c.locale)


def session_principal(
    db: Database,
    *,
    token: str,
    policy: SessionPolicy = SessionPolicy(),
) -> Principal | None:
    now = db.clock()
    with db.read() as conn:
        row = (
            conn.execute(
                select(sessions, *_USER_COLUMNS, memberships.c.role.label("member_role"))
                .join(users, users.c.id == sessions.c.user_id)
                .outerjoin(
                    memberships,
                    and_(
                        memberships.c.user_id == sessions.c.user_id,
                        memberships.c.organisation_id == sessions.c.organisation_id,
                    ),
                )
                .where(
                    sessions.c.token_hash == digest(token),
                    sessions.c.revoked_at.is_(None),
                    sessions.c.expires_at > now,
                    users.c.is_active.is_(True),
                )
            )
            .mappings()
            .first()
        )
    if row is None or (row["organisation_id"] is not None and row["member_role"] is None):
        return None
    if now - row["last_seen_at"] >= TOUCH_EVERY:
        expires = min(now + policy.idle, row["created_at"] + policy.max_age)
        with db.transaction() as conn:
            conn.execute(
                update(sessions)
                .where(sessions.c.id == row["id"])
                .values(last_seen_at=now, expires_at=expires)
            )
    return _principal(row, "session", int(row["id"]), str(row["csrf_hash"]))


def end_session(db: Database, *, session_id: int) -> None:
    with db.transaction() as conn:
        conn.execute(
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.revoked_at.is_(None))
            .values(revoked_at=db.clock())
        )


# -- API tokens --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewToken:
    token_id: int
    token: str  # shown once; only its digest is stored
    prefix: str


def create_token(
    db: Database,
    *,
    organisation_id: int,
    user_id: int,
    name: str,
    actor: str,
    role: str | None = None,
    expires_at: datetime | None = None,
) -> NewToken:
    narrowed = None if role is None else parse_role(role)
    now = db.clock()
    _check_token_request(name, expires_at, now)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.transaction() as conn:
        _require_member(conn, organisation_id, user_id)
        result = conn.execute(
            insert(api_tokens).values(
                organisation_id=organisation_id,
                user_id=user_id,
                name=name.strip(),
                token_hash=digest(token),
                prefix=token[:12],
                role=None if narrowed is None else narrowed.value,
                created_at=now,
                created_by=actor,
                expires_at=expires_at,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="token.create",
            subject=f"token:{key[0]}",
            at=now,
            detail={"user": user_id, "name": name.strip(), "role": role},
        )
    return NewToken(int(key[0]), token, token[:12])


def _check_token_request(name: str, expires_at: datetime | None, now: datetime) -> None:
    if not name.strip() or len(name.strip()) > 100:
        raise ValidationError("name: 1 to 100 characters")
    if expires_at is not None and expires_at <= now:
        raise ValidationError("expires_at: must be in the future")


def _require_member(conn: Connection, organisation_id: int, user_id: int) -> None:
    found = conn.execute(
        select(memberships.c.id).where(
            memberships.c.organisation_id == organisation_id, memberships.c.user_id == user_id
        )
    ).first()
    if found is None:
        raise NotFoundError(f"user {user_id} not found")


def revoke_token(db: Database, *, organisation_id: int, token_id: int, actor: str) -> None:
    """Revoke a token of the organisation (revoking it again changes nothing)."""
    now = db.clock()
    with db.transaction() as conn:
        revoked = conn.execute(
            select(api_tokens.c.revoked_at).where(
                api_tokens.c.id == token_id, api_tokens.c.organisation_id == organisation_id
            )
        ).one_or_none()
        if revoked is None:
            raise NotFoundError(f"token {token_id} not found")
        if revoked.revoked_at is not None:
            return
        conn.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(revoked_at=now))
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="token.revoke",
            subject=f"token:{token_id}",
            at=now,
        )


def token_principal(db: Database, *, token: str) -> Principal | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    now = db.clock()
    with db.read() as conn:
        row = (
            conn.execute(
                select(
                    api_tokens,
                    *_USER_COLUMNS,
                    memberships.c.role.label("member_role"),
                    api_tokens.c.role.label("token_role"),
                )
                .join(users, users.c.id == api_tokens.c.user_id)
                .join(
                    memberships,
                    and_(
                        memberships.c.user_id == api_tokens.c.user_id,
                        memberships.c.organisation_id == api_tokens.c.organisation_id,
                    ),
                )
                .where(
                    api_tokens.c.token_hash == digest(token),
                    api_tokens.c.revoked_at.is_(None),
                    users.c.is_active.is_(True),
                )
            )
            .mappings()
            .first()
        )
    if row is None or (row["expires_at"] is not None and row["expires_at"] <= now):
        return None
    if row["last_used_at"] is None or now - row["last_used_at"] >= TOUCH_EVERY:
        with db.transaction() as conn:
            conn.execute(
                update(api_tokens).where(api_tokens.c.id == row["id"]).values(last_used_at=now)
            )
    return _principal(row, "token", int(row["id"]), None)


def list_tokens(db: Database, *, organisation_id: int) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(
            select(
                api_tokens.c.id,
                api_tokens.c.user_id,
                users.c.username,
                api_tokens.c.name,
                api_tokens.c.prefix,
                api_tokens.c.role,
                api_tokens.c.created_at,
                api_tokens.c.created_by,
                api_tokens.c.expires_at,
                api_tokens.c.last_used_at,
                api_tokens.c.revoked_at,
            )
            .join(users, users.c.id == api_tokens.c.user_id)
            .where(api_tokens.c.organisation_id == organisation_id)
            .order_by(api_tokens.c.id)
        ).mappings()
        return [dict(row) for row in rows]
