"""The contract between the device layer's parts: what a driver can do to a meter, what one
read of a meter returns, and the errors drivers raise (library exceptions never leak out).

Register values in a :class:`Snapshot` are what the meter shows (secondary side, before CT/PT);
the money core applies CT × PT when it computes consumption.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from meterdesk.shared.errors import MeterdeskError


class RelayAction(StrEnum):
    TRIP = "trip"  # 拉闸
    CLOSE_ALLOWED = "close_allowed"  # 允许合闸: supply returns when the tenant presses the button
    CLOSE = "close"  # 直接合闸
    PROTECT_ON = "protect_on"  # 保电
    PROTECT_OFF = "protect_off"
    ALARM_ON = "alarm_on"
    ALARM_OFF = "alarm_off"


class ValveAction(StrEnum):
    OPEN = "open"
    CLOSE = "close"


@dataclass(frozen=True)
class MeterAddress:
    meter_id: int
    protocol: str  # metering.model.Protocol value
    address: str  # DL/T 645: 12 digits; CJ/T 188: 14 digits; Modbus: unit id
    options: Mapping[str, str] = field(default_factory=dict)  # map name, DI order, password …


@dataclass(frozen=True)
class Snapshot:
    """One read of a meter."""

    meter_id: int
    measured_at: (
        datetime  # aware UTC; the platform's receive time unless the meter's clock is trusted
    )
    total: Decimal | None = None  # kWh or m³ register as the meter shows it
    bands: Mapping[str, Decimal] | None = None  # sharp/peak/flat/valley registers
    voltage_v: Decimal | None = None
    current_a: Decimal | None = None
    power_kw: Decimal | None = None
    power_factor: Decimal | None = None
    frequency_hz: Decimal | None = None
    relay: str | None = None  # closed | open
    valve: str | None = None  # open | closed | abnormal
    protected: bool | None = None
    remaining_money: Decimal | None = None
    purchase_count: int | None = None
    battery_low: bool | None = None


class DeviceError(MeterdeskError):
    """A meter or bus could not be reached or answered nonsense."""


class DeviceTimeoutError(DeviceError):
    """No answer within the timeout (after retries)."""


class DeviceRefusedError(DeviceError):
    """The meter answered with an error (wrong password, expired deadline, replayed recharge …)."""


class BusUnavailableError(DeviceError):
    """The meter's bus is not connected right now (starting, reconnecting, reloading): a command
    for it is retried later rather than failed."""


class MeterDriver(Protocol):
    """What the poller and the command executor need from a protocol driver."""

    async def read(self, meter: MeterAddress) -> Snapshot: ...

    async def relay(self, meter: MeterAddress, action: RelayAction, deadline: datetime) -> None: ...

    async def valve(self, meter: MeterAddress, action: ValveAction) -> None: ...

    async def write_prices(self, meter: MeterAddress, prices: Mapping[str, Decimal]) -> None: ...

    async def write_limits(self, meter: MeterAddress, limits: Mapping[str, Decimal]) -> None: ...

    async def recharge(self, meter: MeterAddress, amount: Decimal, purchase_count: int) -> None: ...

    async def take_back(self, meter: MeterAddress, amount: Decimal, take_back_count: int) -> None:
        """退电: take ``amount`` back off a meter-billing meter, as take-back ``take_back_count``
        (the meter's own counter + 1; it refuses a replay)."""
        ...

    async def take_back_count(self, meter: MeterAddress) -> int:
        """How many take-backs the meter has accepted (its take-back counter)."""
        ...

    async def sync_clock(self, meter: MeterAddress, now: datetime) -> None: ...
