"""Tariff what-if (F-TAR-VERSION): a meter's recent consumption re-priced under a draft tariff,
beside what it was billed. Nothing is posted.

The consumption is the meter's stored intervals: the active charge lines grouped by their
reading interval (per band for a meter with band registers, so its registers are billed as they
were). The draft's newest version is priced as if it had been in force over the whole window;
the current tariff is re-priced the same way (version by version, as the ledger did), so the
two totals differ only by the tariff. Tiers count from zero at the window's start, so a window
that starts mid-month shows tier effects later than the ledger did; the billed total shows what
really happened.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, select

from meterdesk.billing.lines import select_lines
from meterdesk.billing.tables import meter_assignments
from meterdesk.db.types import instant_int
from meterdesk.metering.tables import meters
from meterdesk.shared.errors import NotFoundError, ValidationError
from meterdesk.shared.money import round_fen
from meterdesk.sites.tables import sites
from meterdesk.tariffs.model import Band, Tariff
from meterdesk.tariffs.pricing import Usage, price_usage
from meterdesk.tariffs.repository import load_tariff

ALWAYS = date(2000, 1, 1)


@dataclass
class Priced:
    total: Decimal = Decimal(0)
    by_band: dict[str, list[Decimal]] = field(default_factory=dict)  # band → [quantity, cost]


@dataclass(frozen=True)
class WhatIf:
    meter_number: str
    start: datetime
    end: datetime
    intervals: int
    quantity: Decimal
    billed: Decimal  # what the ledger charged (rounded to the fen)
    current: Decimal  # the current tariff re-priced the same way as the draft
    draft: Decimal
    current_bands: dict[str, list[Decimal]]
    draft_bands: dict[str, list[Decimal]]

    @property
    def difference(self) -> Decimal:
        return self.draft - self.current


@dataclass(frozen=True)
class MeterInfo:
    number: str
    utility: str
    has_bands: bool
    tariff_id: int | None
    tz: ZoneInfo


def meter_info(conn: Connection, organisation_id: int, meter_id: int) -> MeterInfo:
    row = conn.execute(
        select(
            meters.c.number,
            meters.c.utility,
            meters.c.has_band_registers,
            meter_assignments.c.tariff_id,
            sites.c.timezone,
        )
        .join(sites, sites.c.id == meters.c.site_id)
        .outerjoin(
            meter_assignments,
            and_(meter_assignments.c.meter_id == meters.c.id, meter_assignments.c.end_at.is_(None)),
        )
        .where(meters.c.id == meter_id, meters.c.organisation_id == organisation_id)
    ).first()
    if row is None:
        raise NotFoundError(f"meter {meter_id} not found")
    return MeterInfo(row[0], row[1], bool(row[2]), row[3], ZoneInfo(row[4]))


def usages(
    conn: Connection, meter_id: int, start: datetime, end: datetime, by_band: bool
) -> tuple[list[Usage], Decimal]:
    """The meter's billed intervals inside ``[start, end)`` and what they cost (exact)."""
    rows = conn.execute(
        select_lines(
            ("interval_start", "interval_end", "band", "quantity", "cost"),
            lambda line: (
                line["meter_id"] == meter_id,
                line["active"].is_(True),
                line["interval_start"] >= instant_int(start),
                # implied by the line above; lets the meter's (interval end) index skip the
                # history
                line["interval_end"] > instant_int(start),
                line["interval_end"] <= instant_int(end),
            ),
        ).order_by("interval_start")
    )
    grouped: dict[tuple[datetime, datetime], dict[str, Decimal]] = defaultdict(dict)
    billed = Decimal(0)
    for interval_start, interval_end, band, quantity, cost in rows:
        bands = grouped[(interval_start, interval_end)]
        bands[band] = bands.get(band, Decimal(0)) + quantity
        billed += cost
    found = [
        Usage(
            s,
            e,
            sum(bands.values(), Decimal(0)),
            {Band(b): q for b, q in bands.items()} if by_band else None,
        )
        for (s, e), bands in grouped.items()
        if sum(bands.values(), Decimal(0)) > 0
    ]
    return found, billed


def as_if_always(tariff: Tariff) -> Tariff:
    """The tariff's newest version, in force since long before any window."""
    return Tariff(tariff.utility, (replace(tariff.versions[-1], effective_from=ALWAYS),))


def reprice(found: list[Usage], tariff: Tariff, tz: ZoneInfo) -> Priced:
    result = Priced()
    tier_used: dict[str, Decimal] = defaultdict(Decimal)
    for usage in found:
        for line in price_usage(usage, tariff, tz, tier_used):
            result.total += line.cost
            slot = result.by_band.setdefault(line.band.value, [Decimal(0), Decimal(0)])
            slot[0] += line.quantity
            slot[1] += line.cost
            if line.tier_key is not None:
                tier_used[line.tier_key] += line.quantity
    return result


def what_if(
    conn: Connection,
    organisation_id: int,
    meter_id: int,
    draft: Tariff,
    start: datetime,
    end: datetime,
) -> WhatIf:
    info = meter_info(conn, organisation_id, meter_id)
    if info.utility != draft.utility.value:
        raise ValidationError(
            f"meter: {info.number} measures {info.utility}, the draft prices {draft.utility.value}"
        )
    found, billed = usages(conn, meter_id, start, end, info.has_bands)
    current = (
        Priced()
        if info.tariff_id is None
        else reprice(found, load_tariff(conn, info.tariff_id), info.tz)
    )
    priced = reprice(found, as_if_always(draft), info.tz)
    return WhatIf(
        meter_number=info.number,
        start=start,
        end=end,
        intervals=len(found),
        quantity=sum((u.total for u in found), Decimal(0)),
        billed=round_fen(billed),
        current=round_fen(current.total),
        draft=round_fen(priced.total),
        current_bands=current.by_band,
        draft_bands=priced.by_band,
    )
