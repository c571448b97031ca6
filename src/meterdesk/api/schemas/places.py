"""Sites, buildings, floors, rooms and customers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictBool, StringConstraints, model_validator

from meterdesk.api.schemas.common import EMAIL_RULE, ONE_LINE, PHONE_RULE, Id, Name, examples
from meterdesk.shared.contacts import sms_warning

RoomKind = Literal["apartment", "shop", "office", "public", "dormitory"]
Zone = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class SiteIn(BaseModel):
    model_config = examples({"name": "North Park", "timezone": "Asia/Shanghai"})
    name: Name
    timezone: Zone = Field(description="IANA time zone of the site, e.g. Asia/Shanghai")


class SiteOut(BaseModel):
    id: int
    name: str
    timezone: str
    created_at: datetime


class BuildingIn(BaseModel):
    model_config = examples({"site_id": 1, "name": "B1"})
    site_id: Id
    name: Name


class BuildingOut(BaseModel):
    id: int
    site_id: Id
    name: str


class FloorIn(BaseModel):
    model_config = examples({"building_id": 1, "name": "F1", "level": 1})
    building_id: Id
    name: Annotated[str, StringConstraints(min_length=1, max_length=100), ONE_LINE]
    level: int = Field(ge=-100, le=300)


class FloorOut(BaseModel):
    id: int
    building_id: Id
    name: str
    level: int


class RoomIn(BaseModel):
    model_config = examples({"floor_id": 1, "name": "101", "kind": "shop", "area_m2": "35.50"})
    floor_id: Id
    name: Annotated[str, StringConstraints(min_length=1, max_length=100), ONE_LINE]
    kind: RoomKind
    area_m2: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,7}(\.[0-9]{1,2})?$")] | None = (
        Field(default=None, description="area in m² as a decimal string")
    )


class RoomOut(BaseModel):
    id: int
    floor_id: Id
    building_id: Id
    site_id: Id
    name: str
    kind: str
    area_m2: str | None
    site: str
    building: str
    floor: str


Language = Literal["zh-CN", "en"]
Phone = Annotated[str, StringConstraints(max_length=40)]
Email = Annotated[str, StringConstraints(max_length=200)]
OpenId = Annotated[str, StringConstraints(max_length=100)]
OPENID_RULE = "the openid of the official account (公众号) that sends WeChat template messages"
MINI_OPENID_RULE = (
    "the openid of the mini program (小程序) that sends subscription messages — not the official "
    "account's: WeChat gives each app its own; 6 to 64 letters, digits, _ or -"
)


class CustomerIn(BaseModel):
    model_config = examples(
        {"name": "Li Lei", "phone": "139 0000 0000", "email": "li@example.com", "language": "zh-CN"}
    )
    name: Name
    phone: Phone | None = Field(default=None, description=PHONE_RULE)
    email: Email | None = Field(default=None, description=EMAIL_RULE)
    wechat_openid: OpenId | None = Field(default=None, description=OPENID_RULE)
    wechat_mini_openid: OpenId | None = Field(default=None, description=MINI_OPENID_RULE)
    language: Language = Field(default="zh-CN", description="language of the customer's messages")


class CustomerPatch(BaseModel):
    """Only the fields sent change; an empty string clears phone, e-mail or openid."""

    model_config = examples({"language": "en"})
    name: Name | None = None
    phone: Phone | None = Field(default=None, description=f"{PHONE_RULE}; empty clears it")
    email: Email | None = Field(default=None, description=f"{EMAIL_RULE}; empty clears it")
    wechat_openid: OpenId | None = Field(
        default=None, description=f"{OPENID_RULE}; empty clears it"
    )
    wechat_mini_openid: OpenId | None = Field(
        default=None, description=f"{MINI_OPENID_RULE}; empty clears it"
    )
    language: Language | None = None
    summaries: StrictBool | None = Field(
        default=None,
        description="false: the customer gets no deduction summaries (扣费通知); true again",
    )


class CustomerOut(BaseModel):
    id: int
    name: str
    phone: str | None = Field(description="E.164 (+8613900000000)")
    email: str | None
    wechat_openid: str | None
    wechat_mini_openid: str | None
    language: Language
    summaries: bool = Field(description="false when the customer asked for no deduction summaries")
    created_at: datetime
    phone_warning: str | None = Field(
        default=None,
        description="set when the phone is a landline: accepted (voice calls reach it), but SMS "
        "cannot, so SMS to it fail with this reason; add a mobile number for SMS",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, row: Any) -> Any:
        """A ``customers`` row stores the opt-out; the API says what the customer gets, and
        whether SMS can reach the phone (a landline is accepted, so the caller is told here)."""
        if isinstance(row, Mapping) and "summaries_opt_out" in row:
            return {
                **row,
                "summaries": not row["summaries_opt_out"],
                "phone_warning": sms_warning(row.get("phone")),
            }
        return row
