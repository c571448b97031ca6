"""Login, organisations, members and API tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from meterdesk.access.model import MAX_USERNAME
from meterdesk.api.schemas.common import ONE_LINE, Id, Instant, Name, examples

RoleName = Literal["admin", "operator", "cashier", "readonly"]
Locale = Literal["zh-CN", "en"]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Username = Annotated[str, StringConstraints(min_length=1, max_length=100)]  # a login may try any
NewUsername = Annotated[str, StringConstraints(min_length=2, max_length=MAX_USERNAME)]


class LoginIn(BaseModel):
    model_config = examples({"username": "alice", "password": "correct horse battery"})
    username: Username
    password: Password
    organisation_id: Id | None = Field(
        default=None, description="which of your organisations to work in (default: the first)"
    )


class MembershipOut(BaseModel):
    organisation_id: Id
    organisation: str
    role: RoleName


class SessionOut(BaseModel):
    user_id: Id
    username: str
    via: Literal["session", "token"]
    organisation_id: Id | None
    role: RoleName | None
    token_role: RoleName | None
    permissions: list[str]
    locale: str
    memberships: list[MembershipOut]
    csrf_token: str | None = Field(
        default=None, description="send it as X-CSRF-Token on every change (login answer only)"
    )
    expires_at: datetime | None = None


class LocaleIn(BaseModel):
    model_config = examples({"locale": "en"})
    locale: Locale = Field(description="the console's language for this user, on every browser")


class PasswordChangeIn(BaseModel):
    model_config = examples(
        {"current_password": "old secret pass", "new_password": "new secret pass"}
    )
    current_password: Password
    new_password: Password


class OrganisationIn(BaseModel):
    model_config = examples({"name": "Sunrise Property", "timezone": "Asia/Shanghai"})
    name: Name
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "Asia/Shanghai"


class OrganisationOut(BaseModel):
    id: int
    name: str
    timezone: str
    role: RoleName | None


class MemberIn(BaseModel):
    model_config = examples(
        {"username": "bob", "password": "a long password", "role": "cashier", "display_name": "Bob"}
    )
    username: NewUsername
    password: Password | None = Field(default=None, description="omit for a token-only user")
    role: RoleName
    display_name: Annotated[str, StringConstraints(max_length=200)] = ""
    locale: Locale = "zh-CN"


class MemberOut(BaseModel):
    id: int
    username: str
    display_name: str
    locale: str
    is_active: bool
    role: RoleName
    member_since: datetime


class RoleIn(BaseModel):
    model_config = examples({"role": "operator"})
    role: RoleName


class PasswordIn(BaseModel):
    model_config = examples({"password": "a new long password"})
    password: Password


class TokenIn(BaseModel):
    model_config = examples({"name": "gateway uplink", "user_id": 1, "role": "operator"})
    name: Annotated[str, StringConstraints(min_length=1, max_length=100), ONE_LINE]
    user_id: Id | None = Field(default=None, description="whose token (default: yours)")
    role: RoleName | None = Field(default=None, description="narrow the token to this role")
    expires_at: Instant | None = None


class TokenOut(BaseModel):
    id: int
    user_id: Id
    username: str
    name: str
    prefix: str
    role: RoleName | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewTokenOut(BaseModel):
    id: int
    token: str = Field(description="shown once: store it now")
    prefix: str
