"""Who may do what: roles, permissions, and the login lockout rule.

Invariants:
- A user acts in one organisation at a time, with the role of their membership there. An API
  token acts in the organisation it was issued for; it may carry a narrower role, and then it
  may do only what *both* its role and the membership's current role allow (so demoting or
  removing a member also limits or disables their tokens at once).
- Every permission is granted by this one table (:data:`ROLE_PERMISSIONS`); the server checks it
  on every request. ``readonly`` holds only read permissions.
- Login lockout: after :attr:`LoginPolicy.max_failures` failed logins for one username from one
  address within :attr:`LoginPolicy.window`, further attempts (even with the right password) are
  refused until the oldest of those failures leaves the window.
- Passwords are at least :data:`MIN_PASSWORD_LENGTH` characters; they are stored only as
  argon2id hashes, tokens and session ids only as SHA-256 digests of high-entropy secrets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from meterdesk.shared.errors import MeterdeskError, ValidationError

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024


class AuthenticationError(MeterdeskError):
    """No valid credentials: missing, wrong, expired or revoked (HTTP 401)."""


class RateLimitedError(AuthenticationError):
    """Too many failed logins; try again later (HTTP 429)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermissionDeniedError(MeterdeskError):
    """Valid credentials, but the role does not allow this action (HTTP 403)."""


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    CASHIER = "cashier"
    READONLY = "readonly"


class Permission(StrEnum):
    READ = "read"  # every GET of the organisation's data
    AUDIT_READ = "audit.read"
    PLACES_WRITE = "places.write"  # sites, buildings, floors, rooms, customers
    METERS_WRITE = "meters.write"  # meters, device replacement
    TARIFFS_WRITE = "tariffs.write"
    ACCOUNTS_WRITE = "accounts.write"  # open, close, presets, bulk import
    MONEY_WRITE = "money.write"  # recharge, refund, take-back (退电), initial credit at opening
    MONEY_REVERSE = "money.reverse"  # reversal (冲正) of a desk entry
    READINGS_WRITE = "readings.write"  # ingest a batch of readings
    QUARANTINE_WRITE = "quarantine.write"  # release / discard
    USERS_MANAGE = "users.manage"  # members, roles, passwords, API tokens
    NOTIFICATIONS_WRITE = "notifications.write"  # send a failed message again, a system notice
    SETTINGS_WRITE = "settings.write"  # notification channels and quiet hours


_ALL = frozenset(Permission)
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: _ALL,
    Role.OPERATOR: frozenset(
        {
            Permission.READ,
            Permission.PLACES_WRITE,
            Permission.METERS_WRITE,
            Permission.ACCOUNTS_WRITE,
            Permission.READINGS_WRITE,
            Permission.QUARANTINE_WRITE,
            Permission.NOTIFICATIONS_WRITE,
        }
    ),
    Role.CASHIER: frozenset({Permission.READ, Permission.MONEY_WRITE}),
    Role.READONLY: frozenset({Permission.READ, Permission.AUDIT_READ}),
}


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise ValidationError(
            f"role: {value!r} is not one of {', '.join(r.value for r in Role)}"
        ) from None


def permissions(role: Role, token_role: Role | None = None) -> frozenset[Permission]:
    """What a caller may do: the membership's role, narrowed by the token's role if any."""
    granted = ROLE_PERMISSIONS[role]
    return granted if token_role is None else granted & ROLE_PERMISSIONS[token_role]


def require(role: Role, token_role: Role | None, permission: Permission) -> None:
    if permission not in permissions(role, token_role):
        shown = role.value if token_role is None else f"{role.value} (token: {token_role.value})"
        raise PermissionDeniedError(f"the role {shown} may not do this ({permission.value})")


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(f"password: at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationError(f"password: at most {MAX_PASSWORD_LENGTH} characters")
    return password


# The audited actor is the username, or "username/token:<id>" for a token (up to 17 more
# characters), in actor columns of 100: a 100-character username's token failed every write on
# PostgreSQL (value too long), its recharges included.
MAX_USERNAME = 80


def check_username(username: str) -> str:
    cleaned = username.strip()
    if not 2 <= len(cleaned) <= MAX_USERNAME or any(c.isspace() for c in cleaned):
        raise ValidationError(f"username: 2 to {MAX_USERNAME} characters without spaces")
    return cleaned


@dataclass(frozen=True)
class LoginPolicy:
    max_failures: int = 5
    window: timedelta = timedelta(minutes=15)


def locked_until(
    failures: Sequence[datetime], now: datetime, policy: LoginPolicy
) -> datetime | None:
    """When the lockout for these failures (one username and address) ends, or None if there is
    none now. Only failures inside the window count."""
    recent = sorted(at for at in failures if now - at < policy.window)
    if len(recent) < policy.max_failures:
        return None
    # The lock lifts when enough failures have aged out to drop below the limit.
    return recent[len(recent) - policy.max_failures] + policy.window
