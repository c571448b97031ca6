"""Money at the desk: recharge (充值/售电), and what the other desk operations share.

Every desk call carries an idempotency key: the same key with the same request returns the first
result without moving money again; the same key with a different request is refused. A recharge
repays emergency credit (应急用电) still owed first, then arrears, and the rest is credit
(:mod:`meterdesk.billing.cashier_repay`).

The desk's other operations live beside this module and use its helpers (the account row, the
payment method, the desk transfer, the result and the tenant's message): refunds and reversals in
:mod:`meterdesk.billing.cashier_refund`, settlement on closing in
:mod:`meterdesk.billing.cashier_settle`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, select

from meterdesk.audit import service as audit
from meterdesk.billing import control, quantity
from meterdesk.billing.cashier_repay import repay_arrears, repay_emergency
from meterdesk.billing.control_send import Outbox
from meterdesk.billing.model import AccountStatus, BillingMode
from meterdesk.billing.outbox import DatabaseOutbox
from meterdesk.billing.policy import Cause
from meterdesk.billing.quantity import QuantityView
from meterdesk.billing.quantity_model import CreditUnit, hundredths, hundredths_text
from meterdesk.billing.tables import accounts
from meterdesk.db.database import Database
from meterdesk.ledger import repository as ledger
from meterdesk.ledger import service as ledger_service
from meterdesk.ledger.model import AccountKind, PaymentMethod, Reason, TransferRequest
from meterdesk.shared.errors import ConflictError, NotFoundError, ValidationError
from meterdesk.shared.money import from_fen, parse_positive_money, to_fen


@dataclass(frozen=True)
class MoneyResult:
    transfer_id: int
    replayed: bool
    balance: Decimal  # wallet balance after
    arrears: Decimal  # what is still owed (≥ 0)
    quantity: QuantityView | None = None  # a quantity account's (购量) lots after it


def clearing_account(
    conn: Connection, organisation_id: int, method: PaymentMethod, at: datetime
) -> int:
    """The organisation's clearing account for a payment method (created on first use): where
    desk money comes from on a recharge and goes to on a refund or settlement."""
    return ledger.system_account(
        conn,
        organisation_id=organisation_id,
        code=f"clearing:{method.value}",
        kind=AccountKind.CLEARING,
        at=at,
    )


def audit_desk_money(
    conn: Connection,
    *,
    action: str,
    account: dict[str, object],
    fen: int,
    payment: PaymentMethod,
    transfer_id: int,
    actor: str,
    at: datetime,
) -> None:
    """The audit entry of a desk recharge or refund: who moved how much, by which method."""
    audit.record(
        conn,
        organisation_id=int(str(account["organisation_id"])),
        actor=actor,
        action=action,
        subject=f"account:{account['number']}",
        at=at,
        detail={"amount": str(from_fen(fen)), "method": payment.value, "transfer": transfer_id},
    )


KEY_LENGTH = 150  # as the API's Idempotency-Key header; room left for derived keys (200)


def desk_key(organisation_id: int, key: str) -> str:
    """The stored key of a desk transfer: the operator's key within the organisation."""
    if not key or len(key) > KEY_LENGTH:
        raise ValidationError(f"key: give 1 to {KEY_LENGTH} characters (a receipt or order number)")
    return f"{organisation_id}:{key}"


REFERENCE_LENGTH = 200  # transfers.reference, as the API's MoneyIn.reference
MEMO_LENGTH = 300  # as the API's ReversalIn.memo (transfers.memo holds 500)


def desk_text(value: str | None, field: str, limit: int) -> str | None:
    """A receipt reference or memo from the CLI held to the API's limit: a longer one was
    stored as it was on SQLite and a DataError traceback on PostgreSQL."""
    if value is not None and len(value) > limit:
        raise ValidationError(f"{field}: at most {limit} characters")
    return value


def payment_method(value: str) -> PaymentMethod:
    try:
        return PaymentMethod(value)
    except ValueError:
        raise ValidationError(
            f"method: {value!r} is not one of {', '.join(m.value for m in PaymentMethod)}"
        ) from None


def load_account(conn: Connection, organisation_id: int, account_id: int) -> dict[str, object]:
    """The account row, locked on PostgreSQL until the transaction ends: a desk operation and a
    closing of the same account run one after the other, so none acts on a status or balance
    the other is changing (money in a closed wallet)."""
    row = (
        conn.execute(
            select(accounts)
            .where(accounts.c.id == account_id, accounts.c.organisation_id == organisation_id)
            .with_for_update(key_share=True)
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFoundError(f"account {account_id} not found")
    return dict(row)


def money_result(
    conn: Connection, account: dict[str, object], transfer_id: int, replayed: bool
) -> MoneyResult:
    wallet = ledger_service.balance_fen(conn, int(str(account["wallet_id"])))
    arrears = ledger_service.balance_fen(conn, int(str(account["arrears_id"])))
    held = (
        quantity.view(conn, int(str(account["id"])))
        if account["credit_unit"] == CreditUnit.QUANTITY.value
        else None
    )
    return MoneyResult(transfer_id, replayed, from_fen(wallet), from_fen(-arrears), held)


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


def desk_transfer(
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
    """The transfer of a desk recharge (clearing → wallet), refund (wallet → clearing) or
    arrears payment after a closing (clearing → arrears, :mod:`~meterdesk.billing.cashier_arrears`),
    and the id of the transfer already posted under the same key for the same request (a
    replay)."""
    arrears = reason is Reason.ARREARS_REPAYMENT
    own = int(str(account["arrears_id" if arrears else "wallet_id"]))  # the account's side
    inbound = reason is Reason.RECHARGE or arrears
    organisation_id = int(str(account["organisation_id"]))
    request = TransferRequest(
        organisation_id=organisation_id,
        idempotency_key=desk_key(organisation_id, key),
        debit_account_id=clearing if inbound else own,
        credit_account_id=own if inbound else clearing,
        amount_fen=fen,
        reason=reason,
        actor=actor,
        created_at=at,
        account_id=int(str(account["id"])),
        method=payment.value,
        reference=desk_text(reference, "reference", REFERENCE_LENGTH),
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
    payment = payment_method(method)
    account = load_account(conn, organisation_id, account_id)
    clearing = clearing_account(conn, organisation_id, payment, at)
    request, replay = desk_transfer(
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
        return money_result(conn, account, replay, True)
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
    # Emergency credit first ("repaid first by the next recharge"), then arrears.
    repay_emergency(conn, account, request)
    repay_arrears(conn, account, request)
    if account["credit_unit"] == CreditUnit.QUANTITY.value:
        # 购量: the money buys quantity at today's price (overdraft bought back first)
        quantity.buy(
            conn, account_id=account_id, transfer_id=posted.transfer_id, money=from_fen(fen), at=at
        )
    sender = outbox or DatabaseOutbox(lambda: at)
    tell(conn, sender, account, "recharge_credited", f"recharge:{posted.transfer_id}", fen, at)
    control.evaluate_in(
        conn,
        balances=control.net_balances(conn, [account_id]),
        at=at,
        cause=Cause.RECHARGE,
        outbox=sender,
    )
    audit_desk_money(
        conn,
        action="money.recharge",
        account=account,
        fen=fen,
        payment=payment,
        transfer_id=posted.transfer_id,
        actor=actor,
        at=at,
    )
    return money_result(conn, account, posted.transfer_id, False)


def tell(
    conn: Connection,
    outbox: Outbox,
    account: dict[str, object],
    event: str,
    key: str,
    fen: int,
    at: datetime,
) -> None:
    """Queue a money message for the tenant (recharge credited, refund) with the new balance —
    for a quantity account (购量) the quantity left and its unit instead, as its alarms say."""
    params: dict[str, object] = {"amount": str(from_fen(fen)), "at": at.isoformat()}
    if account["credit_unit"] == CreditUnit.QUANTITY.value:
        held = quantity.view(conn, int(str(account["id"])))
        # hundredths of the unit, as the alarms count
        params.update(quantity_left=hundredths_text(hundredths(held.left)), unit=held.unit)
    else:
        balance = ledger_service.balance_fen(conn, int(str(account["wallet_id"])))
        params["balance"] = str(from_fen(balance))
    outbox.message(
        conn,
        organisation_id=int(str(account["organisation_id"])),
        account_id=int(str(account["id"])),
        event=event,
        key=key,
        params=params,
        channels=None,
    )
