"""The notification log (outbox and delivery attempts), channel settings and quiet hours."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, JsonValue, StringConstraints

from meterdesk.api.schemas.common import examples

ChannelName = Literal["sms", "voice", "email", "wechat", "wechat_mini", "push", "webhook", "log"]
StatusName = Literal["pending", "sending", "sent", "failed", "suppressed", "cancelled"]
EventName = Literal[
    "alarm_level_1",
    "alarm_level_2",
    "alarm_level_3",
    "supply_cut",
    "supply_restored",
    "recharge_credited",
    "refund",
    "emergency_credit_taken",
    "command_failed",
    "meter_offline",
    "gateway_offline",
    "meter_money_differs",
    "system_notice",
    "deduction_summary",
]
Variable = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{0,99}$"),
    Field(description="the NAME of an environment variable holding the secret, never the secret"),
]
SettingName = Annotated[str, StringConstraints(min_length=1, max_length=60)]
WallTime = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class NotificationOut(BaseModel):
    id: int
    event_kind: str
    event_key: str
    customer_id: int | None
    account_id: int | None
    channel: str
    address: str
    language: str
    template_key: str
    urgency: Literal["urgent", "normal"]
    status: StatusName
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    provider_message_id: str | None
    created_at: datetime
    sent_at: datetime | None
    params: dict[str, Any] = Field(description="the snapshot the text is rendered from")


class AttemptOut(BaseModel):
    id: int
    attempt: int
    at: datetime
    channel: str
    result: Literal["sent", "retry", "failed", "deferred", "suppressed"]
    error: str | None
    provider_message_id: str | None
    detail: str | None


class NotificationDetailOut(NotificationOut):
    attempt_log: list[AttemptOut]


class NotificationCountsOut(BaseModel):
    pending: int
    sending: int
    sent: int
    failed: int
    suppressed: int
    cancelled: int


class SecretOut(BaseModel):
    name: str
    variable: str | None = Field(description="the environment variable named for it")
    set: bool = Field(description="whether that variable holds a value in the server's environment")


class ChannelOut(BaseModel):
    channel: ChannelName
    configured: bool
    provider: str | None
    providers: list[str] = Field(description="providers this channel can use")
    enabled: bool
    events: list[str] | None = Field(description="subscribed events; null: every event")
    config: dict[str, Any] = Field(description="non-secret settings")
    secrets: list[SecretOut]
    updated_at: datetime | None
    problem: str | None = Field(description="why these settings cannot deliver, if so")
    address_warnings: list[str] = Field(
        default_factory=list,
        description="SMS only: one line per operator address that is a landline — saved (the "
        "voice channel calls landlines), but every SMS to it fails; use a mobile number",
    )


class ChannelIn(BaseModel):
    model_config = examples(
        {
            "provider": "webhook",
            "enabled": True,
            "config": {"url": "https://example.com/meterdesk"},
            "secret_refs": {"secret": "METERDESK_WEBHOOK_SECRET"},
        },
        {"provider": "log", "enabled": True, "config": {}},
    )
    provider: Annotated[str, StringConstraints(min_length=1, max_length=20)]
    enabled: bool = True
    config: dict[SettingName, JsonValue] = Field(default_factory=dict, max_length=40)
    secret_refs: dict[SettingName, Variable] = Field(
        default_factory=dict,
        max_length=10,
        description="secret name → environment variable; secret values are refused",
    )
    events: list[EventName] | None = Field(
        default=None, max_length=20, description="null: every event"
    )


class QuietHoursOut(BaseModel):
    start: str | None = Field(description="local wall time, e.g. 22:00; null: no quiet hours")
    end: str | None


class QuietHoursIn(BaseModel):
    model_config = examples({"start": "22:00", "end": "07:00"}, {"start": None, "end": None})
    start: WallTime | None = None
    end: WallTime | None = None


class TestMessageIn(BaseModel):
    model_config = examples({"address": "ops@example.com", "language": "zh-CN"}, {})
    address: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = (
        Field(
            default=None,
            description="where to send it (e-mail, phone, WeChat openid, push target); null: the "
            "channel's first operator address; webhook and log always use their configured target",
        )
    )
    language: Literal["zh-CN", "en"] | None = Field(default=None, description="null: zh-CN")


class SummariesIn(BaseModel):
    model_config = examples({"cadence": "daily"}, {"cadence": "off"})
    cadence: Literal["off", "daily", "monthly"] = Field(
        description="deduction summaries (扣费通知) to tenants: off (the default), the previous "
        "local day after each midnight, or the previous local month after it ends"
    )


class SummariesOut(BaseModel):
    cadence: Literal["off", "daily", "monthly"]
