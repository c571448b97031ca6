"""Simulated meters: a reading per meter per step from a load profile, delivered the way real
gateways deliver them — mostly on time, sometimes twice, sometimes late, rarely garbled.

Registers are kept as whole ten-thousandths (four places, as meters store them), so every
reading is an exact ``Decimal``. The faults are there to be seen being handled:

- *re-sent*: a gateway sends the previous reading again (a duplicate, ignored by the ingest);
- *late*: a reading is held back and arrives after the next one (the interval is re-priced);
- *garbled*: a reading jumps far beyond what the meter can measure (it is quarantined).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from meterdesk.billing.ingest import IncomingReading
from meterdesk.demo.plan import MeterPlan, TenantPlan

STEP = timedelta(minutes=15)
RESEND_CHANCE = 0.015
LATE_CHANCE = 0.001
GARBLED_CHANCE = 0.0003
_UNITS = 10_000  # register units per kWh / m³

# Activity per local hour 0..23, 1.0 = the room's full load.
HOURLY: dict[str, list[float]] = {
    "apartment": [
        *(0.15, 0.12, 0.1, 0.1, 0.1, 0.12, 0.35, 0.55, 0.35, 0.2, 0.2, 0.2),
        *(0.25, 0.2, 0.2, 0.2, 0.25, 0.4, 0.8, 1.0, 1.0, 0.9, 0.7, 0.35),
    ],
    "shop": [
        *(0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.3, 0.8, 0.9),
        *(1.0, 1.0, 0.9, 0.85, 0.85, 0.9, 1.0, 1.0, 1.0, 0.9, 0.3, 0.08),
    ],
    "restaurant": [
        *(0.08, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.1, 0.2, 0.6, 1.0),
        *(1.0, 0.7, 0.4, 0.4, 0.6, 1.0, 1.0, 1.0, 0.8, 0.5, 0.3, 0.1),
    ],
    "office": [
        *(0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.3, 1.0, 1.0, 1.0),
        *(0.9, 0.8, 1.0, 1.0, 1.0, 1.0, 0.4, 0.2, 0.1, 0.05, 0.05, 0.05),
    ],
    "apartment_water": [
        *(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 1.0, 0.6, 0.1, 0.1, 0.2),
        *(0.3, 0.1, 0.05, 0.05, 0.1, 0.2, 0.5, 0.8, 1.0, 0.6, 0.2, 0.0),
    ],
}
HOURLY["restaurant_water"] = HOURLY["restaurant"]
assert all(len(hours) == 24 for hours in HOURLY.values())


def activity(profile: str, local: datetime) -> float:
    """How busy a room is (0..1.2) at a local time: shops 10–22, flats in the evening, offices
    on weekdays 9–18."""
    level = HOURLY[profile][local.hour]
    weekend = local.weekday() >= 5
    if profile == "office" and weekend:
        return 0.05
    if weekend and profile in ("apartment", "apartment_water") and 9 <= local.hour < 17:
        return level * 2
    if weekend and profile in ("shop", "restaurant") and level > 0.5:
        return level * 1.2
    return level


@dataclass(frozen=True)
class SimulatedMeter:
    plan: MeterPlan
    meter_id: int
    profile: str


@dataclass
class Delivery:
    """What reaches the ingest in one step."""

    readings: list[IncomingReading] = field(default_factory=list)
    resent: int = 0
    late: list[tuple[str, datetime]] = field(default_factory=list)  # meter number, measured at


def simulated_meters(
    tenants: Iterable[TenantPlan], meter_ids: dict[str, int]
) -> list[SimulatedMeter]:
    return [
        SimulatedMeter(
            meter,
            meter_ids[meter.number],
            f"{t.profile}_water" if meter.utility == "water" else t.profile,
        )
        for t in tenants
        for meter in t.meters
    ]


class Feed:
    def __init__(self, meters: list[SimulatedMeter], tz: ZoneInfo, rng: random.Random) -> None:
        self._meters = meters
        self._tz = tz
        self._rng = rng
        self._units = {m.plan.number: int(m.plan.start_total * _UNITS) for m in meters}
        self._previous: dict[str, IncomingReading] = {}
        self._held: dict[str, tuple[IncomingReading, int]] = {}  # reading, step it is released

    def deliver(self, step: int, at: datetime) -> Delivery:
        """The readings measured at ``at`` (the end of step ``step``), as delivered."""
        delivery = Delivery()
        for meter in self._meters:
            reading = self._measure(meter, at)
            self._deliver_one(meter.plan, reading, step, delivery)
        return delivery

    def _measure(self, meter: SimulatedMeter, at: datetime) -> IncomingReading:
        # The load over the step just ended: look at its middle.
        local = (at - STEP / 2).astimezone(self._tz)
        noise = self._rng.uniform(0.7, 1.3)
        primary = float(meter.plan.load_per_hour) * activity(meter.profile, local) * noise / 4
        self._units[meter.plan.number] += round(primary * _UNITS / meter.plan.ct)
        total = Decimal(self._units[meter.plan.number]).scaleb(-4)
        return IncomingReading(meter.meter_id, at, total)

    def _deliver_one(
        self, plan: MeterPlan, reading: IncomingReading, step: int, delivery: Delivery
    ) -> None:
        number = plan.number
        held = self._held.get(number)
        if held is not None and held[1] <= step:
            del self._held[number]
            delivery.readings.append(held[0])
            delivery.late.append((number, held[0].measured_at))
        previous = self._previous.get(number)
        self._previous[number] = reading
        resend = self._rng.random() < RESEND_CHANCE
        if previous is not None and number not in self._held and resend:
            delivery.readings.append(previous)  # the gateway sends its last reading again
            delivery.resent += 1
        roll = self._rng.random()
        if held is None and roll < LATE_CHANCE:
            self._held[number] = (reading, step + 2)  # arrives after the next one
        elif roll > 1 - GARBLED_CHANCE:
            garbled = reading.total + Decimal(5000 if plan.utility == "electricity" else 800)
            delivery.readings.append(
                IncomingReading(reading.meter_id, reading.measured_at, garbled)
            )
        else:
            delivery.readings.append(reading)

    def release_held(self) -> Delivery:
        """Readings still held back when the run ends: they arrive now, late."""
        delivery = Delivery()
        for number, (reading, _) in sorted(self._held.items()):
            delivery.readings.append(reading)
            delivery.late.append((number, reading.measured_at))
        self._held.clear()
        return delivery
