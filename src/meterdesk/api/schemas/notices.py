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
        {
            "scope": "site",
            "ids": [1],
            "subject": "电价调整通知",
            "text": "自 1 月 1 日起电价调整为 0.68 元/kWh。",
            "send_at": "2026-12-20T09:00:00+08:00",
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
    send_at: datetime | None = Field(
        default=None,
        description="send later: an ISO 8601 instant WITH its offset, in the future and at most "
        "90 days ahead; its messages are queued now, due then (a normal notice falling in quiet "
        "hours waits for their end). null: at once",
    )


class DeliveryOut(BaseModel):
    pending: int
    sending: int
    sent: int
    failed: int
    suppressed: int
    cancelled: int


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
    send_at: datetime | None = Field(description="when it is scheduled to go out; null: at once")
    cancelled_at: datetime | None
    cancelled_by: str | None
    delivery: DeliveryOut = Field(description="this notice's messages in each status")
    stopped: int = Field(description="its messages a cancel stopped (delivery.cancelled)")
    gone: int = Field(
        description="its messages a dispatcher has taken or sent (delivery.sending + sent): "
        "a cancel cannot recall them"
    )


class NoticeCancelledOut(NoticeOut):
    already_cancelled: bool = Field(
        description="true: it had been cancelled before; this call changed nothing"
    )
