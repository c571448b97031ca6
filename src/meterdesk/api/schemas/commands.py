"""Device commands (指令): desired states of a meter with a deadline, and their event log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictBool, StringConstraints

from meterdesk.api.schemas.common import MONEY_PATTERN, Id, examples

# Every kind an operator may ask for; money reaches a meter only from a ledger recharge.
SendableKind = Literal[
    "relay_trip",
    "relay_close",
    "relay_close_allowed",
    "protect_on",
    "protect_off",
    "valve_close",
    "valve_open",
    "write_prices",
    "write_limits",
    "clock_sync",
]
CommandKindName = Literal[SendableKind, "recharge", "take_back"]
CommandStatusName = Literal["pending", "sent", "confirmed", "failed", "cancelled"]
PriceSlot = Literal["sharp", "peak", "flat", "valley"]
LimitName = Literal["alarm_1", "alarm_2", "overdraft_limit", "hoarding_limit", "close_allowed"]
Price = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]{1,6}(\.[0-9]{1,4})?$"),
    Field(description="CNY per unit, at most 4 places (the meter's price register)"),
]
Amount = Annotated[str, StringConstraints(pattern=MONEY_PATTERN)]


class CommandParamsIn(BaseModel):
    model_config = examples({"limits": {"alarm_1": "20.00", "alarm_2": "10.00"}})
    prices: dict[PriceSlot, Price] | None = Field(default=None, description="write_prices only")
    limits: dict[LimitName, Amount] | None = Field(default=None, description="write_limits only")


class CommandIn(BaseModel):
    model_config = examples({"kind": "relay_trip"}, {"kind": "write_prices", "from_tariff": True})
    kind: SendableKind
    params: CommandParamsIn | None = None
    from_tariff: bool = Field(
        default=False,
        description="write_prices: the price table of the meter's tariff today (F-TAR-PUSH)",
    )
    deadline_s: Annotated[int, Field(ge=10, le=7 * 86_400)] | None = Field(
        default=None, description="seconds until the command gives up (default 900)"
    )


class TakeBackIn(BaseModel):
    """退电: an amount, or all the meter holds (read just before the first send)."""

    model_config = examples({"amount": "50.00"}, {"all": True})
    amount: Amount | None = Field(default=None, description="CNY to take back off the meter")
    all: StrictBool = Field(default=False, description="all the meter holds")


class CancelIn(BaseModel):
    model_config = examples({"reason": "wrong room"})
    reason: Annotated[str, StringConstraints(max_length=200)] | None = None


class CommandOut(BaseModel):
    id: int
    meter_id: Id
    meter_number: str
    kind: CommandKindName
    params: dict[str, Any]
    desired: str = Field(description="the desired state in words")
    status: CommandStatusName
    reason: str | None = Field(description="why it failed or was cancelled")
    attempts: int
    max_attempts: int
    deadline_at: datetime
    next_attempt_at: datetime
    created_by: str
    created_at: datetime
    sent_at: datetime | None
    finished_at: datetime | None
    context: dict[str, Any] = Field(description="why it was made (control loop: reason, account)")


class CommandEventOut(BaseModel):
    at: datetime
    event: str
    detail: dict[str, Any]


class CommandDetailOut(CommandOut):
    events: list[CommandEventOut]


class CommandSentOut(BaseModel):
    command: CommandOut
    superseded: list[int] = Field(description="older commands this one cancelled")
