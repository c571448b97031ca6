"""Customers (tenants) for the console: a page of them found by name or phone, and one customer
with their contact fields and every account they hold (open or closed), each with its room."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from meterdesk.billing.tables import accounts
from meterdesk.ledger.tables import ledger_accounts
from meterdesk.shared.errors import NotFoundError
from meterdesk.sites.search import customer_matches
from meterdesk.sites.tables import buildings, customers, floors, rooms


def customer_page(
    conn: Connection, organisation_id: int, q: str | None, *, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of the organisation's customers (by name, then id) and how many match in all,
    each with how many open accounts they hold."""
    query = select(customers.c.id).where(customers.c.organisation_id == organisation_id)
    if q:
        query = query.where(customer_matches(q))
    total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    open_accounts = (
        select(func.count(accounts.c.id))
        .where(accounts.c.customer_id == customers.c.id, accounts.c.status == "open")
        .scalar_subquery()
    )
    rows = conn.execute(
        select(
            customers.c.id,
            customers.c.name,
            customers.c.phone,
            customers.c.email,
            customers.c.summaries_opt_out,
            open_accounts.label("open_accounts"),
        )
        .where(customers.c.id.in_(query))
        .order_by(customers.c.name, customers.c.id)
        .offset(offset)
        .limit(limit)
    ).mappings()
    return [dict(row) for row in rows], int(total)


def customer(conn: Connection, organisation_id: int, customer_id: int) -> dict[str, Any]:
    """The customer's row; another organisation's customer is "not found", as in the API."""
    row = (
        conn.execute(
            select(customers).where(
                customers.c.id == customer_id, customers.c.organisation_id == organisation_id
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFoundError(f"customer {customer_id} not found")
    return dict(row)


def customer_accounts(conn: Connection, organisation_id: int, customer_id: int) -> list[Any]:
    """The customer's accounts, open ones first: number, status, wallet balance and the room
    (building · floor · room) it is on, if any."""
    rows = conn.execute(
        select(
            accounts.c.id,
            accounts.c.number,
            accounts.c.status,
            accounts.c.credit_unit,
            accounts.c.opened_at,
            accounts.c.closed_at,
            ledger_accounts.c.balance_fen,
            rooms.c.id.label("room_id"),
            rooms.c.name.label("room"),
            floors.c.name.label("floor"),
            buildings.c.name.label("building"),
        )
        .join(ledger_accounts, ledger_accounts.c.id == accounts.c.wallet_id)
        .outerjoin(rooms, rooms.c.id == accounts.c.room_id)
        .outerjoin(floors, floors.c.id == rooms.c.floor_id)
        .outerjoin(buildings, buildings.c.id == floors.c.building_id)
        .where(
            accounts.c.customer_id == customer_id,
            accounts.c.organisation_id == organisation_id,
        )
        .order_by((accounts.c.status == "open").desc(), accounts.c.id)
    ).mappings()
    return [dict(row) for row in rows]
