"""The common case of ingest as one flat loop: same rows as the general path, less work.

Almost every meter in a batch is in the same situation: it has a cursor, its new readings come
after it, they carry only the total register, one open account holds the meter, and each new
interval lies inside one time-of-use period and one tier block. For such a meter the general
pipeline (:mod:`meterdesk.billing.ingest`) still builds a ``Reading``, a ``Merge``, the interval
pairs, a ``Consumption`` and a priced line object per reading, converts instants back and forth
and walks its generality. The lane takes those meters out of the batch first (:meth:`FastLane.take`)
and places and prices them directly from the stored integers (:meth:`FastLane.charge`):

- it accepts a meter only when placing it cannot go any other way: cursor of generation 0, no
  replacement, every new reading after the cursor, in UTC, without band registers, not released
  from the quarantine, held by a money-credit account (quantity credit is priced by its lots
  in the general charger), each step plausible (the same exact test as ``check_step``, in integers);
  anything else — a late, conflicting, implausible or band reading — leaves the whole meter to
  the general path, which owns every quarantine reason;
- it prices an interval only where ``pricing_fast.price_single_line`` would give one line, by the
  same rules and the same ``Decimal`` arithmetic for quantity and cost (so the stored text is the
  same); if any interval of a meter needs the full pricer, all of that meter's intervals go to the
  general :class:`~meterdesk.billing.charging.Charger` instead, before anything was counted;
- it writes exactly the rows the general path writes (readings, cursor, charge lines, running
  totals) and leaves posting, running totals' storage and the control loop to the shared code.

``tests/integration/test_fast_lane.py`` ingests generated batches with the lane on and off and
requires the same database, row for row.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from meterdesk.billing.charging import LineRow, Pairs
from meterdesk.billing.model import PeriodTotal
from meterdesk.billing.repository import Assignment, TotalKey
from meterdesk.db.types import instant_int, int_instant, scaled_int
from meterdesk.metering import repository as metering_repository
from meterdesk.metering.model import (
    HOUR_US,
    MIN_PLAUSIBLE_US,
    MeterProfile,
    Reading,
    ReadingSource,
)
from meterdesk.metering.repository import NO_LINE
from meterdesk.metering.tables import REGISTER_PLACES
from meterdesk.shared.money import EXACT, QUANTITY_PLACES
from meterdesk.tariffs.model import Band, Tariff, TariffVersion, TierMode, TierPeriod
from meterdesk.tariffs.pricing import (
    ZERO,
    _band_price,
    _block_index,
    _day_plan,
    _version_starts,
)

_NO_BANDS = (None,) * 5
_REGISTER_SCALE = 10**REGISTER_PLACES
# A quantity (register advance × multiplier, both in 1e-4) is at most six places when its
# 1e-8 integer is a multiple of 100: the pricer's own limit, as ``_at_most_six_places``.
_TO_QUANTITY = 10 ** (2 * REGISTER_PLACES - QUANTITY_PLACES)


class _New(NamedTuple):
    """One new reading of a lane meter."""

    at_us: int
    at: datetime
    total: Decimal
    total_i: int  # register in 1e-4
    source: str


class LaneMeter(NamedTuple):
    """A meter the lane placed: its cursor and its new readings, sorted, each accepted."""

    meter_id: int
    profile: MeterProfile
    assignment: Assignment
    constants: _Meter
    cursor_row: tuple[Any, ...]  # as stored: generation, measured_at, register_total, bands
    cursor_total: Decimal
    new: list[_New]

    @property
    def span(self) -> tuple[datetime, datetime]:
        return int_instant(self.cursor_row[1]), self.new[-1].at


class _Plan(NamedTuple):
    """A ``pricing._DayPlan`` in stored instants, usable for every instant in [start, end)."""

    start: int
    end: int
    starts: tuple[int, ...]
    bands: tuple[Band, ...]
    period_key: str
    tier_key: str | None


class _Slot:
    """One tariff version in one zone, as the lane prices with it: its last day plan, its prices
    by (band, tier block) and its effective date as stored. Found by the version's index among
    the tariff's starts, so an interval hashes no version (a ``TariffVersion`` hashes in
    Python)."""

    __slots__ = ("effective_from", "plan", "prices", "version")

    def __init__(self, version: TariffVersion) -> None:
        self.version = version
        self.plan: _Plan | None = None
        self.prices: dict[tuple[Band, int | None], tuple[Decimal, int]] = {}
        self.effective_from = version.effective_from.isoformat()


class _Versions(NamedTuple):
    """A tariff's versions in one zone: their starts in stored instants and a slot for each."""

    starts: tuple[int, ...]
    slots: tuple[_Slot, ...]


class _Meter(NamedTuple):
    """What placing needs from a profile, in integers (cached per profile)."""

    modulus: int
    multiplier: int  # CT × PT in 1e-4
    max_rate: int  # register units × 1e-4 per hour, × 1e4 to compare with the multiplier's scale


class FastLane:
    """Long-lived beside a :class:`~meterdesk.billing.charging.Charger` (one per ingestor):
    caches integer day plans, prices and per-meter constants between batches."""

    def __init__(self) -> None:
        self._meters: dict[int, tuple[MeterProfile, _Meter | None]] = {}
        self._versions: dict[tuple[Tariff, ZoneInfo], _Versions] = {}
        # Per meter: the assignment it was last seen under and its start as stored.
        self._held_since: dict[int, tuple[Assignment, int]] = {}
        # Since start (for the benchmark's figures and the tests that the lane is taken):
        self.meters_seen = 0  # meters of all batches
        self.meters_taken = 0  # placed by the lane
        self.meters_handed_back = 0  # of those, priced by the general charger

    # -- placing -----------------------------------------------------------------------------

    def take(
        self,
        readings: Sequence[Any],
        cursor_rows: Mapping[int, tuple[Any, ...]],
        profiles: Mapping[int, MeterProfile],
        assignments: Mapping[int, list[Assignment]],
    ) -> tuple[dict[int, LaneMeter], int]:
        """The meters of ``readings`` (``IncomingReading``) the lane places, each with its new
        readings; and how many exact in-batch duplicates of theirs it dropped."""
        by_meter: dict[int, list[Any]] = {}
        for incoming in readings:
            found = by_meter.get(incoming.meter_id)
            if found is None:
                by_meter[incoming.meter_id] = [incoming]
            else:
                found.append(incoming)
        taken: dict[int, LaneMeter] = {}
        duplicates = 0
        for meter_id, incoming in by_meter.items():
            cursor = cursor_rows.get(meter_id)
            profile = profiles.get(meter_id)
            if cursor is None or profile is None or profile.generation or cursor[0]:
                continue
            held = assignments.get(meter_id)
            if not held or len(held) != 1:
                continue
            assignment = held[0]
            if (
                assignment.end_at is not None
                or assignment.quantity  # priced by its lots: the general charger's job
                or self._since(meter_id, assignment) > cursor[1]
            ):
                continue
            constants = self._meter(profile)
            if constants is None:
                continue
            placed = _place(incoming, cursor, constants)
            if placed is None:
                continue
            new, dropped = placed
            duplicates += dropped
            taken[meter_id] = LaneMeter(
                meter_id,
                profile,
                assignment,
                constants,
                cursor,
                Decimal(cursor[2]).scaleb(-REGISTER_PLACES),
                new,
            )
        self.meters_seen += len(by_meter)
        self.meters_taken += len(taken)
        return taken, duplicates

    def _since(self, meter_id: int, assignment: Assignment) -> int:
        """The assignment's start as stored (the same assignment object while the ingestor's
        configuration cache holds it)."""
        cached = self._held_since.get(meter_id)
        if cached is not None and cached[0] is assignment:
            return cached[1]
        since = instant_int(assignment.start_at)
        self._held_since[meter_id] = (assignment, since)
        return since

    def _meter(self, profile: MeterProfile) -> _Meter | None:
        cached = self._meters.get(profile.meter_id)
        if cached is not None and cached[0] is profile:
            return cached[1]
        try:
            constants: _Meter | None = _Meter(
                scaled_int(profile.modulus, REGISTER_PLACES),
                scaled_int(profile.multiplier, REGISTER_PLACES),
                scaled_int(profile.max_rate_per_hour, REGISTER_PLACES) * _REGISTER_SCALE,
            )
        except ValueError:  # more places than the stored form: leave it to the general path
            constants = None
        self._meters[profile.meter_id] = (profile, constants)
        return constants

    @staticmethod
    def reading_rows(
        lane: Mapping[int, LaneMeter], received: int, lines: Mapping[tuple[int, int], LineRow]
    ) -> list[tuple[Any, ...]]:
        """The lane meters' new readings as stored rows (``READING_COLUMNS``), each with the
        line ``lines`` holds for its interval (by meter and time), if any (billing.lines)."""
        return [
            (
                meter.meter_id,
                0,
                new.at_us,
                received,
                new.total_i,
                *_NO_BANDS,
                new.source,
                *lines.get((meter.meter_id, new.at_us), NO_LINE),
            )
            for meter in lane.values()
            for new in meter.new
        ]

    @staticmethod
    def cursor_rows(lane: Mapping[int, LaneMeter]) -> list[tuple[Any, ...]]:
        """Each lane meter's cursor moved to its last new reading (``CURSOR_COLUMNS``)."""
        return [
            (meter.meter_id, 0, meter.new[-1].at_us, meter.new[-1].total_i, *_NO_BANDS)
            for meter in lane.values()
        ]

    # -- pricing -----------------------------------------------------------------------------

    def charge(
        self,
        lane: Mapping[int, LaneMeter],
        tariffs: Callable[[int], Tariff],
        zones: Callable[[int], ZoneInfo],
        totals: dict[TotalKey, PeriodTotal],
        changed: dict[TotalKey, PeriodTotal],
    ) -> tuple[dict[tuple[int, int], LineRow], int, Pairs]:
        """Price the lane meters' intervals; count each line in ``totals`` (and ``changed``).
        Returns each interval's line by (meter, stored time of the reading that ends it), in
        ``READING_LINE_COLUMNS`` order for the reading's row; the number of intervals priced; and, as
        pairs of readings for the general charger, the meters with an interval the lane cannot
        price (their readings are stored without lines)."""
        lines: dict[tuple[int, int], LineRow] = {}
        priced = 0
        general: Pairs = {}
        for meter_id, meter in lane.items():
            priced_meter = self._price_meter(
                meter, tariffs(meter.assignment.tariff_id), zones(meter.profile.site_id), totals
            )
            if priced_meter is None:
                general[meter_id] = _pairs(meter)
                self.meters_handed_back += 1
                continue
            meter_lines, counted = priced_meter
            priced += len(meter.new)
            for key, quantity, cost in counted:
                total = totals[key]
                total.quantity_millionths += quantity
                total.exact_cost += cost
                changed[key] = total
            lines.update(meter_lines)
        return lines, priced, general

    def _price_meter(
        self,
        meter: LaneMeter,
        tariff: Tariff,
        tz: ZoneInfo,
        totals: Mapping[TotalKey, PeriodTotal],
    ) -> tuple[dict[tuple[int, int], LineRow], list[tuple[TotalKey, int, Decimal]]] | None:
        """The meter's lines by (meter, end) and what each adds to which running total, or
        None when one of its intervals is not a single line. Nothing is counted here, so None
        changes nothing."""
        meter_id, account_id = meter.meter_id, meter.assignment.account_id
        versions = self._versions_of(tariff, tz)
        multiplier, modulus = meter.profile.multiplier, meter.profile.modulus
        multiplier_i, modulus_i = meter.constants.multiplier, meter.constants.modulus
        lines: dict[tuple[int, int], LineRow] = {}
        counted: list[tuple[TotalKey, int, Decimal]] = []
        used_here: dict[str, Decimal] = {}
        start, earlier, earlier_i = meter.cursor_row[1], meter.cursor_total, meter.cursor_row[2]
        for new in meter.new:
            end, later, later_i = new.at_us, new.total, new.total_i
            if later_i >= earlier_i:
                raw = later_i - earlier_i
                delta = later - earlier
            else:  # rolled over at the modulus
                raw = later_i + modulus_i - earlier_i
                delta = later + modulus - earlier
            interval = (start, end)
            start, earlier, earlier_i = end, later, later_i
            scaled = raw * multiplier_i  # the quantity in 1e-8
            if scaled == 0:
                continue  # priced, nothing to bill (as the general path)
            if scaled % _TO_QUANTITY:
                return None  # more than six places: the full pricer
            line = self._line(
                (versions, tz),
                interval,
                used_here,
                totals,
                (meter_id, account_id),
                (delta * multiplier, scaled // _TO_QUANTITY),
            )
            if line is None:
                return None
            row, key, quantity_i, cost = line
            lines[(meter_id, end)] = row
            counted.append((key, quantity_i, cost))
        return lines, counted

    def _line(
        self,
        pricing: tuple[_Versions, ZoneInfo],
        interval: tuple[int, int],
        used_here: dict[str, Decimal],
        totals: Mapping[TotalKey, PeriodTotal],
        holder: tuple[int, int],
        quantities: tuple[Decimal, int],
    ) -> tuple[LineRow, TotalKey, int, Decimal] | None:
        """``price_single_line`` for one interval, in stored instants (``pricing``: the tariff's
        versions and the zone; ``holder``: meter and account; ``quantities``: the quantity and
        the same in 1e-6)."""
        (versions, tz), (start, end) = pricing, interval
        (meter_id, account_id), (quantity, quantity_i) = holder, quantities
        starts = versions.starts
        index = bisect_right(starts, start) - 1
        if index < 0 or (index + 1 < len(starts) and end > starts[index + 1]):
            return None  # before the first version or across a version start
        slot = versions.slots[index]
        version, plan = slot.version, slot.plan
        if plan is None or not plan.start <= start < plan.end:
            plan = _plan(version, tz, start)
            if plan is None:
                return None
            slot.plan = plan  # the last plan per version and zone serves its whole range
        period = bisect_right(plan.starts, start) - 1
        cut = plan.starts[period + 1] if period + 1 < len(plan.starts) else plan.end
        if end > cut:
            return None  # crosses a period, day or month start
        band = plan.bands[period]
        tiers = version.tiers
        block_index: int | None = None
        if tiers is not None:
            if tiers.period is not TierPeriod.MONTH:
                return None  # yearly tiers sum a year of totals: the general charger's job
            key = plan.tier_key
            assert key is not None  # a version with tiers always gives a tier key
            found = totals.get((meter_id, account_id, key))
            used = (found.quantity if found is not None else ZERO) + used_here.get(key, ZERO)
            block_index = _block_index(tiers, used)
            bound = tiers.blocks[block_index].up_to
            if bound is not None and EXACT.add(used, quantity) > bound:
                return None  # climbs into the next block: several lines
            used_here[key] = used_here.get(key, ZERO) + quantity
        price, price_i = slot.prices.get((band, block_index)) or _price(slot, band, block_index)
        cost = EXACT.multiply(quantity, price)
        period_key = plan.period_key
        row = (  # READING_LINE_COLUMNS of a reading's row: the interval ends at the reading
            account_id,
            start,
            str(band),
            block_index,
            plan.tier_key,
            period_key,
            quantity_i,
            price_i,
            f"{cost:f}",
            slot.effective_from,
            True,
        )
        return row, (meter_id, account_id, period_key), quantity_i, cost

    def _versions_of(self, tariff: Tariff, tz: ZoneInfo) -> _Versions:
        found = self._versions.get((tariff, tz))
        if found is None:
            found = _Versions(
                tuple(instant_int(at) for at in _version_starts(tariff, tz)),
                tuple(_Slot(version) for version in tariff.versions),
            )
            self._versions[(tariff, tz)] = found
        return found


def _plan(version: TariffVersion, tz: ZoneInfo, at: int) -> _Plan | None:
    """The day plan ``price_single_line`` would use for an interval starting at ``at``, or None
    where the lane cannot use one: it serves every instant in its range only while the zone's
    offset does not change inside it (DST days go the general way)."""
    day_plan = _day_plan(version, int_instant(at).astimezone(tz).date(), tz)
    first, end = day_plan.starts[0], day_plan.end
    if first.astimezone(tz).utcoffset() != (end.astimezone(tz).utcoffset()):
        return None
    plan = _Plan(
        instant_int(first),
        instant_int(end),
        tuple(instant_int(s) for s in day_plan.starts),
        day_plan.bands,
        day_plan.period_key,
        day_plan.tier_key,
    )
    if not plan.start <= at < plan.end:
        return None  # a local day whose midnight repeats: the general charger handles it
    return plan


def _price(slot: _Slot, band: Band, block_index: int | None) -> tuple[Decimal, int]:
    """A band's price in a tier block (and in 1e-6), kept in the version's slot."""
    version = slot.version
    tiers = version.tiers
    if tiers is None or block_index is None:
        price = _band_price(version, band, band)
    else:
        base = ZERO if tiers.mode is TierMode.PRICE else _band_price(version, band, band)
        price = EXACT.add(base, tiers.blocks[block_index].price)
    found = slot.prices[(band, block_index)] = (price, scaled_int(price, QUANTITY_PLACES))
    return found


def _place(
    incoming: Iterable[Any], cursor: tuple[Any, ...], meter: _Meter
) -> tuple[list[_New], int] | None:
    """A meter's new readings sorted and checked, and the exact duplicates dropped; None when
    any of them is not the common case."""
    by_time: dict[int, _New] = {}
    dropped = 0
    for reading in incoming:
        at = reading.measured_at
        if reading.bands or at.tzinfo is not UTC or reading.source is ReadingSource.RELEASED:
            return None
        try:
            total_i = scaled_int(reading.total, REGISTER_PLACES)
        except ValueError:
            return None  # the general path quarantines it with its own message
        if not 0 <= total_i < meter.modulus:
            return None  # not a register value: quarantined by the general path
        new = _New(instant_int(at), at, reading.total, total_i, str(reading.source))
        twin = by_time.get(new.at_us)
        if twin is None:
            by_time[new.at_us] = new
        elif twin.total_i == total_i and twin.total == reading.total:
            dropped += 1
        else:
            return None  # a conflicting duplicate: quarantined by the general path
    new_readings = sorted(by_time.values()) if len(by_time) > 1 else list(by_time.values())
    earlier_at, earlier = cursor[1], cursor[2]
    for new in new_readings:
        if new.at_us <= earlier_at:
            return None  # late, or the cursor again: the general walk places it
        later = new.total_i
        raw = later - earlier if later >= earlier else later + meter.modulus - earlier
        elapsed = max(new.at_us - earlier_at, MIN_PLAUSIBLE_US)
        if raw * meter.multiplier * HOUR_US > meter.max_rate * elapsed:
            return None  # implausible (a jump, or a register that went down)
        earlier_at, earlier = new.at_us, later
    return new_readings, dropped


def _pairs(meter: LaneMeter) -> list[tuple[Reading, Reading]]:
    """The meter's intervals as the general charger takes them."""
    readings = [metering_repository.cursor_reading(meter.meter_id, meter.cursor_row)]
    readings.extend(
        Reading(meter.meter_id, 0, new.at, new.total, None, ReadingSource(new.source))
        for new in meter.new
    )
    return list(itertools.pairwise(readings))
