"""Persistence for platform billing: meter assignments, charge lines and period totals, shaped
for batches (one query per kind of thing per batch)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Connection, String, and_, bindparam, select, update

from meterdesk.billing.model import BillingMode, PeriodTotal
from meterdesk.billing.tables import QUANTITY_PLACES, accounts, charge_lines, meter_assignments, period_totals
from meterdesk.db.bulk import bulk_insert
from meterdesk.db.types import instant_int, scaled_int
from meterdesk.ledger.tables import ledger_accounts

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

    def covers(self, start: datetime, end: datetime) -> bool:
        return self.start_at <= start and (self.end_at is None or end <= self.end_at)


def load_assignments(conn: Connection, meter_ids: Iterable[int]) -> dict[int, list[Assignment]]:
    ids = sorted(set(meter_ids))
    result: dict[int, list[Assignment]] = {}
    if not ids:
        return result
    query = (
        select(
            meter_assignments.c.meter_id,
            meter_assignments.c.account_id,
            accounts.c.organisation_id,
            meter_assignments.c.tariff_id,
            meter_assignments.c.start_at,
            meter_assignments.c.end_at,
            accounts.c.billing_mode,
            accounts.c.wallet_id,
            accounts.c.arrears_id,
        )
        .join(accounts, accounts.c.id == meter_assignments.c.account_id)
        .where(meter_assignments.c.meter_id.in_(ids))
        .order_by(meter_assignments.c.start_at)
    )
    for row in conn.execute(query):
        result.setdefault(row.meter_id, []).append(
            Assignment(
                meter_id=row.meter_id,
                account_id=row.account_id,
                organisation_id=row.organisation_id,
                tariff_id=row.tariff_id,
                start_at=row.start_at,
                end_at=row.end_at,
                billing_mode=BillingMode(row.billing_mode),
                wallet_id=row.wallet_id,
                arrears_id=row.arrears_id,
            )
        )
    return result


def load_totals(conn: Connection, meter_ids: Iterable[int], period_keys: Iterable[str]) -> dict[TotalKey, PeriodTotal]:
    ids, keys = sorted(set(meter_ids)), sorted(set(period_keys))
    if not ids or not keys:
        return {}
    query = select(period_totals).where(period_totals.c.meter_id.in_(ids), period_totals.c.period_key.in_(keys))
    return {
        (row.meter_id, row.account_id, row.period_key): PeriodTotal(
            row.quantity, row.exact_cost, row.posted_fen, row.postings
        )
        for row in conn.execute(query)
    }


def save_totals(conn: Connection, changed: dict[TotalKey, PeriodTotal], known: set[TotalKey]) -> None:
    new_rows = [
        (m, a, p, scaled_int(t.quantity, QUANTITY_PLACES), f"{t.exact_cost:f}", t.posted_fen, t.postings)
        for (m, a, p), t in changed.items()
        if (m, a, p) not in known
    ]
    bulk_insert(
        conn,
        period_totals,
        ("meter_id", "account_id", "period_key", "quantity", "exact_cost", "posted_fen", "postings"),
        new_rows,
    )
    updates = [
        {
            "m": m,
            "a": a,
            "p": p,
            "q": scaled_int(t.quantity, QUANTITY_PLACES),
            "c": f"{t.exact_cost:f}",
            "f": t.posted_fen,
            "n": t.postings,
        }
        for (m, a, p), t in changed.items()
        if (m, a, p) in known
    ]
    if updates:
        conn.execute(
            update(period_totals)
            .where(
                and_(
                    period_totals.c.meter_id == bindparam("m"),
                    period_totals.c.account_id == bindparam("a"),
                    period_totals.c.period_key == bindparam("p"),
                )
            )
            .values(
                quantity=bindparam("q", type_=BigInteger()),
                exact_cost=bindparam("c", type_=String()),
                posted_fen=bindparam("f"),
                postings=bindparam("n"),
            ),
            updates,
        )


@dataclass(frozen=True)
class SupersededLine:
    account_id: int
    period_key: str
    quantity: Decimal
    cost: Decimal


def supersede_lines(conn: Connection, meter_id: int, from_start: datetime) -> list[SupersededLine]:
    """Deactivate the meter's active lines of intervals starting at or after ``from_start``
    (they are about to be priced again) and return what they had counted."""
    condition = and_(
        charge_lines.c.meter_id == meter_id,
        charge_lines.c.active.is_(True),
        charge_lines.c.interval_start >= instant_int(from_start),
    )
    rows = conn.execute(
        select(charge_lines.c.account_id, charge_lines.c.period_key, charge_lines.c.quantity, charge_lines.c.cost).where(
            condition
        )
    ).all()
    if rows:
        conn.execute(update(charge_lines).where(condition).values(active=False))
    return [SupersededLine(row.account_id, row.period_key, row.quantity, row.cost) for row in rows]


def insert_lines(conn: Connection, rows: Sequence[tuple[object, ...]]) -> None:
    bulk_insert(conn, charge_lines, LINE_COLUMNS, rows)


def wallet_floors(conn: Connection, wallet_ids: Iterable[int]) -> dict[int, int | None]:
    ids = sorted(set(wallet_ids))
    rows = conn.execute(select(ledger_accounts.c.id, ledger_accounts.c.floor_fen).where(ledger_accounts.c.id.in_(ids)))
    return {row.id: row.floor_fen for row in rows}
