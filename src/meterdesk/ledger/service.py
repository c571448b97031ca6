"""Ledger use cases that work inside a caller's transaction: idempotent posting, reversal, and
reading balances and statements. Callers (recharge, refund, deduction) own the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, or_, select

from meterdesk.db.types import instant_int
from meterdesk.ledger import repository
from meterdesk.ledger.model import Reason, TransferRequest
from meterdesk.ledger.tables import ledger_accounts, transfers
from meterdesk.shared.errors import ConflictError, IdempotencyConflictError, NotFoundError


@dataclass(frozen=True)
class Posted:
    transfer_id: int
    replayed: bool  # True when the key had already been used for this very request


def post(conn: Connection, request: TransferRequest) -> Posted:
    """Post one transfer exactly once per idempotency key."""
    existing = repository.find_by_keys(conn, [request.idempotency_key]).get(request.idempotency_key)
    if existing is not None:
        if existing["request_hash"] != request.request_hash():
            raise IdempotencyConflictError(repository.KEY_CONFLICT)
        return Posted(int(str(existing["id"])), replayed=True)
    repository.apply_transfers(conn, [request])
    new_id = conn.execute(
        select(transfers.c.id).where(transfers.c.idempotency_key == request.idempotency_key)
    ).scalar_one()
    return Posted(int(new_id), replayed=False)


def replayed_transfer(conn: Connection, *, idempotency_key: str, request_hash: str) -> int | None:
    """The transfer already posted under this key for the same request, or None if the key is
    unused; a conflict if the key was used for something else."""
    existing = repository.find_by_keys(conn, [idempotency_key]).get(idempotency_key)
    if existing is None:
        return None
    if existing["request_hash"] != request_hash:
        raise IdempotencyConflictError(repository.KEY_CONFLICT)
    return int(str(existing["id"]))


def reverse(
    conn: Connection,
    *,
    organisation_id: int,
    transfer_id: int,
    actor: str,
    idempotency_key: str,
    at: datetime,
    memo: str | None = None,
    refusal: str | None = None,
) -> Posted:
    """The opposite transfer, once per key and once per transfer. With ``refusal``, a new
    reversal is refused with that reason, while the same request already posted still answers
    its first result."""
    original = (
        conn.execute(
            select(transfers).where(
                transfers.c.id == transfer_id, transfers.c.organisation_id == organisation_id
            )
        )
        .mappings()
        .one_or_none()
    )
    if original is None:
        raise NotFoundError(f"transfer {transfer_id} not found")
    if original["reason"] == Reason.REVERSAL.value:
        raise ConflictError("a reversal cannot itself be reversed; post a new transfer instead")
    request = TransferRequest(
        organisation_id=organisation_id,
        idempotency_key=idempotency_key,
        debit_account_id=int(original["credit_account_id"]),
        credit_account_id=int(original["debit_account_id"]),
        amount_fen=int(original["amount_fen"]),
        reason=Reason.REVERSAL,
        actor=actor,
        created_at=at,
        account_id=original["account_id"],
        meter_id=original["meter_id"],
        period_key=original["period_key"],
        method=original["method"],
        reverses_id=transfer_id,
        memo=memo or f"reversal of transfer {transfer_id}",
    )
    replay = replayed_transfer(
        conn, idempotency_key=idempotency_key, request_hash=request.request_hash()
    )
    if replay is not None:
        return Posted(replay, replayed=True)
    if refusal is not None:
        raise ConflictError(refusal)
    already = conn.execute(
        select(transfers.c.id).where(transfers.c.reverses_id == transfer_id)
    ).scalar_one_or_none()
    if already is not None:
        raise ConflictError(f"transfer {transfer_id} was already reversed by transfer {already}")
    return post(conn, request)


def balance_fen(conn: Connection, account_id: int) -> int:
    return int(
        conn.execute(
            select(ledger_accounts.c.balance_fen).where(ledger_accounts.c.id == account_id)
        ).scalar_one()
    )


def balance_before(conn: Connection, account_id: int, before: datetime) -> int:
    """Balance from the entries strictly before an instant (credits minus debits).

    Worked back from the stored balance, which always equals the net of the account's entries
    (apply_transfers moves both together): summing forwards read the account's whole history
    for a 30-day chart. Read the balance and the entries in one snapshot (Database.snapshot),
    or an entry committed between the two reads counts twice. Bounded by time, not by id:
    created_at does not follow id order (a repayment reuses an earlier instant)."""
    cutoff = instant_int(before)
    credits = conn.execute(
        select(func.coalesce(func.sum(transfers.c.amount_fen), 0)).where(
            transfers.c.credit_account_id == account_id, transfers.c.created_at >= cutoff
        )
    ).scalar_one()
    debits = conn.execute(
        select(func.coalesce(func.sum(transfers.c.amount_fen), 0)).where(
            transfers.c.debit_account_id == account_id, transfers.c.created_at >= cutoff
        )
    ).scalar_one()
    return balance_fen(conn, account_id) - (int(credits) - int(debits))


def entries_between(
    conn: Connection, account_ids: list[int], start: datetime, end: datetime
) -> list[dict[str, object]]:
    rows = (
        conn.execute(
            select(transfers)
            .where(
                or_(
                    transfers.c.debit_account_id.in_(account_ids),
                    transfers.c.credit_account_id.in_(account_ids),
                ),
                transfers.c.created_at >= instant_int(start),
                transfers.c.created_at < instant_int(end),
            )
            .order_by(transfers.c.created_at, transfers.c.id)
        )
        .mappings()
        .all()
    )
    return [dict(row) for row in rows]
