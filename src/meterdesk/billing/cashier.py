"""Money at the desk: recharge (充值/售电), refund (退费), settlement on closing, and reversal of
a mistaken entry (冲正). Every call carries an idempotency key: the same key with the same request
returns the first result without moving money again; the same key with a different request is
refused. A recharge repays arrears first, then the rest is credit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, select

from meterdesk.audit import service as audit
from meterdesk.billing import control
from meterdesk.billing.control import Outbox
from meterdesk.billing.model import AccountStatus, BillingMode
from meterdesk.billing.outbox import DatabaseOutbox
from meterdesk.billing.policy import Cause, emergency_repayment
from meterdesk.billing.tables import accounts
from meterdesk.db.database import Database
from meterdesk.ledger import repository as ledger
from meterdesk.ledger import service as ledger_service
from meterdesk.ledger.model import (
    AccountKind,
    PaymentMethod,
    Reason,
    TransferRequest,
    arrears_repayment,
)
from meterdesk.ledger.tables import transfers
from meterdesk.shared.errors import (
    ConflictError,
    InsufficientFundsError,
    NotFoundError,
    ValidationError,
)
from meterdesk.shared.money import from_fen, parse_positive_money, to_fen


@dataclass(frozen=True)
class MoneyResult:
    transfer_id: int
    replayed: bool
    balance: Decimal  # wallet balance after
    arrears: Decimal  # what is still owed (≥ 0)


def clearing_code(method: PaymentMethod) -> str:
    return f"clearing:{method.value}"


def _method(value: str) -> PaymentMethod:
    try:
        return PaymentMethod(value)
    except ValueError:
        raise ValidationError(
            f"method: {value!r} is not one of {', '.join(m.value for m in PaymentMethod)}"
        ) from None


def _account(conn: Connection, organisation_id: int, account_id: int) -> dict[str, object]:
    row = (
        conn.execute(
            select(accounts).where(
                accounts.c.id == account_id, accounts.c.organisation_id == organisation_id
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFoundError(f"account {account_id} not found")
    return dict(row)


def _result(
    conn: Connection, account: dict[str, object], transfer_id: int, replayed: bool
) -> MoneyResult:
    wallet = ledger_service.balance_fen(conn, int(str(account["wallet_id"])))
    arrears = ledger_service.balance_fen(conn, int(str(account["arrears_id"])))
    return MoneyResult(transfer_id, replayed, from_fen(wallet), from_fen(-arrears))


def recharge(
    db: Database,
    *,
    organisation_id: int,
    account_id: int,
    amount: object,
    method: str,
    actor: str,
    idempotency_key: str,
    reference: str | None = None,
    outbox: Outbox | None = None,
) -> MoneyResult:
    with db.transaction() as conn:
        return recharge_in(
            conn,
            organisation_id=organisation_id,
            account_id=account_id,
            amount=amount,
            method=method,
            actor=actor,
            at=db.clock(),
            idempotency_key=idempotency_key,
            reference=reference,
            outbox=outbox,
        )


def _desk_transfer(
    conn: Connection,
    account: dict[str, object],
    clearing: int,
    fen: int,
    reason: Reason,
    payment: PaymentMethod,
    *,
    actor: str,
    at: datetime,
    key: str,
    reference: str | None,
) -> tuple[TransferRequest, int | None]:
    """The transfer of a desk recharge (clearing → wallet) or refund (wallet → clearing), and the
    id of the transfer already posted under the same key for the same request (a replay)."""
    wallet = int(str(account["wallet_id"]))
    inbound = reason is Reason.RECHARGE
    organisation_id = int(str(account["organisation_id"]))
    request = TransferRequest(
        organisation_id=organisation_id,
        idempotency_key=f"{organisation_id}:{key}",
        debit_account_id=clearing if inbound else wallet,
        credit_account_id=wallet if inbound else clearing,
        amount_fen=fen,
        reason=reason,
        actor=actor,
        created_at=at,
        account_id=int(str(account["id"])),
        method=payment.value,
        reference=reference,
    )
    replay = ledger_service.replayed_transfer(
        conn, idempotency_key=request.idempotency_key, request_hash=request.request_hash()
    )
    return request, replay


def recharge_in(
    conn: Connection,
    *,
    organisation_id: int,
    account_id: int,
    amount: object,
    method: str,
    actor: str,
    at: datetime,
    idempotency_key: str,
    reference: str | None = None,
    outbox: Outbox | None = None,
) -> MoneyResult:
    """Credit the wallet, repay emergency credit then arrears, and let the control loop decide
    (a restore when the balance rose above the threshold) — all in the caller's transaction."""
    fen = to_fen(parse_positive_money(amount, field="amount"))
    payment = _method(method)
    account = _account(conn, organisation_id, account_id)
    clearing = ledger.system_account(
        conn,
        organisation_id=organisation_id,
        code=clearing_code(payment),
        kind=AccountKind.CLEARING,
        at=at,
    )
    request, replay = _desk_transfer(
        conn,
        account,
        clearing,
        fen,
        Reason.RECHARGE,
        payment,
        actor=actor,
        at=at,
        key=idempotency_key,
        reference=reference,
    )
    if replay is not None:
        return _result(conn, account, replay, True)
    if account["status"] != AccountStatus.OPEN.value:
        raise ConflictError(f"account {account['number']} is closed")
    posted = ledger_service.post(conn, request)
    if account["billing_mode"] == BillingMode.METER.value:
        # 表端计费: the money must reach the meter; the push carries the next purchase count, so
        # it can never be applied twice (devices.reconcile).
        from meterdesk.devices import reconcile

        reconcile.push_recharge_in(
            conn,
            transfer_id=posted.transfer_id,
            actor=actor,
            at=at,
            organisation_id=organisation_id,
        )
    _repay_emergency(conn, account, request)
    _repay_arrears(conn, account, request)
    sender = outbox or DatabaseOutbox(lambda: at)
    _tell(conn, sender, account, "recharge_credited", f"recharge:{posted.transfer_id}", fen, at)
    control.evaluate_in(
        conn,
        balances=control.net_balances(conn, [account_id]),
        at=at,
        cause=Cause.RECHARGE,
        outbox=sender,
    )
    audit.record(
        conn,
        organisation_id=organisation_id,
        actor=actor,
        action="money.recharge",
        subject=f"account:{account['number']}",
        at=at,
        detail={
            "amount": str(from_fen(fen)),
            "method": payment.value,
            "transfer": posted.transfer_id,
        },
    )
    return _result(conn, account, posted.transfer_id, False)


def _tell(
    conn: Connection,
    outbox: Outbox,
    account: dict[str, object],
    event: str,
    key: str,
    fen: int,
    at: datetime,
) -> None:
    """Queue a money message for the tenant (recharge credited, refund) with the new balance."""
    balance = ledger_service.balance_fen(conn, int(str(account["wallet_id"])))
    outbox.message(
        conn,
        organisation_id=int(str(account["organisation_id"])),
        account_id=int(str(account["id"])),
        event=event,
        key=key,
        params={
            "amount": str(from_fen(fen)),
            "balance": str(from_fen(balance)),
            "at": at.isoformat(),
        },
        channels=None,
    )


def _repay_emergency(conn: Connection, account: dict[str, object], cause: TransferRequest) -> None:
    state, _, _ = control.load_state(conn, int(str(account["id"])))
    amount = emergency_repayment(state, cause.amount_fen)
    if not amount:
        return
    receivable = ledger.system_account(
        conn,
        organisation_id=cause.organisation_id,
        code="receivable:emergency_credit",
        kind=AccountKind.CLEARING,
        at=cause.created_at,
    )
    ledger.apply_transfers(
        conn,
        [
            TransferRequest(
                organisation_id=cause.organisation_id,
                idempotency_key=f"{cause.idempotency_key}:emergency",
                debit_account_id=cause.credit_account_id,
                credit_account_id=receivable,
                amount_fen=amount,
                reason=Reason.EMERGENCY_REPAYMENT,
                actor=cause.actor,
                created_at=cause.created_at,
                account_id=cause.account_id,
                memo="repays emergency credit (应急用电)",
            )
        ],
    )
    control.record_emergency(
        conn,
        account_id=int(str(account["id"])),
        outstanding_fen=state.emergency_outstanding_fen - amount,
        at=cause.created_at,
    )


def _repay_arrears(conn: Connection, account: dict[str, object], cause: TransferRequest) -> None:
    wallet_id, arrears_id = int(str(account["wallet_id"])), int(str(account["arrears_id"]))
    balances = ledger.lock_balances(conn, [wallet_id, arrears_id])
    amount = arrears_repayment(
        wallet_balance_fen=balances[wallet_id].balance_fen,
        arrears_balance_fen=balances[arrears_id].balance_fen,
        floor_fen=balances[wallet_id].floor_fen or 0,
    )
    if amount:
        ledger.apply_transfers(
            conn,
            [
                TransferRequest(
                    organisation_id=cause.organisation_id,
                    idempotency_key=f"{cause.idempotency_key}:repay",
                    debit_account_id=wallet_id,
                    credit_account_id=arrears_id,
                    amount_fen=amount,
                    reason=Reason.ARREARS_REPAYMENT,
                    actor=cause.actor,
                    created_at=cause.created_at,
                    account_id=cause.account_id,
                )
            ],
        )


def refund(
    db: Database,
    *,
    organisation_id: int,
    account_id: int,
    amount: object,
    method: str,
    actor: str,
    idempotency_key: str,
    reference: str | None = None,
    outbox: Outbox | None = None,
) -> MoneyResult:
    at = db.clock()
    fen = to_fen(parse_positive_money(amount, field="amount"))
    payment = _method(method)
    with db.transaction() as conn:
        account = _account(conn, organisation_id, account_id)
        clearing = ledger.system_account(
            conn,
            organisation_id=organisation_id,
            code=clearing_code(payment),
            kind=AccountKind.CLEARING,
            at=at,
        )
        request, replay = _desk_transfer(
            conn,
            account,
            clearing,
            fen,
            Reason.REFUND,
            payment,
            actor=actor,
            at=at,
            key=idempotency_key,
            reference=reference,
        )
        if replay is not None:
            return _result(conn, account, replay, True)
        balance = ledger_service.balance_fen(conn, request.debit_account_id)
        if fen > balance:
            raise InsufficientFundsError(
                f"only {from_fen(max(balance, 0))} can be refunded; {from_fen(fen)} was asked"
            )
        posted = ledger_service.post(conn, request)
        _tell(
            conn,
            outbox or DatabaseOutbox(lambda: at),
            account,
            "refund",
            f"refund:{posted.transfer_id}",
            fen,
            at,
        )
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="money.refund",
            subject=f"account:{account['number']}",
            at=at,
            detail={
                "amount": str(from_fen(fen)),
                "method": payment.value,
                "transfer": posted.transfer_id,
            },
        )
        return _result(conn, account, posted.transfer_id, False)


@dataclass(frozen=True)
class Settlement:
    refunded: Decimal
    arrears: Decimal
    transfer_id: int | None


def settle_in(
    conn: Connection,
    *,
    organisation_id: int,
    account_id: int,
    method: str,
    actor: str,
    at: datetime,
    idempotency_key: str,
) -> Settlement:
    """On closing: refund whatever credit is left; arrears stay owed on the arrears account."""
    account = _account(conn, organisation_id, account_id)
    payment = _method(method)
    wallet_id, arrears_id = int(str(account["wallet_id"])), int(str(account["arrears_id"]))
    wallet = ledger_service.balance_fen(conn, wallet_id)
    transfer_id = None
    if wallet < 0:
        # An allowed overdraft used up at closing becomes arrears to collect.
        ledger.apply_transfers(
            conn,
            [
                TransferRequest(
                    organisation_id=organisation_id,
                    idempotency_key=f"{organisation_id}:{idempotency_key}:overdraft",
                    debit_account_id=arrears_id,
                    credit_account_id=wallet_id,
                    amount_fen=-wallet,
                    reason=Reason.SETTLEMENT,
                    actor=actor,
                    created_at=at,
                    account_id=account_id,
                )
            ],
        )
    elif wallet > 0:
        clearing = ledger.system_account(
            conn,
            organisation_id=organisation_id,
            code=clearing_code(payment),
            kind=AccountKind.CLEARING,
            at=at,
        )
        transfer_id = ledger_service.post(
            conn,
            TransferRequest(
                organisation_id=organisation_id,
                idempotency_key=f"{organisation_id}:{idempotency_key}",
                debit_account_id=wallet_id,
                credit_account_id=clearing,
                amount_fen=wallet,
                reason=Reason.SETTLEMENT,
                actor=actor,
                created_at=at,
                account_id=account_id,
                method=payment.value,
                memo="refund of remaining credit on closing",
            ),
        ).transfer_id
    arrears = ledger_service.balance_fen(conn, arrears_id)
    return Settlement(from_fen(max(wallet, 0)), from_fen(-arrears), transfer_id)


def reverse(
    db: Database,
    *,
    organisation_id: int,
    transfer_id: int,
    actor: str,
    idempotency_key: str,
    memo: str | None = None,
) -> int:
    """Reverse a desk entry (a recharge or refund made in error) with a new, opposite transfer."""
    at = db.clock()
    with db.transaction() as conn:
        reason = conn.execute(
            select(transfers.c.reason).where(
                transfers.c.id == transfer_id, transfers.c.organisation_id == organisation_id
            )
        ).scalar_one_or_none()
        if reason is None:
            raise NotFoundError(f"transfer {transfer_id} not found")
        if reason not in (Reason.RECHARGE.value, Reason.REFUND.value):
            raise ConflictError(
                f"only recharges and refunds can be reversed at the desk, not a {reason}"
            )
        posted = ledger_service.reverse(
            conn,
            organisation_id=organisation_id,
            transfer_id=transfer_id,
            actor=actor,
            idempotency_key=f"{organisation_id}:{idempotency_key}",
            at=at,
            memo=memo,
        )
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="money.reverse",
            subject=f"transfer:{transfer_id}",
            at=at,
            detail={"reversal": posted.transfer_id},
        )
        return posted.transfer_id
