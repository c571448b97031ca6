"""Persistence for platform billing: meter assignments, charge lines and period totals, shaped
for batches (one query per kind of thing per batch)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection

from meterdesk.billing.model import AccountStatus, BillingMode, PeriodTotal
from meterdesk.billing.tables import (
    charge_lines,
    period_totals,
)
from meterdesk.db.bulk import bulk_insert, bulk_update, raw_rows
from meterdesk.db.types import instant_int, int_instant
from meterdesk.metering.tables import readings

LINE_COLUMNS = (
    "meter_id",
    "account_id",
    "interval_start",
    "interval_end",
    "segment_start",
    "segment_end",
    "band",
    "tier_block",
    "tier_key",
    "period_key",
    "quantity",
    "unit_price",
    "cost",
    "version_from",
    "active",
)
TotalKey = tuple[int, int, str]  # meter, account, period


@dataclass(frozen=True)
class Assignment:
    meter_id: int
    account_id: int
    organisation_id: int
    tariff_id: int
    start_at: datetime
    end_at: datetime | None
    billing_mode: BillingMode
    wallet_id: int
    arrears_id: int
    settled: bool = False  # the account is closed: its billing was settled
    quantity: bool = False  # the account buys quantity (购量): priced by its lots, not the tariff

    def covers(self, start: datetime, end: datetime) -> bool:
        return self.start_at <= start and (self.end_at is None or end <= self.end_at)


def load_assignments(conn: Connection, meter_ids: Iterable[int]) -> dict[int, list[Assignment]]:
    ids = sorted(set(meter_ids))
    result: dict[int, list[Assignment]] = {m: [] for m in ids}
    if not ids:
        return result
    rows = raw_rows(
        conn,
        "SELECT a.meter_id, a.account_id, c.organisation_id, a.tariff_id, a.start_at, a.end_at, c.billing_mode, "
        "c.wallet_id, c.arrears_id, c.status, c.credit_unit FROM meter_assignments a "
        "JOIN accounts c ON c.id = a.account_id WHERE a.meter_id IN :ids ORDER BY a.start_at",
        ids=ids,
    )
    for row in rows:
        meter_id, account_id, org, tariff_id, start_at, end_at, mode, wallet_id, arrears_id = row[
            :9
        ]
        result[meter_id].append(
            Assignment(
                meter_id=meter_id,
                account_id=account_id,
                organisation_id=org,
                tariff_id=tariff_id,
                start_at=int_instant(start_at),
                end_at=None if end_at is None else int_instant(end_at),
                billing_mode=BillingMode(mode),
                wallet_id=wallet_id,
                arrears_id=arrears_id,
                settled=row[9] == AccountStatus.CLOSED.value,
                quantity=row[10] == "quantity",
            )
        )
    return result


def load_totals(
    conn: Connection, meter_ids: Iterable[int], period_keys: Iterable[str]
) -> dict[TotalKey, PeriodTotal]:
    ids, keys = sorted(set(meter_ids)), sorted(set(period_keys))
    if not ids or not keys:
        return {}
    rows = raw_rows(
        conn,
        "SELECT meter_id, account_id, period_key, quantity, exact_cost, posted_fen, postings FROM period_totals "
        "WHERE meter_id IN :ids AND period_key IN :keys",
        ids=ids,
        keys=keys,
    )
    return {(m, a, p): PeriodTotal(q, Decimal(c), f, n) for m, a, p, q, c, f, n in rows}


TOTAL_COLUMNS = (
    "meter_id",
    "account_id",
    "period_key",
    "quantity",
    "exact_cost",
    "posted_fen",
    "postings",
)


def save_totals(
    conn: Connection, changed: dict[TotalKey, PeriodTotal], known: set[TotalKey]
) -> None:
    rows = {
        key: (
            *key,
            t.quantity_millionths,
            f"{t.exact_cost:f}",
            t.posted_fen,
            t.postings,
        )
        for key, t in changed.items()
    }
    bulk_insert(
        conn, period_totals, TOTAL_COLUMNS, [row for key, row in rows.items() if key not in known]
    )
    bulk_update(
        conn,
        period_totals,
        TOTAL_COLUMNS[:3],
        TOTAL_COLUMNS[3:],
        [(*row[3:], *row[:3]) for key, row in rows.items() if key in known],
    )


@dataclass(frozen=True)
class SupersededLine:
    account_id: int
    period_key: str
    quantity_millionths: int  # as stored
    cost: Decimal


def supersede_lines(
    conn: Connection, starts: dict[int, datetime]
) -> list[tuple[int, SupersededLine]]:
    """Deactivate, for each meter, the active lines of intervals starting at or after
    ``starts[meter]`` (they are about to be priced again) and return what they had counted:
    rows of ``charge_lines`` and lines stored on readings (billing.lines)."""
    if not starts:
        return []
    params: dict[str, int] = {}
    values = []
    for i, (meter_id, start) in enumerate(sorted(starts.items())):
        params[f"m{i}"], params[f"b{i}"] = meter_id, instant_int(start)
        values.append(f"(:m{i}, :b{i})")
    # Each meter from its own bound, through charge_lines' (meter, interval end) index and the
    # readings' (meter, time) index: a line starting at or after the bound ends after it, so
    # only the meter's recent lines are read, however long its history.
    # Only numbered placeholders are formatted in; values are bound.
    chosen = raw_rows(
        conn,
        f"WITH bounds(meter_id, bound) AS (VALUES {', '.join(values)}) "  # noqa: S608
        "SELECT 0, c.id, c.meter_id, c.interval_start, c.account_id, c.period_key, c.quantity, "
        "c.cost, c.interval_end FROM bounds b JOIN charge_lines c ON c.meter_id = b.meter_id "
        "AND c.interval_end > b.bound AND c.interval_start >= b.bound WHERE c.active "
        "UNION ALL "
        "SELECT 1, r.id, r.meter_id, r.line_start, r.line_account_id, r.line_period_key, "
        "r.line_quantity, r.line_cost, r.measured_at FROM bounds b JOIN readings r "
        "ON r.meter_id = b.meter_id AND r.measured_at > b.bound AND r.line_start >= b.bound "
        "WHERE r.line_active "
        "ORDER BY 3, 9, 1, 2",
        **params,
    )
    bulk_update(
        conn, charge_lines, ("id",), ("active",), [(False, r[1]) for r in chosen if r[0] == 0]
    )
    bulk_update(
        conn, readings, ("id",), ("line_active",), [(False, r[1]) for r in chosen if r[0] == 1]
    )
    return [
        (
            row[2],
            SupersededLine(row[4], row[5], row[6], Decimal(row[7])),
        )
        for row in chosen
    ]


def insert_lines(conn: Connection, rows: Sequence[tuple[object, ...]]) -> None:
    bulk_insert(conn, charge_lines, LINE_COLUMNS, rows)
