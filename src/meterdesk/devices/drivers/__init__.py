"""Protocol drivers: :class:`~meterdesk.devices.ports.MeterDriver` for DL/T 645, Modbus and
CJ/T 188, each bound to one bus (one transport), and what they share.

A driver turns a use (read a meter, trip a relay) into codec frames, sends them over its bus's
transport and turns the answer into a :class:`~meterdesk.devices.ports.Snapshot` or an error.

Invariants:
- Only :class:`~meterdesk.devices.ports.DeviceError` subclasses leave a driver. A meter's error
  answer is a :class:`DeviceRefusedError` carrying the meter's reason; something this protocol
  or meter cannot do at all is an :class:`UnsupportedCommandError` (a refusal: retrying it is
  pointless); a reply that does not decode is a plain :class:`DeviceError`.
- Every request has a timeout and is retried on timeouts and connection errors with a short,
  doubling backoff; refusals are never retried.
- Register values are what the meter shows (secondary side): CT/PT are applied by the core.
- ``measured_at`` is the platform's receive time of the register reply (aware UTC), from the
  clock the driver was given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import TypeVar
from zoneinfo import ZoneInfo

from meterdesk.devices.ports import DeviceError, DeviceRefusedError, MeterAddress
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.time import zone as parse_zone

DEFAULT_ZONE = "Asia/Shanghai"
BAND_NAMES = ("sharp", "peak", "flat", "valley")  # tariff 1–4 by Chinese convention
TRUE_WORDS = ("1", "true", "yes", "on")

ResultT = TypeVar("ResultT")
Sleep = Callable[[float], Awaitable[None]]


class UnsupportedCommandError(DeviceRefusedError):
    """This protocol or meter model cannot do what was asked (e.g. a valve on an electricity
    meter, a recharge without the security chip)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Per-request timeout, attempts in all, and the first pause between attempts."""

    timeout_s: float = 1.0
    attempts: int = 3
    backoff_s: float = 0.05


async def with_retries(
    policy: RetryPolicy, operation: Callable[[], Awaitable[ResultT]], *, sleep: Sleep
) -> ResultT:
    """Run ``operation``; retry timeouts and connection errors, never refusals."""
    attempt = 0
    while True:
        try:
            return await operation()
        except DeviceRefusedError:
            raise
        except DeviceError:
            attempt += 1
            if attempt >= policy.attempts:
                raise
            await sleep(policy.backoff_s * 2 ** (attempt - 1))


def meter_zone(meter: MeterAddress) -> tzinfo:
    """The meter's local zone (its site's), from ``options["zone"]``; Asia/Shanghai if unset."""
    name = meter.options.get("zone", DEFAULT_ZONE)
    try:
        return parse_zone(name)
    except ValidationError as error:
        raise DeviceError(f"meter {meter.meter_id}: {error}") from None


def flag(meter: MeterAddress, key: str, *, default: bool = False) -> bool:
    value = meter.options.get(key)
    return default if value is None else value.strip().lower() in TRUE_WORDS


def band_index(name: str) -> int:
    """``sharp``/``peak``/``flat``/``valley`` or ``tariff_1``…``tariff_4`` → 1…4."""
    if name in BAND_NAMES:
        return BAND_NAMES.index(name) + 1
    if name.startswith("tariff_") and name[7:] in ("1", "2", "3", "4"):
        return int(name[7:])
    raise UnsupportedCommandError(f"no tariff register named {name!r} (sharp, peak, flat, valley)")


def check_names(values: Mapping[str, Decimal], known: Mapping[str, object], what: str) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UnsupportedCommandError(f"unknown {what} {unknown}; known: {sorted(known)}")


def default_clock() -> datetime:
    from meterdesk.shared.time import system_clock

    return system_clock()


DEFAULT_SLEEP: Sleep = asyncio.sleep
SHANGHAI = ZoneInfo(DEFAULT_ZONE)
