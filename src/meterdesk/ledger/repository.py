"""Persistence of ledger accounts and transfers, in batches.

:func:`apply_transfers` is the only writer of balances: it inserts the transfers and moves each
touched balance once, by the batch's net amount, in the same transaction. Floors are checked here
for a clear error and again by the database CHECK.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from meterdesk.db.bulk import bulk_insert, bulk_update, raw_rows
from meterdesk.db.types import instant_int
from meterdesk.ledger.model import AccountKind, TransferRequest, system_request_hash
from meterdesk.ledger.tables import ledger_accounts, transfers
from meterdesk.shared.errors import (
    ConflictError,
    IdempotencyConflictError,
    InsufficientFundsError,
    NotFoundError,
)

TRANSFER_COLUMNS = (
    "organisation_id",
    "idempotency_key",
    "request_hash",
    "debit_account_id",
    "credit_account_id",
    "amount_fen",
    "reason",
    "account_id",
    "meter_id",
    "period_key",
    "method",
    "reference",
    "reverses_id",
    "actor",
    "memo",
    "created_at",
)


class Balance(NamedTuple):
    """A ledger account's balance and floor as read (a tuple: the posting makes one for each
    account it moves, every batch)."""

    account_id: int
    balance_fen: int
    floor_fen: int | None


def create_account(
    conn: Connection,
    *,
    organisation_id: int,
    code: str,
    kind: AccountKind,
    at: datetime,
    floor_fen: int | None = None,
) -> int:
    result = conn.execute(
        insert(ledger_accounts).values(
            organisation_id=organisation_id,
            code=code,
            kind=kind.value,
            balance_fen=0,
            floor_fen=floor_fen,
            created_at=at,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def system_account(
    conn: Connection, *, organisation_id: int, code: str, kind: AccountKind, at: datetime
) -> int:
    """The organisation's account with this code, created on first use. Two transactions that
    both use it first get the same account: the insert does nothing on a conflict (on PostgreSQL
    it waits for the other transaction and then finds its row)."""
    query = select(ledger_accounts.c.id).where(
        ledger_accounts.c.organisation_id == organisation_id, ledger_accounts.c.code == code
    )
    found = conn.execute(query).scalar_one_or_none()
    if found is not None:
        return int(found)
    builder = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(
        builder(ledger_accounts)
        .values(
            organisation_id=organisation_id,
            code=code,
            kind=kind.value,
            balance_fen=0,
            floor_fen=None,
            created_at=at,
        )
        .on_conflict_do_nothing(index_elements=["organisation_id", "code"])
    )
    return int(conn.execute(query).scalar_one())


def system_accounts(
    conn: Connection, wanted: Iterable[tuple[int, str]], *, kind: AccountKind, at: datetime
) -> dict[tuple[int, str], int]:
    """:func:`system_account` for several (organisation, code) pairs: one query for those that
    exist, creation (as there) for the others."""
    pairs = set(wanted)
    if not pairs:
        return {}
    rows = raw_rows(
        conn,
        "SELECT organisation_id, code, id FROM ledger_accounts "
        "WHERE organisation_id IN :orgs AND code IN :codes",
        orgs={org for org, _ in pairs},
        codes={code for _, code in pairs},
    )
    found = {(org, code): account_id for org, code, account_id in rows if (org, code) in pairs}
    for org, code in pairs - found.keys():
        found[(org, code)] = system_account(conn, organisation_id=org, code=code, kind=kind, at=at)
    return found


def lock_balances(conn: Connection, account_ids: Iterable[int]) -> dict[int, Balance]:
    """Current balances, locked for this transaction on PostgreSQL (SQLite holds the write lock
    from BEGIN IMMEDIATE). Rows are locked in id order so two batches never deadlock."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    lock = " FOR UPDATE" if conn.dialect.name == "postgresql" else ""
    rows = raw_rows(
        conn,
        f"SELECT id, balance_fen, floor_fen FROM ledger_accounts WHERE id IN :ids ORDER BY id{lock}",  # noqa: S608
        ids=ids,
    )
    if len(rows) != len(ids):
        raise NotFoundError("ledger account missing")
    return {row[0]: Balance(row[0], row[1], row[2]) for row in rows}


# What a system transfer (a deduction, a correction) fills in: no payment method, reference,
# reversal or memo. Debit, credit and amount sit at the same places as in TRANSFER_COLUMNS.
SYSTEM_TRANSFER_COLUMNS = tuple(
    c for c in TRANSFER_COLUMNS if c not in ("method", "reference", "reverses_id", "memo")
)
TransferRow = tuple[Any, ...]  # in TRANSFER_COLUMNS or SYSTEM_TRANSFER_COLUMNS order
_DEBIT, _CREDIT, _AMOUNT = (
    TRANSFER_COLUMNS.index(c) for c in ("debit_account_id", "credit_account_id", "amount_fen")
)
assert all(SYSTEM_TRANSFER_COLUMNS[i] == TRANSFER_COLUMNS[i] for i in (_DEBIT, _CREDIT, _AMOUNT))


def apply_transfers(
    conn: Connection,
    requests: Sequence[TransferRequest],
    balances: dict[int, Balance] | None = None,
) -> None:
    """Insert the transfers and move each balance once by its net change. ``balances`` (from
    :func:`lock_balances`), when given, is updated to the balances as stored afterwards.

    A key (or a reversal of the same transfer) committed by a concurrent transaction after the
    caller checked it is a clear refusal, not the database's error: the insert runs in a
    savepoint, so what the other transaction stored can be read to say which. (Desk operations
    only; ingest's keys are its own.)"""
    try:
        with conn.begin_nested():
            _apply(conn, TRANSFER_COLUMNS, [_row(request) for request in requests], balances)
    except (IntegrityError, conn.dialect.loaded_dbapi.IntegrityError):  # bulk_insert: the driver's
        refusal = _taken(conn, requests)
        if refusal is None:
            raise
        raise refusal from None


# Messages name no key: the stored key is internal (the desk's keys carry the organisation, derived
# ones a purpose), and naming it showed an operator a key they never typed ('1:my-first-recharge').
KEY_CONFLICT = "this idempotency key was already used for a different request"


def _taken(conn: Connection, requests: Sequence[TransferRequest]) -> ConflictError | None:
    """Why the insert conflicted with a committed transfer, or None if none explains it."""
    stored = find_by_keys(conn, [request.idempotency_key for request in requests])
    for request in requests:
        found = stored.get(request.idempotency_key)
        if found is None:
            continue
        if found["request_hash"] != request.request_hash():
            return IdempotencyConflictError(KEY_CONFLICT)
        return ConflictError(
            "this idempotency key was used by the same request sent at the same time; send it "
            "again for its result"
        )
    reversed_ids = [request.reverses_id for request in requests if request.reverses_id]
    already = conn.execute(
        select(transfers.c.reverses_id).where(transfers.c.reverses_id.in_(reversed_ids))
    ).first()
    if already is not None:
        return ConflictError(f"transfer {already[0]} was already reversed")
    return None


def apply_system_rows(
    conn: Connection, rows: Sequence[TransferRow], balances: dict[int, Balance] | None = None
) -> None:
    """:func:`apply_transfers` for rows of :func:`system_transfer_row` — how ingest posts its
    many deductions without building a request object for each, and without binding the
    columns a system transfer leaves empty (a quarter less insert time)."""
    _apply(conn, SYSTEM_TRANSFER_COLUMNS, rows, balances)


def _apply(
    conn: Connection,
    columns: Sequence[str],
    rows: Sequence[TransferRow],
    balances: dict[int, Balance] | None,
) -> None:
    if not rows:
        return
    changes: dict[int, int] = defaultdict(int)
    for row in rows:
        changes[row[_DEBIT]] -= row[_AMOUNT]
        changes[row[_CREDIT]] += row[_AMOUNT]
    current = balances if balances is not None else lock_balances(conn, changes)
    for account_id, change in changes.items():
        balance = current[account_id]
        if (
            balance.floor_fen is not None
            and change < 0
            and balance.balance_fen + change < balance.floor_fen
        ):
            raise InsufficientFundsError(
                f"ledger account {account_id} would fall to {balance.balance_fen + change} fen, "
                f"below its floor of {balance.floor_fen} fen"
            )
    bulk_insert(conn, transfers, columns, rows)
    moves = [
        (current[i].balance_fen + change, i) for i, change in sorted(changes.items()) if change
    ]
    bulk_update(conn, ledger_accounts, ("id",), ("balance_fen",), moves)
    for balance_fen, account_id in moves:  # the caller's balances now read as stored
        current[account_id] = Balance(account_id, balance_fen, current[account_id].floor_fen)


def system_transfer_row(
    organisation_id: int,
    idempotency_key: str,
    debit_account_id: int,
    credit_account_id: int,
    amount_fen: int,
    reason: str,
    actor: str,
    created_at: int,
    account_id: int | None,
    meter_id: int | None,
    period_key: str | None,
) -> TransferRow:
    """The stored row of a system transfer (in SYSTEM_TRANSFER_COLUMNS order), checked as
    :class:`TransferRequest` checks its fields; ``reason`` is a :class:`Reason`'s value and
    ``created_at`` in stored form (:func:`~meterdesk.db.types.instant_int`). Its request hash is
    the one a :class:`TransferRequest` with the same fields would have. (Positional arguments:
    ingest builds one row per posting.)"""
    if amount_fen <= 0:
        raise ValueError(f"transfer amount must be positive, got {amount_fen} fen")
    if debit_account_id == credit_account_id:
        raise ValueError("a transfer needs two different accounts")
    if not idempotency_key:
        raise ValueError("a transfer needs an idempotency key")
    reason = str(reason)  # a Reason member's repr would change the hash
    return (
        organisation_id,
        idempotency_key,
        system_request_hash(
            organisation_id,
            debit_account_id,
            credit_account_id,
            amount_fen,
            reason,
            account_id,
            meter_id,
            period_key,
        ),
        debit_account_id,
        credit_account_id,
        amount_fen,
        reason,
        account_id,
        meter_id,
        period_key,
        actor,
        created_at,
    )


def _row(request: TransferRequest) -> TransferRow:
    return (
        request.organisation_id,
        request.idempotency_key,
        request.request_hash(),
        request.debit_account_id,
        request.credit_account_id,
        request.amount_fen,
        str(request.reason),
        request.account_id,
        request.meter_id,
        request.period_key,
        request.method,
        request.reference,
        request.reverses_id,
        request.actor,
        request.memo,
        instant_int(request.created_at),
    )


def find_by_keys(conn: Connection, keys: Sequence[str]) -> dict[str, dict[str, object]]:
    if not keys:
        return {}
    rows = (
        conn.execute(select(transfers).where(transfers.c.idempotency_key.in_(list(keys))))
        .mappings()
        .all()
    )
    return {str(row["idempotency_key"]): dict(row) for row in rows}
