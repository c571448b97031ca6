"""Readings and the consumption between them.

Invariants:
- Consumption comes only from two accepted readings of the same meter and the same device
  generation, in measurement-time order. A meter replacement starts a new generation; nothing is
  ever computed across it.
- A register that went down is a rollover only when wrapping at the register's modulus gives a
  plausible amount; otherwise the reading is quarantined as "decreased". An increase beyond what
  the meter could physically measure in the time between (max rate × hours, at least one minute)
  is quarantined as "jump". Quarantined readings never take part in billing until released.
- Quantities are primary units: register difference × CT × PT, exact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from operator import itemgetter
from typing import NamedTuple, cast

from meterdesk.shared.errors import ValidationError
from meterdesk.shared.money import EXACT

BANDS = ("sharp", "peak", "flat", "valley", "deep_valley")
MIN_PLAUSIBLE_US = 60_000_000  # the same minute, in microseconds
HOUR_US = 3_600_000_000
_MICROSECOND = timedelta(microseconds=1)
BAND_TOLERANCE = Decimal("0.05")


class Utility(StrEnum):
    ELECTRICITY = "electricity"
    WATER = "water"


class MeterKind(StrEnum):
    SINGLE_PHASE = "single_phase"
    THREE_PHASE = "three_phase"
    MULTI_USER_CIRCUIT = "multi_user_circuit"
    WATER = "water"


class Protocol(StrEnum):
    MODBUS_RTU = "modbus_rtu"
    MODBUS_TCP = "modbus_tcp"
    DLT645 = "dlt645"
    CJT188 = "cjt188"
    MQTT_JSON = "mqtt_json"
    MANUAL = "manual"


class ReadingSource(StrEnum):
    REALTIME = "realtime"
    HISTORY = "history"
    MANUAL = "manual"
    IMPORT = "import"
    OPENING = "opening"
    CLOSING = "closing"
    REPLACEMENT = "replacement"
    RELEASED = "released"


class QuarantineReason(StrEnum):
    DECREASED = "decreased"
    JUMP = "jump"
    INCONSISTENT_WITH_LATER = "inconsistent_with_later"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    BANDS_DISAGREE = "bands_disagree"
    UNKNOWN_METER = "unknown_meter"
    MALFORMED = "malformed"
    SETTLED = "settled"  # inside the billing of an account already closed and settled


@dataclass(frozen=True)
class MeterProfile:
    """What consumption needs to know about a meter."""

    meter_id: int
    organisation_id: int
    site_id: int
    utility: Utility
    ct_ratio: Decimal
    pt_ratio: Decimal
    modulus: Decimal
    max_rate_per_hour: Decimal  # primary units per hour
    has_band_registers: bool
    generation: int

    @cached_property
    def multiplier(self) -> Decimal:
        return self.ct_ratio * self.pt_ratio

    @cached_property
    def raw_hour_us(self) -> Decimal:
        """Multiplier × one hour in microseconds: turns a raw register advance into primary
        units × microseconds, to compare with ``max_rate_per_hour`` × elapsed microseconds."""
        return EXACT.multiply(self.multiplier, Decimal(HOUR_US))


class Reading(NamedTuple):
    """A reading as the pipeline sees it: incoming or already accepted. A NamedTuple rather
    than a frozen dataclass: ingest builds one per reading and per stored neighbour, and a tuple
    is built several times faster (immutable all the same)."""

    meter_id: int
    generation: int
    measured_at: datetime
    total: Decimal
    bands: tuple[Decimal, ...] | None = None  # in BANDS order, all present or None
    source: ReadingSource = ReadingSource.REALTIME

    def same_values(self, other: Reading) -> bool:
        return self.total == other.total and self.bands == other.bands


# A reading's place in its meter's sequence: (measured_at, generation). A C-level getter rather
# than a property, because ingest asks for it several times per reading.
order_key = cast(Callable[[Reading], tuple[datetime, int]], itemgetter(2, 1))


def bands_from_mapping(values: Mapping[str, Decimal] | None) -> tuple[Decimal, ...] | None:
    if not values:
        return None
    if set(values) - set(BANDS):
        unknown = sorted(set(values) - set(BANDS))
        raise ValidationError(f"bands: unknown band(s) {unknown}; use {', '.join(BANDS)}")
    return tuple(values.get(band, Decimal(0)) for band in BANDS)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason_code: QuarantineReason | None = None
    reason: str = ""


ACCEPT = Verdict(ok=True)


def register_problem(
    profile: MeterProfile, total: Decimal, bands: tuple[Decimal, ...] | None, places: int
) -> str | None:
    """Why a reading's registers cannot be real (a register counts from 0 up to just below its
    modulus, in steps of ``10**-places``), or None. Such a reading is quarantined as malformed:
    accepted, it would break every later interval of the meter (a negative consumption, a value
    the database cannot store) and with it every batch that holds one."""
    for name, value in (("total", total), *zip(BANDS, bands or (), strict=False)):
        if not value.is_finite():
            return f"register {name} is not a number ({value})"
        if value < 0:
            return f"register {name} is negative ({value})"
        if value >= profile.modulus:
            return f"register {name} {value} is not below the meter's modulus {_plain(profile.modulus)}"
        scaled = value.scaleb(places)
        if scaled != scaled.to_integral_value():
            return f"register {name} {value} has more than {places} decimal places"
    return None


def register_delta(earlier: Decimal, later: Decimal, modulus: Decimal) -> Decimal:
    """Raw register advance, wrapping at the modulus when the register went down."""
    return later - earlier if later >= earlier else later + modulus - earlier


def _within_limit(profile: MeterProfile, delta: Decimal, earlier: Reading, later: Reading) -> bool:
    """``delta`` (raw register units) ≤ the meter's maximum rate over the step, at least one
    minute of it — compared exactly, in integers of microseconds: ``delta × multiplier × 3600 s``
    against ``max_rate_per_hour × elapsed``. (No division, so no rounding decides a verdict.)"""
    elapsed_us = max((later.measured_at - earlier.measured_at) // _MICROSECOND, MIN_PLAUSIBLE_US)
    return EXACT.multiply(delta, profile.raw_hour_us) <= EXACT.multiply(
        profile.max_rate_per_hour, elapsed_us
    )


def _plain(value: Decimal) -> str:
    """A quantity for people: no trailing zeros, no exponent (5000.02830000 → 5000.0283)."""
    return f"{value.normalize():f}"


def _whole_seconds(elapsed: timedelta) -> timedelta:
    """A reading typed at the desk carries microseconds: "21:55:34", not "21:55:34.376153"."""
    return timedelta(seconds=int(elapsed.total_seconds()))


def check_step(profile: MeterProfile, earlier: Reading, later: Reading) -> Verdict:
    """May ``later`` follow ``earlier`` (same meter, same generation, later in time)?"""
    delta = register_delta(earlier.total, later.total, profile.modulus)
    if not _within_limit(profile, delta, earlier, later):
        if later.total < earlier.total:
            return Verdict(
                False,
                QuarantineReason.DECREASED,
                f"register went down from {earlier.total} to {later.total} and is not a rollover at {profile.modulus}",
            )
        elapsed = _whole_seconds(later.measured_at - earlier.measured_at)
        return Verdict(
            False,
            QuarantineReason.JUMP,
            f"{_plain(delta * profile.multiplier)} in {elapsed} exceeds the "
            f"meter's maximum of {_plain(profile.max_rate_per_hour)} per hour",
        )
    if earlier.bands is not None and later.bands is not None:
        band_sum = sum(
            (
                register_delta(a, b, profile.modulus)
                for a, b in zip(earlier.bands, later.bands, strict=True)
            ),
            Decimal(0),
        )
        tolerance = max(BAND_TOLERANCE, delta / 100)
        if abs(band_sum - delta) > tolerance:
            return Verdict(
                False,
                QuarantineReason.BANDS_DISAGREE,
                f"band registers advanced {band_sum} but the total advanced {delta}",
            )
    return ACCEPT


class Consumption(NamedTuple):
    """(A NamedTuple: one is built per priced interval.)"""

    start: datetime
    end: datetime
    total: Decimal
    by_band: dict[str, Decimal] | None


def consumption_between(profile: MeterProfile, earlier: Reading, later: Reading) -> Consumption:
    """Primary-unit consumption over [earlier, later). Bill from the meter's own TOU registers
    when both readings carry them; otherwise the pricer spreads the total over time."""
    multiplier = profile.multiplier
    if profile.has_band_registers and earlier.bands is not None and later.bands is not None:
        by_band = {
            band: register_delta(a, b, profile.modulus) * multiplier
            for band, a, b in zip(BANDS, earlier.bands, later.bands, strict=True)
        }
        total = sum(by_band.values(), Decimal(0))
        return Consumption(
            earlier.measured_at, later.measured_at, total, {k: v for k, v in by_band.items() if v}
        )
    total = register_delta(earlier.total, later.total, profile.modulus) * multiplier
    return Consumption(earlier.measured_at, later.measured_at, total, None)
