"""Virtual electricity and water meters (pure: no I/O, the current instant is always passed in).

An electricity meter integrates power × time into per-band energy registers (sharp, peak, flat,
valley — the band from :data:`~meterdesk.simulator.profiles.DAY_SCHEDULE` in the meter's zone),
derives U I P Q S PF F from its load profile, and carries the prepaid engine and relay
(:mod:`meterdesk.simulator.prepaid`). A water meter integrates flow into cumulative m³ while its
valve is open; the valve takes ``valve_delay_s`` to move.

Invariants:
- ``advance(now)`` is the only way time enters; calling it again with the same or an earlier
  instant changes nothing, so readers may call it before every access.
- Registers are *secondary* values (what the meter measures behind its CT/PT); the platform
  multiplies by CT × PT. Prepaid money is charged on primary energy.
- The displayed total is the sum of the displayed bands (each floored to 0.01 kWh) modulo the
  register modulus, so "total = sum of bands" holds to the cent, also after a rollover of a band.
- Energy stops the moment a credit trip happens inside a segment (the segment is split at the
  crossing), and while the relay is open; water stops while the valve is closed.
- Comm faults (:class:`CommFaults`) are flags read by the servers; state faults (rollover jump,
  clock drift, replacement, stuck valve) are methods here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum

from meterdesk.devices.codecs.cjt188 import DiOrder, MeterType
from meterdesk.simulator.prepaid import (
    BillingMode,
    PrepaidEngine,
    PrepaidSettings,
)
from meterdesk.simulator.profiles import Band, LoadProfile, band_at, hour_segments, load_fraction
from meterdesk.simulator.profiles import noise as _noise

MICRO = Decimal("0.000001")
CENT = Decimal("0.01")
DEFAULT_MODULUS = Decimal(1_000_000)  # XXXXXX.XX: the register shows 999999.99 at most
SETTLEMENTS_KEPT = 12
_POWER_FACTORS = {
    LoadProfile.APARTMENT: 0.97,
    LoadProfile.SHOP: 0.92,
    LoadProfile.OFFICE: 0.90,
    LoadProfile.PUBLIC: 0.95,
    LoadProfile.CONSTANT: 0.99,
}


def to_micro(value: float) -> Decimal:
    return Decimal(f"{value:.6f}")


@dataclass
class CommFaults:
    """What the servers do to this meter's replies."""

    offline: bool = False  # no reply at all
    reply_delay_s: float = 0.0  # real seconds before the reply
    garbage_bytes: int = 0  # noise sent before each reply


@dataclass
class MeterClock:
    """The meter's own clock: true time + offset + drift since ``drift_since``."""

    offset: timedelta = timedelta(0)
    drift_ppm: float = 0.0
    drift_since: datetime | None = None

    def read(self, now: datetime) -> datetime:
        shown = now + self.offset
        if self.drift_ppm and self.drift_since is not None:
            shown += (now - self.drift_since) * (self.drift_ppm / 1e6)
        return shown

    def set(self, now: datetime, shown: datetime) -> None:
        """Time sync: from ``now`` on the clock shows ``shown`` (the drift rate stays)."""
        self.offset = shown - now
        self.drift_since = now

    def start_drift(self, now: datetime, ppm: float) -> None:
        """Keep what has drifted so far and drift at ``ppm`` from now on (fault injection)."""
        self.offset = self.read(now) - now
        self.drift_ppm, self.drift_since = ppm, now


@dataclass(frozen=True)
class ElectricitySpec:
    """What an electricity meter is; the initial register and money values included."""

    address: int
    key: str = ""  # identity for the noise seed; defaults to the address
    profile: LoadProfile = LoadProfile.APARTMENT
    zone: tzinfo = UTC
    seed: int = 0
    rated_kw: Decimal = Decimal(5)  # primary side
    phases: int = 1
    ct: Decimal = Decimal(1)
    pt: Decimal = Decimal(1)
    modulus: Decimal = DEFAULT_MODULUS
    nominal_voltage_v: float = 220.0  # primary, per phase
    band_energy_kwh: tuple[Decimal, Decimal, Decimal, Decimal] = (Decimal(0),) * 4
    billing: BillingMode = BillingMode.METER
    money: Decimal = Decimal("100.00")
    settings: PrepaidSettings = field(default_factory=PrepaidSettings)
    passwords: tuple[tuple[int, str], ...] = ((2, "000000"), (4, "000000"))

    @property
    def seed_key(self) -> str:
        return f"{self.seed}:{self.key or self.address}"


@dataclass(frozen=True)
class Instantaneous:
    """Secondary-side instantaneous values; per-phase tuples have one or three entries."""

    voltage_v: tuple[Decimal, ...]
    current_a: tuple[Decimal, ...]
    active_kw: tuple[Decimal, ...]
    reactive_kvar: tuple[Decimal, ...]
    apparent_kva: tuple[Decimal, ...]
    power_factor: Decimal
    frequency_hz: Decimal

    @property
    def total_active_kw(self) -> Decimal:
        return sum(self.active_kw, Decimal(0))

    @property
    def total_reactive_kvar(self) -> Decimal:
        return sum(self.reactive_kvar, Decimal(0))

    @property
    def total_apparent_kva(self) -> Decimal:
        return sum(self.apparent_kva, Decimal(0))


def _display(value: Decimal, modulus: Decimal) -> Decimal:
    return (value % modulus).quantize(CENT, rounding=ROUND_FLOOR)


class ElectricityMeter:
    """A prepaid electricity meter; see the module docstring for the invariants."""

    def __init__(self, spec: ElectricitySpec, *, now: datetime) -> None:
        self.spec = spec
        self.clock = MeterClock()
        self.faults = CommFaults()
        self.passwords = dict(spec.passwords)
        self._last = now
        self._fresh_registers(list(spec.band_energy_kwh), spec.money, now)

    def _fresh_registers(self, bands: list[Decimal], money: Decimal, now: datetime) -> None:
        self._bands = bands
        self.engine = PrepaidEngine(billing=self.spec.billing, money=money)
        self.engine.settings = replace(self.spec.settings)
        self.engine.evaluate()
        self.settlements: list[tuple[Decimal, ...]] = []
        self._settled = self._month_key(now)

    @property
    def address(self) -> int:
        return self.spec.address

    @property
    def zone(self) -> tzinfo:
        return self.spec.zone

    def _month_key(self, now: datetime) -> tuple[int, int]:
        local = now.astimezone(self.zone)
        return local.year, local.month

    # --- time -------------------------------------------------------------------------------

    def advance(self, now: datetime) -> None:
        """Accrue energy (and charge money) from the last call up to ``now``."""
        if now <= self._last:
            return
        for start, end in hour_segments(self._last, now, self.zone):
            local = start.astimezone(self.zone)
            if self._month_key(start) != self._settled:
                self._settle(start)
            hours = (end - start).total_seconds() / 3600
            self._consume(to_micro(self._secondary_kw(local) * hours), band_at(local))
        self._last = now

    def _consume(self, energy: Decimal, band: Band) -> None:
        """Add ``energy`` (secondary kWh) in ``band``, stopping where a credit trip cuts it."""
        if not energy:
            return
        engine, ratio = self.engine, self.spec.ct * self.spec.pt
        if engine.bills_itself and not engine.protected:
            price = engine.settings.price(band) * ratio
            room = engine.money + engine.settings.overdraft_limit  # money left before a trip
            if price and energy * price > room:
                energy = min(energy, max(room / price, Decimal(0)).quantize(MICRO) + MICRO)
        self._bands[band - 1] += energy
        engine.charge(energy * ratio, band)

    def _settle(self, moment: datetime) -> None:
        self.settlements.insert(0, self.energy_registers())
        del self.settlements[SETTLEMENTS_KEPT:]
        self._settled = self._month_key(moment)

    def _secondary_kw(self, local: datetime) -> float:
        if self.engine.relay_open:
            return 0.0
        primary = float(self.spec.rated_kw) * load_fraction(
            self.spec.profile, local, self.spec.seed_key
        )
        return primary / float(self.spec.ct * self.spec.pt)

    # --- readings ---------------------------------------------------------------------------

    def energy_registers(self) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
        """Displayed (total, sharp, peak, flat, valley) in kWh; total = sum of the bands."""
        modulus = self.spec.modulus
        sharp, peak, flat, valley = (_display(value, modulus) for value in self._bands)
        total = (sharp + peak + flat + valley) % modulus
        return total, sharp, peak, flat, valley

    def settlement_registers(self, back: int) -> tuple[Decimal, ...] | None:
        """Registers frozen at the ``back``-th previous month start (1 = last), if any."""
        return self.settlements[back - 1] if 0 < back <= len(self.settlements) else None

    def instantaneous(self, now: datetime) -> Instantaneous:
        local = now.astimezone(self.zone)
        minute = int(now.timestamp() // 60)
        key, phases = self.spec.seed_key, self.spec.phases
        volts = self.spec.nominal_voltage_v / float(self.spec.pt) * _noise(key + ":u", minute, 0.03)
        frequency = 50.0 * _noise(key + ":f", minute, 0.001)
        kw = self._secondary_kw(local) / phases
        pf = min(0.999, _POWER_FACTORS[self.spec.profile] * _noise(key + ":pf", minute, 0.02))
        pf = pf if kw else 1.0
        kva = kw / pf
        kvar = math.sqrt(max(kva * kva - kw * kw, 0.0))
        amps = kva * 1000 / volts
        return Instantaneous(
            voltage_v=(Decimal(f"{volts:.1f}"),) * phases,
            current_a=(Decimal(f"{amps:.3f}"),) * phases,
            active_kw=(Decimal(f"{kw:.4f}"),) * phases,
            reactive_kvar=(Decimal(f"{kvar:.4f}"),) * phases,
            apparent_kva=(Decimal(f"{kva:.4f}"),) * phases,
            power_factor=Decimal(f"{pf:.3f}"),
            frequency_hz=Decimal(f"{frequency:.2f}"),
        )

    # --- faults -----------------------------------------------------------------------------

    def jump_to_rollover(self, now: datetime, before: Decimal = Decimal("1.00")) -> None:
        """Fault: the total register jumps to ``modulus - before`` and soon rolls over."""
        self.advance(now)
        total = self.energy_registers()[0]
        band = band_at(now.astimezone(self.zone))
        self._bands[band - 1] += (self.spec.modulus - before - total) % self.spec.modulus

    def replace(self, now: datetime) -> None:
        """Fault: a new meter at the same address. Registers, purchase counter, relay state,
        settlements and clock restart; the remaining money is carried over (the installer
        transfers it) and the thresholds and prices are set as on the old meter."""
        self.advance(now)
        money, settings = self.engine.money, self.engine.settings
        self._fresh_registers([Decimal(0)] * 4, money, now)
        self.engine.settings = settings
        self.engine.evaluate()
        self.clock = MeterClock()


class ValvePosition(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    ABNORMAL = "abnormal"


@dataclass
class Valve:
    """A motorised valve: a command moves it to the target after ``delay``."""

    position: ValvePosition = ValvePosition.OPEN
    delay: timedelta = timedelta(seconds=8)
    target: ValvePosition | None = None
    arrives_at: datetime | None = None
    stuck: bool = False  # fault: the next move ends in ABNORMAL

    def command(self, open_valve: bool, now: datetime) -> None:
        self.settle(now)
        target = ValvePosition.OPEN if open_valve else ValvePosition.CLOSED
        if self.target is None and self.position is target:
            return
        self.target, self.arrives_at = target, now + self.delay

    def settle(self, now: datetime) -> None:
        if self.target is not None and self.arrives_at is not None and now >= self.arrives_at:
            self.position = ValvePosition.ABNORMAL if self.stuck else self.target
            self.target = self.arrives_at = None

    @property
    def moving(self) -> bool:
        return self.target is not None


@dataclass(frozen=True)
class WaterSpec:
    address: int
    key: str = ""
    profile: LoadProfile = LoadProfile.APARTMENT
    zone: tzinfo = UTC
    seed: int = 0
    rated_flow_m3h: Decimal = Decimal("0.5")
    volume_m3: Decimal = Decimal(0)
    modulus: Decimal = DEFAULT_MODULUS
    valve_delay_s: float = 8.0
    meter_type: int = MeterType.COLD_WATER
    di_order: DiOrder = DiOrder.HIGH_FIRST

    @property
    def seed_key(self) -> str:
        return f"{self.seed}:w:{self.key or self.address}"


class WaterMeter:
    """A valve-controlled water meter; volume accrues only while the valve is open."""

    def __init__(self, spec: WaterSpec, *, now: datetime) -> None:
        self.spec = spec
        self.clock = MeterClock()
        self.faults = CommFaults()
        self.valve = Valve(delay=timedelta(seconds=spec.valve_delay_s))
        self.battery_low = False
        self._volume = spec.volume_m3
        self.settlement_volume_m3 = self.volume_m3
        self._settled = self._month_key(now)
        self._last = now

    @property
    def address(self) -> int:
        return self.spec.address

    @property
    def zone(self) -> tzinfo:
        return self.spec.zone

    def _month_key(self, now: datetime) -> tuple[int, int]:
        local = now.astimezone(self.zone)
        return local.year, local.month

    def advance(self, now: datetime) -> None:
        if now <= self._last:
            return
        arrives = self.valve.arrives_at
        if arrives is not None and self._last < arrives <= now:
            self._flow(self._last, arrives)
            self.valve.settle(arrives)
            self._flow(arrives, now)
        else:
            self._flow(self._last, now)
        self.valve.settle(now)
        self._last = now

    def _flow(self, start: datetime, end: datetime) -> None:
        for begin, finish in hour_segments(start, end, self.zone):
            if self._month_key(begin) != self._settled:
                self.settlement_volume_m3 = self.volume_m3
                self._settled = self._month_key(begin)
            if self.valve.position is not ValvePosition.OPEN:
                continue
            local = begin.astimezone(self.zone)
            hours = (finish - begin).total_seconds() / 3600
            rate = float(self.spec.rated_flow_m3h) * load_fraction(
                self.spec.profile, local, self.spec.seed_key
            )
            self._volume += to_micro(rate * hours)

    @property
    def volume_m3(self) -> Decimal:
        return _display(self._volume, self.spec.modulus)

    def command_valve(self, open_valve: bool, now: datetime) -> None:
        self.advance(now)
        self.valve.command(open_valve, now)

    def valve_position(self, now: datetime) -> ValvePosition:
        """What the position switches show: the old position until the move completes."""
        self.advance(now)
        return self.valve.position

    def jump_to_rollover(self, now: datetime, before: Decimal = Decimal("1.00")) -> None:
        """Fault: the volume register jumps to ``modulus - before`` and soon rolls over."""
        self.advance(now)
        self._volume = self.spec.modulus - before

    def replace(self, now: datetime) -> None:
        self.advance(now)
        self._volume = Decimal(0)
        self.settlement_volume_m3 = Decimal(0)
        self.clock = MeterClock()
