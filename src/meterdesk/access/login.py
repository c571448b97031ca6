"""Password login with a lockout per username and address (see :class:`LoginPolicy`).

Every attempt is recorded. An unknown user, a user without a password and a deactivated user
are checked against a dummy hash, so the answer takes as long as for a wrong password and says
no more than "wrong username or password".
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

from argon2 import PasswordHasher
from sqlalchemy import Connection, insert, select, update

from meterdesk.access.model import AuthenticationError, LoginPolicy, RateLimitedError, locked_until
from meterdesk.access.service import DEFAULT_HASHER, Identity, identity, verify_password
from meterdesk.access.tables import login_attempts, users
from meterdesk.db.database import Database

DEFAULT_LOGIN_POLICY = LoginPolicy()


@cache
def _dummy_hash(hasher: PasswordHasher) -> str:
    """A hash to verify against for unknown users, so a miss takes as long as a wrong password."""
    return hasher.hash("not a password of anyone")


def _failures_since_success(
    conn: Connection, username: str, address: str, since: datetime
) -> list[datetime]:
    rows = conn.execute(
        select(login_attempts.c.at, login_attempts.c.succeeded)
        .where(
            login_attempts.c.username == username,
            login_attempts.c.address == address,
            login_attempts.c.at > since,
        )
        .order_by(login_attempts.c.at, login_attempts.c.id)
    ).all()
    failures: list[datetime] = []
    for at, succeeded in rows:
        failures = [] if succeeded else [*failures, at]
    return failures


def authenticate(
    db: Database,
    *,
    username: str,
    password: str,
    address: str,
    hasher: PasswordHasher = DEFAULT_HASHER,
    policy: LoginPolicy = DEFAULT_LOGIN_POLICY,
) -> Identity:
    """Check a password login, refusing while this username and address are locked out."""
    now = db.clock()
    name = username.strip()[:100]
    with db.read() as conn:
        failures = _failures_since_success(conn, name, address, now - policy.window)
        user = conn.execute(select(users).where(users.c.username == name)).mappings().first()
    until = locked_until(failures, now, policy)
    if until is not None:
        wait = max(1, int((until - now).total_seconds()) + 1)
        raise RateLimitedError(f"too many failed logins; try again in {wait} s", wait)
    usable = user is not None and user["is_active"] and user["password_hash"] is not None
    stored = str(user["password_hash"]) if usable and user is not None else _dummy_hash(hasher)
    ok = verify_password(hasher, stored, password) and usable
    with db.transaction() as conn:
        conn.execute(
            insert(login_attempts).values(username=name, address=address, at=now, succeeded=ok)
        )
        if ok and user is not None and hasher.check_needs_rehash(stored):
            conn.execute(
                update(users)
                .where(users.c.id == user["id"])
                .values(password_hash=hasher.hash(password))
            )
    if not ok or user is None:
        raise AuthenticationError("wrong username or password")
    return identity(db, user_id=int(user["id"]))
