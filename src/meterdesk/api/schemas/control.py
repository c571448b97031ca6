"""The prepaid control loop's settings: alarm plans (余额告警), friendly hours, site holidays, an
account's supply policy (cut, protect 保电, restore) and emergency credit (应急用电)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from meterdesk.api.schemas.common import ONE_LINE, Id, Money, examples

AlarmChannel = Literal["sms", "email", "voice", "wechat", "wechat_mini", "push", "webhook", "log"]
PlanName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"\S"), ONE_LINE]
WallTime = Annotated[
    str,
    StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$"),
    Field(description="local wall time HH:MM", examples=["20:00"]),
]
LevelKey = Annotated[str, StringConstraints(pattern=r"^[1-3]$")]


class AlarmLevelIn(BaseModel):
    model_config = examples({"level": 1, "amount": "20.00", "repeat_count": 2, "channels": ["sms"]})
    level: Annotated[int, Field(ge=1, le=3)]
    amount: Money | None = Field(default=None, description="fires when the balance falls to this")
    days_left: Annotated[float, Field(gt=0, le=3650)] | None = Field(
        default=None, description="or: fires when the forecast credit lasts this many days"
    )
    repeat_count: Annotated[int, Field(ge=0, le=100)] = Field(
        default=0, description="extra sends after the first (告警次数 − 1)"
    )
    repeat_interval_hours: Annotated[float, Field(gt=0, le=24 * 365)] = 24
    channels: list[AlarmChannel] = Field(default=["sms"], min_length=1, max_length=7)


class AlarmPlanIn(BaseModel):
    model_config = examples(
        {
            "name": "Standard",
            "levels": [
                {"level": 1, "amount": "30.00", "repeat_count": 1, "channels": ["sms"]},
                {"level": 2, "amount": "10.00", "channels": ["sms", "email"]},
                {"level": 3, "amount": "0.00", "channels": ["sms", "voice"]},
            ],
        }
    )
    name: PlanName
    levels: list[AlarmLevelIn] = Field(min_length=1, max_length=3)


class AlarmLevelOut(BaseModel):
    level: int
    amount: str | None = None
    days_left: float | None = None
    repeat_count: int
    repeat_interval_hours: float
    channels: list[str]


class AlarmPlanOut(BaseModel):
    id: int
    name: str
    levels: list[AlarmLevelOut]
    created_at: datetime


class WindowIn(BaseModel):
    model_config = examples({"start": "20:00", "end": "08:00"})
    start: WallTime
    end: WallTime = Field(description="earlier than start: over midnight; equal: all day")


class FriendlyProfileIn(BaseModel):
    model_config = examples(
        {
            "name": "Nights and weekends",
            "windows": [{"start": "20:00", "end": "08:00"}],
            "weekends": True,
            "holidays": True,
        }
    )
    name: PlanName
    windows: list[WindowIn] = Field(default_factory=list, max_length=12)
    weekends: bool = Field(default=False, description="no cut on Saturdays and Sundays")
    holidays: bool = Field(default=False, description="no cut on the site's holidays")


class FriendlyProfileOut(BaseModel):
    id: int
    name: str
    windows: list[dict[str, str]]
    weekends: bool
    holidays: bool


class HolidayIn(BaseModel):
    model_config = examples({"name": "National Day"})
    name: Annotated[str, StringConstraints(min_length=1, max_length=100), ONE_LINE] = "holiday"


class HolidayOut(BaseModel):
    site_id: int
    day: date
    name: str


class PolicyIn(BaseModel):
    """Fields left out stay as they are. ``alarm_plan_id`` / ``friendly_profile_id`` null removes
    the plan / profile; ``alarm_amounts`` replaces the per-account amounts (``{}`` clears them)."""

    model_config = examples(
        {
            "protect": False,
            "alarm_plan_id": 1,
            "alarm_amounts": {"1": "30.00"},
            "cut_at": "zero",
            "restore_threshold": "5.00",
            "restore_mode": "direct",
        }
    )
    alarm_plan_id: Id | None = None
    alarm_amounts: dict[LevelKey, Money] | None = Field(default=None, max_length=9)
    friendly_profile_id: Id | None = None
    cut_at: Literal["zero", "overdraft"] | None = Field(
        default=None, description="cut at a zero balance, or when the overdraft is used up"
    )
    protect: bool | None = Field(default=None, description="保电: never cut")
    restore_threshold: Money | None = Field(
        default=None, description="restore when a recharge lifts the balance above this"
    )
    restore_mode: Literal["direct", "close_allowed"] | None = Field(
        default=None, description="直接合闸, or 允许合闸 (the tenant presses the meter's button)"
    )
    emergency_credit: Money | None = Field(
        default=None, description="应急用电 the tenant may take once (0 = none)"
    )


class PolicyOut(BaseModel):
    account_id: int
    number: str
    alarm_plan_id: int | None
    alarm_plan: str | None
    alarm_amounts: dict[str, str]
    friendly_profile_id: int | None
    friendly_profile: str | None
    cut_at: str
    protect: bool
    restore_threshold: str
    restore_mode: str
    emergency_credit: str
    supply: Literal["on", "off", "cut_pending"] = Field(description="as the control loop sees it")
    emergency_outstanding: str = Field(description="emergency credit taken and not yet repaid")
    alarms_sent: dict[str, int] = Field(description="level → sends since it was last re-armed")
    version: int
    updated_at: datetime | None


class EmergencyCreditOut(BaseModel):
    account_id: int
    transfer_id: int
    amount: str
    balance: str
