"""Accounts, presets and transfers, of one organisation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, select

from meterdesk.api.queries.common import Window, like, page
from meterdesk.billing.tables import account_presets, accounts, meter_assignments
from meterdesk.ledger.tables import NOT_A_DEDUCTION, ledger_accounts, transfers
from meterdesk.shared.errors import NotFoundError
from meterdesk.shared.money import format_money, from_fen
from meterdesk.sites.tables import customers

_wallet = ledger_accounts.alias("wallet")
_arrears = ledger_accounts.alias("arrears_account")


def _query(organisation_id: int) -> Any:
    return (
        select(
            accounts,
            customers.c.name.label("customer"),
            _wallet.c.balance_fen.label("wallet_fen"),
            _arrears.c.balance_fen.label("arrears_fen"),
        )
        .join(customers, customers.c.id == accounts.c.customer_id)
        .join(_wallet, _wallet.c.id == accounts.c.wallet_id)
        .join(_arrears, _arrears.c.id == accounts.c.arrears_id)
        .where(accounts.c.organisation_id == organisation_id)
    )


@dataclass(frozen=True)
class AccountFilter:
    status: str | None = None
    customer_id: int | None = None
    room_id: int | None = None
    q: str | None = None


def list_accounts(
    conn: Connection, organisation_id: int, where: AccountFilter, window: Window
) -> tuple[list[dict[str, Any]], str | None]:
    query = _query(organisation_id)
    for value, column in (
        (where.status, accounts.c.status),
        (where.customer_id, accounts.c.customer_id),
        (where.room_id, accounts.c.room_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.q:
        query = query.where(accounts.c.number.like(like(where.q), escape="\\"))
    rows, cursor = page(conn, query, accounts.c.id, after=window.after, limit=window.limit)
    return [account_dict(row) for row in rows], cursor


def account_dict(row: RowMapping) -> dict[str, Any]:
    values = dict(row)
    values["balance"] = format_money(from_fen(int(row["wallet_fen"])))
    values["arrears"] = format_money(from_fen(-int(row["arrears_fen"])))
    return values


def one_account(conn: Connection, organisation_id: int, account_id: int) -> dict[str, Any]:
    row = (
        conn.execute(_query(organisation_id).where(accounts.c.id == account_id)).mappings().first()
    )
    if row is None:
        raise NotFoundError(f"account {account_id} not found")
    return account_dict(row)


def account_number(conn: Connection, organisation_id: int, account_id: int) -> str:
    found = conn.execute(
        select(accounts.c.number).where(
            accounts.c.id == account_id, accounts.c.organisation_id == organisation_id
        )
    ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"account {account_id} not found")
    return str(found)


def list_presets(
    conn: Connection, organisation_id: int, status: str | None, window: Window
) -> tuple[list[dict[str, Any]], str | None]:
    query = select(account_presets).where(account_presets.c.organisation_id == organisation_id)
    if status is not None:
        query = query.where(account_presets.c.status == status)
    rows, cursor = page(conn, query, account_presets.c.id, after=window.after, limit=window.limit)
    return [preset_dict(row) for row in rows], cursor


def preset_dict(row: RowMapping) -> dict[str, Any]:
    return {**dict(row), "data": json.loads(row["payload"])}


def one_preset(conn: Connection, organisation_id: int, preset_id: int) -> dict[str, Any]:
    row = (
        conn.execute(
            select(account_presets).where(
                account_presets.c.id == preset_id,
                account_presets.c.organisation_id == organisation_id,
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFoundError(f"preset {preset_id} not found")
    return preset_dict(row)


def presets_by_number(
    conn: Connection, organisation_id: int, numbers: Sequence[str]
) -> dict[str, int]:
    rows = conn.execute(
        select(account_presets.c.account_number, account_presets.c.id).where(
            account_presets.c.organisation_id == organisation_id,
            account_presets.c.account_number.in_(list(numbers)),
        )
    ).all()
    return {str(number): int(preset_id) for number, preset_id in rows}


def meter_ids(conn: Connection, account_id: int) -> list[int]:
    rows = conn.execute(
        select(meter_assignments.c.meter_id)
        .where(meter_assignments.c.account_id == account_id)
        .order_by(meter_assignments.c.id)
    ).scalars()
    return list(dict.fromkeys(int(m) for m in rows))  # a tariff change adds a second row


def initial_transfer(conn: Connection, account_id: int) -> int | None:
    found = conn.execute(
        select(transfers.c.id)
        .where(
            transfers.c.account_id == account_id,
            NOT_A_DEDUCTION,  # the account index holds only these
            transfers.c.reason == "recharge",
        )
        .order_by(transfers.c.id)
        .limit(1)
    ).scalar_one_or_none()
    return None if found is None else int(found)
