"""Users, their memberships (a role per organisation), API tokens, console sessions, login
attempts, and the stored responses of idempotent API calls.

Secrets are never stored: a password as its argon2id hash, a token or a session id as the
SHA-256 digest of a random 256-bit secret (a fast digest is enough for a secret that cannot be
guessed, and lets a request find its row by the digest alone).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from meterdesk.db.metadata import metadata
from meterdesk.db.types import Instant

_ROLES = "role IN ('admin', 'operator', 'cashier', 'readonly')"

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(100), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("password_hash", String(200), nullable=True),  # NULL: token-only (integrations)
    Column("locale", String(10), nullable=False),
    Column("is_active", Boolean, nullable=False),
    Column("is_platform_admin", Boolean, nullable=False),  # may create organisations
    Column("created_at", Instant, nullable=False),
    Column("password_changed_at", Instant, nullable=True),
)

memberships = Table(
    "memberships",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", ForeignKey("users.id"), nullable=False),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False, index=True),
    Column("role", String(20), nullable=False),
    Column("created_at", Instant, nullable=False),
    UniqueConstraint("user_id", "organisation_id"),
    CheckConstraint(_ROLES, name="known_role"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False, index=True),
    Column("user_id", ForeignKey("users.id"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(12), nullable=False),  # shown in lists to recognise a token
    Column("role", String(20), nullable=True),  # narrower role, or NULL for the member's role
    Column("created_at", Instant, nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("expires_at", Instant, nullable=True),
    Column("last_used_at", Instant, nullable=True),
    Column("revoked_at", Instant, nullable=True),
    CheckConstraint(f"role IS NULL OR {_ROLES}", name="known_role"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("csrf_hash", String(64), nullable=False),
    Column("user_id", ForeignKey("users.id"), nullable=False, index=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=True),
    Column("address", String(64), nullable=False),
    Column("created_at", Instant, nullable=False),
    Column("last_seen_at", Instant, nullable=False),
    Column("expires_at", Instant, nullable=False),
    Column("revoked_at", Instant, nullable=True),
)

login_attempts = Table(
    "login_attempts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(100), nullable=False),
    Column("address", String(64), nullable=False),
    Column("at", Instant, nullable=False),
    Column("succeeded", Boolean, nullable=False),
)

Index(
    "ix_login_attempts_lookup",
    login_attempts.c.username,
    login_attempts.c.address,
    login_attempts.c.at,
)

# The API's replay store: the first response to a money-moving request, by organisation and
# Idempotency-Key, so a retry gets the very same body (the services make the money itself move
# once; this makes the answer repeatable too).
idempotent_responses = Table(
    "idempotent_responses",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False),
    Column("key", String(200), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", Instant, nullable=False),
    UniqueConstraint("organisation_id", "key"),
)
