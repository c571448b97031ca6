"""Pricing a batch's consumption intervals into charge lines and running totals.

:class:`Charger` is the pricing half of the ingest pipeline (:mod:`meterdesk.billing.ingest`):
given each meter's new intervals (pairs of consecutive accepted readings), it prices every
interval with the tariff version in force, counts each line in its (meter, account, month)
running total and returns the ``charge_lines`` rows. It is the innermost loop of ingest, so it is
written for speed: the common interval (total register only, one time-of-use period, one tier
block) takes :func:`~meterdesk.tariffs.pricing_fast.price_single_line`; everything else the
full pricer, which gives the same lines (``tests/unit/tariffs/test_pricing_fast.py``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from meterdesk.billing import repository as billing_repository
from meterdesk.billing.model import PeriodTotal
from meterdesk.billing.quantity import load_plans
from meterdesk.billing.quantity_model import Block, price_range
from meterdesk.billing.repository import Assignment, TotalKey
from meterdesk.db.types import instant_int, scaled_int
from meterdesk.ledger import repository as ledger
from meterdesk.metering.model import Consumption, MeterProfile, Reading, consumption_between
from meterdesk.shared.money import QUANTITY_PLACES
from meterdesk.shared.time import local_date, month_key, next_month_start, zone
from meterdesk.sites.tables import sites
from meterdesk.tariffs.model import Band, Tariff, TierPeriod
from meterdesk.tariffs.pricing import PricedLine, Usage, price_usage
from meterdesk.tariffs.pricing_fast import SingleLine, price_single_line
from meterdesk.tariffs.repository import TariffCache

Pairs = dict[int, list[tuple[Reading, Reading]]]  # meter → its intervals to price, in order
LineRow = tuple[object, ...]
TotalsLoader = Callable[[Connection, Iterable[int], set[str]], dict[TotalKey, PeriodTotal]]


class Charger:
    """Long-lived (one per :class:`~meterdesk.billing.ingest.Ingestor`): keeps the tariff and
    time-zone caches between batches."""

    def __init__(self) -> None:
        self.tariffs = TariffCache()
        self._zones: dict[int, ZoneInfo] = {}
        self._plans: dict[int, tuple[Block, ...]] = {}  # quantity accounts' lots, per batch

    def prepare(
        self,
        conn: Connection,
        meter_ids: Iterable[int],
        assignments: dict[int, list[Assignment]],
        profiles: dict[int, MeterProfile],
        *,
        unchanged: bool = False,
    ) -> None:
        """Load what pricing these meters' intervals needs: tariffs (refreshed when a version
        was added, unless the database is known ``unchanged``) and site time zones."""
        self.tariffs.refresh(
            conn,
            {a.tariff_id for found in assignments.values() for a in found},
            unchanged=unchanged,
        )
        # Purchases change a plan between batches: read the lots each time (only quantity
        # accounts have any, so a batch without them reads nothing) — under the wallets' locks
        # (PostgreSQL), which a purchase or refund holds until it commits its lots: a batch
        # priced by a plan a purchase was changing would disagree with the lots it recorded.
        # No deadlock: a quantity account has one meter, whose cursor this batch already holds,
        # so no other batch waits for these wallets, and the desk never waits for a cursor.
        buying = {
            a.account_id: a.wallet_id for found in assignments.values() for a in found if a.quantity
        }
        if buying:
            ledger.lock_balances(conn, buying.values())
        self._plans = load_plans(conn, buying) if buying else {}
        for meter_id in meter_ids:
            site_id = profiles[meter_id].site_id
            if site_id not in self._zones:
                name = conn.execute(
                    select(sites.c.timezone).where(sites.c.id == site_id)
                ).scalar_one()
                self._zones[site_id] = zone(name)

    def zone(self, site_id: int) -> ZoneInfo:
        """A site's time zone (loaded by :meth:`prepare`)."""
        return self._zones[site_id]

    def period_keys(
        self,
        spans: Mapping[int, tuple[datetime, datetime]],
        assignments: dict[int, list[Assignment]],
        profiles: dict[int, MeterProfile],
    ) -> set[str]:
        """The running-total months that intervals within each meter's span (first start,
        last end) can touch (whole years of them where a tariff has yearly tiers, whose usage
        counts toward the tier)."""
        # Meters of a batch mostly share their tariffs and reading times: work each answer out
        # once per batch rather than once per meter.
        year_tiers: dict[int, bool] = {}
        found_spans: set[tuple[datetime, datetime, ZoneInfo, bool]] = set()
        for meter_id, (first, last) in spans.items():
            years = False
            for assignment in assignments.get(meter_id, ()):
                tariff_id = assignment.tariff_id
                if tariff_id not in year_tiers:
                    year_tiers[tariff_id] = _year_tiers(self.tariffs.get(tariff_id))
                years = years or year_tiers[tariff_id]
                if assignment.quantity:  # priced by the use since opening: every month of it
                    first = min(first, assignment.start_at)
            tz = self._zones[profiles[meter_id].site_id]
            found_spans.add((first, last, tz, years))
        keys: set[str] = set()
        for start, end, tz, years in found_spans:
            keys.update(_period_keys(start, end, tz, years))
        return keys

    def charge(
        self,
        pairs: Pairs,
        assignments: dict[int, list[Assignment]],
        profiles: dict[int, MeterProfile],
        totals: dict[TotalKey, PeriodTotal],
        changed: dict[TotalKey, PeriodTotal],
    ) -> tuple[list[LineRow], int]:
        """Price every interval in order; count each line in ``totals`` (and note it in
        ``changed``); return the ``charge_lines`` rows and the number of intervals priced. An
        interval no account held the meter for is stored but not billed."""
        rows: list[LineRow] = []
        priced = 0
        price_ints: dict[Decimal, int] = {}  # unit prices repeat: scale each once per batch
        for meter_id, meter_pairs in pairs.items():
            profile = profiles[meter_id]
            found = assignments[meter_id]
            tz = self._zones[profile.site_id]
            usage: dict[int, _TierUsage] = {}
            used_since_opening: dict[int, Decimal] = {}  # quantity accounts of this meter
            for earlier, later in meter_pairs:
                assignment = _covering(found, earlier.measured_at, later.measured_at)
                if assignment is None:
                    continue
                priced += 1
                consumption = consumption_between(profile, earlier, later)
                if consumption.total == 0:
                    continue
                account_id = assignment.account_id
                used = usage.get(account_id)
                if used is None:
                    used = usage[account_id] = _TierUsage(totals, meter_id, account_id)
                tariff = self.tariffs.get(assignment.tariff_id)
                start, end = instant_int(consumption.start), instant_int(consumption.end)
                segments: Sequence[tuple[int, int, PricedLine | SingleLine]]
                if assignment.quantity:
                    before = used_since_opening.get(account_id)
                    if before is None:
                        before = _used_since_opening(totals, meter_id, account_id)
                    used_since_opening[account_id] = before + consumption.total
                    segments = _instants(
                        _price_by_lots(consumption, tariff, tz, self._plans[account_id], before)
                    )
                else:
                    segments = _price_by_tariff(consumption, (start, end), tariff, tz, used)
                for segment_start, segment_end, line in segments:
                    key = (meter_id, account_id, line.period_key)
                    quantity = scaled_int(line.quantity, QUANTITY_PLACES)
                    total = totals[key]
                    total.quantity_millionths += quantity
                    total.exact_cost += line.cost
                    changed[key] = total
                    unit_price = price_ints.get(line.unit_price)
                    if unit_price is None:
                        unit_price = price_ints[line.unit_price] = scaled_int(line.unit_price, 6)
                    # str() of a StrEnum is its value, and cheaper than .value
                    rows.append(
                        (
                            meter_id,
                            account_id,
                            start,
                            end,
                            segment_start,
                            segment_end,
                            str(line.band),
                            line.tier_block,
                            line.tier_key,
                            line.period_key,
                            quantity,
                            unit_price,
                            f"{line.cost:f}",
                            line.version_from.isoformat(),
                            True,
                        )
                    )
        return rows, priced


def load_totals(
    conn: Connection,
    meter_ids: Iterable[int],
    keys: set[str],
    superseded: dict[TotalKey, list[tuple[int, Decimal]]],
    load: TotalsLoader = billing_repository.load_totals,
) -> tuple[dict[TotalKey, PeriodTotal], set[TotalKey]]:
    """The running totals the intervals add to (a zero total for a new one), with what the
    superseded lines had counted taken out again; and the keys already stored. ``load`` reads
    the stored ones: :func:`billing.repository.load_totals`, or the ingestor's kept state."""
    loaded = load(conn, meter_ids, keys | {key[2] for key in superseded})
    known = set(loaded)
    totals: dict[TotalKey, PeriodTotal] = defaultdict(lambda: PeriodTotal(0, Decimal(0), 0, 0))
    totals.update(loaded)
    for key, removed in superseded.items():
        for quantity, cost in removed:
            totals[key].add(-quantity, -cost)
    return totals, known


def _full_price(
    consumption: Consumption, tariff: Tariff, tz: ZoneInfo, used: Mapping[str, Decimal]
) -> list[PricedLine]:
    by_band = (
        {Band(k): v for k, v in consumption.by_band.items()}
        if consumption.by_band is not None
        else None
    )
    usage = Usage(
        start=consumption.start, end=consumption.end, total=consumption.total, by_band=by_band
    )
    return list(price_usage(usage, tariff, tz, used))


def _price_by_tariff(
    consumption: Consumption,
    stored: tuple[int, int],
    tariff: Tariff,
    tz: ZoneInfo,
    used: Mapping[str, Decimal],
) -> Sequence[tuple[int, int, PricedLine | SingleLine]]:
    """An interval's lines with their stored start and end: the common case (total register,
    one band, one tier block) as one fast line, anything else by the full pricer."""
    single = (
        price_single_line(consumption.start, consumption.end, consumption.total, tariff, tz, used)
        if consumption.by_band is None
        else None
    )
    if single is not None:
        return ((*stored, single),)
    return _instants(_full_price(consumption, tariff, tz, used))


def _instants(lines: Iterable[PricedLine]) -> list[tuple[int, int, PricedLine | SingleLine]]:
    return [(instant_int(line.start), instant_int(line.end), line) for line in lines]


def _used_since_opening(
    totals: dict[TotalKey, PeriodTotal], meter_id: int, account_id: int
) -> Decimal:
    """What the account used on the meter before the interval being priced: every month since
    its opening is loaded (``period_keys``), and the lines from the interval on were taken out
    again (superseded) or are not priced yet."""
    return sum(
        (
            total.quantity
            for (meter, account, _), total in totals.items()
            if meter == meter_id and account == account_id
        ),
        Decimal(0),
    )


def _price_by_lots(
    consumption: Consumption,
    tariff: Tariff,
    tz: ZoneInfo,
    plan: Sequence[Block],
    used_before: Decimal,
) -> list[PricedLine]:
    """A quantity account's interval: split at months and tariff versions as the tariff would
    split it (by time, band registers ignored: a bought kWh has no band), then each part priced
    by the lots from where the use since opening had reached (decision 0006)."""
    whole = Usage(start=consumption.start, end=consumption.end, total=consumption.total)
    parts: list[list[PricedLine]] = []
    for line in price_usage(whole, tariff, tz, {}):
        if parts and (parts[-1][0].period_key, parts[-1][0].version_from) == (
            line.period_key,
            line.version_from,
        ):
            parts[-1].append(line)
        else:
            parts.append([line])
    lines: list[PricedLine] = []
    reached = used_before
    for part in parts:
        quantity = sum((line.quantity for line in part), Decimal(0))
        for piece in price_range(plan, reached, quantity):
            lines.append(
                PricedLine(
                    start=part[0].start,
                    end=part[-1].end,
                    band=Band.FLAT,
                    quantity=piece.quantity,
                    unit_price=piece.price,
                    cost=piece.quantity * piece.price,
                    tier_block=piece.block,
                    tier_key=None,
                    period_key=part[0].period_key,
                    version_from=part[0].version_from,
                )
            )
        reached += quantity
    return lines


class _TierUsage(Mapping[str, Decimal]):
    """Quantity already used in a tier period (month key ``YYYY-MM`` or year key ``YYYY``),
    read live from the running totals so each interval sees the ones priced before it."""

    def __init__(self, totals: dict[TotalKey, PeriodTotal], meter_id: int, account_id: int) -> None:
        self._totals, self._meter, self._account = totals, meter_id, account_id

    def __getitem__(self, tier_key: str) -> Decimal:
        if len(tier_key) == 7:
            found = self._totals.get((self._meter, self._account, tier_key))
            return found.quantity if found is not None else Decimal(0)
        return sum(
            (
                total.quantity
                for (meter, account, period), total in self._totals.items()
                if meter == self._meter
                and account == self._account
                and period.startswith(tier_key + "-")
            ),
            Decimal(0),
        )

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _year_tiers(tariff: Tariff) -> bool:
    return any(v.tiers is not None and v.tiers.period == TierPeriod.YEAR for v in tariff.versions)


def _period_keys(start: datetime, end: datetime, tz: ZoneInfo, whole_years: bool) -> set[str]:
    """Billing months touched by [start, end] in local time (and every earlier month of those
    years when a tariff has yearly tiers, whose usage counts toward the tier)."""
    first, last = local_date(start, tz).replace(day=1), local_date(end, tz).replace(day=1)
    if whole_years:
        first = first.replace(month=1)
    keys, month = set(), first
    while month <= last:
        keys.add(month_key(month))
        month = next_month_start(month)
    return keys


def _covering(found: Sequence[Assignment], start: datetime, end: datetime) -> Assignment | None:
    for assignment in found:
        if assignment.covers(start, end):
            return assignment
    return None
