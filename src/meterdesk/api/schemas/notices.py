"""System notices (系统通知): what an operator sends to the tenants of a scope, and what it shows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from meterdesk.api.schemas.common import Id, examples
from meterdesk.api.schemas.notifications import ChannelName

ScopeName = Literal["organisation", "site", "building", "floor", "rooms"]


class NoticeIn(BaseModel):
    model_config = examples(
        {
            "scope": "building",
            "ids": [3],
            "subject": "B 栋停水检修",
            "text": "12 月 9 日 9:00–12:00 B 栋停水检修，请提前储水。",
            "urgent": False,
        },
        {
            "scope": "rooms",
            "ids": [12, 13],
            "subject": "停水通知",
            "text": "管道抢修，现在停水，预计 2 小时恢复。",
            "urgent": True,
            "channels": ["sms"],
        },
    )
    scope: ScopeName = Field(description="organisation (no ids), site, building, floor or rooms")
    ids: list[Id] = Field(
        default_factory=list,
        max_length=500,
        description="the site's, building's or floor's id (one), or the rooms' ids",
    )
    # Lengths are the service's (60 and 500 characters once trimmed); these only bound the input.
    subject: Annotated[str, StringConstraints(max_length=200)]
    text: Annotated[str, StringConstraints(max_length=2000)]
    urgent: bool = Field(default=False, description="true: goes at once, even in quiet hours")
    channels: list[ChannelName] | None = Field(
        default=None,
        max_length=5,
        description="person channels to use (sms, voice, email, wechat, wechat_mini, push); "
        "null: every channel subscribed to system_notice",
    )


class DeliveryOut(BaseModel):
    pending: int
    sending: int
    sent: int
    failed: int
    suppressed: int


class NoticeOut(BaseModel):
    id: int
    scope_kind: ScopeName
    scope_ids: list[int]
    subject: str
    text: str
    urgent: bool
    channels: list[str] | None
    recipient_count: int = Field(description="customers of the open accounts in scope")
    created_by: str
    created_at: datetime
    delivery: DeliveryOut = Field(description="this notice's messages in each status")
