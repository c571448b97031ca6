"""Money back out at the desk: a refund (退费) of wallet credit to the tenant, and the reversal
(冲正) of a desk entry made in error (a recharge or a refund) by a new, opposite transfer. Both are
idempotent like a recharge (:mod:`meterdesk.billing.cashier`) and audited, and, like it, run the
control loop on the balance they leave.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select

from meterdesk.audit import service as audit
from meterdesk.billing import control, control_state, quantity
from meterdesk.billing.cashier import (
    MEMO_LENGTH,
    MoneyResult,
    audit_desk_money,
    clearing_account,
    desk_key,
    desk_text,
    desk_transfer,
    load_account,
    money_result,
    payment_method,
    tell,
)
from meterdesk.billing.control_send import Outbox
from meterdesk.billing.model import AccountStatus, BillingMode
from meterdesk.billing.outbox import DatabaseOutbox
from meterdesk.billing.policy import Cause
from meterdesk.billing.quantity_model import CreditUnit
from meterdesk.db.database import Database
from meterdesk.ledger import repository as ledger
from meterdesk.ledger import service as ledger_service
from meterdesk.ledger.model import Reason
from meterdesk.ledger.tables import transfers
from meterdesk.shared.errors import (
    ConflictError,
    InsufficientFundsError,
    NotFoundError,
    ValidationError,
)
from meterdesk.shared.money import from_fen, parse_positive_money, to_fen


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
    payment = payment_method(method)
    with db.transaction() as conn:
        account = load_account(conn, organisation_id, account_id)
        clearing = clearing_account(conn, organisation_id, payment, at)
        request, replay = desk_transfer(
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
            return money_result(conn, account, replay, True)
        if account["status"] != AccountStatus.OPEN.value:
            raise ConflictError(
                f"account {account['number']} is closed: what was left was refunded on closing"
            )
        # Emergency credit still owed is the operator's loan: never paid out as cash.
        owed, _, _ = control_state.load_state(conn, account_id)
        # Read under the wallet's lock (PostgreSQL): a deduction committed after an unlocked
        # read would let the refund pay out the overdraft.
        wallet_id = request.debit_account_id
        balance = ledger.lock_balances(conn, [wallet_id])[wallet_id].balance_fen
        balance -= owed.emergency_outstanding_fen
        on_meter = 0
        if account["billing_mode"] == BillingMode.METER.value:
            # 表端计费: the wallet is never deducted; what was pushed is the meter's to spend.
            from meterdesk.devices import reconcile

            on_meter = reconcile.money_on_meter_fen(conn, organisation_id, account_id)
            balance -= on_meter
        if fen > balance:
            raise InsufficientFundsError(
                f"only {from_fen(max(balance, 0))} can be refunded; {from_fen(fen)} was asked"
                + (
                    f" ({from_fen(on_meter)} is on the meter or on its way there, which keeps "
                    "and spends it)"
                    if on_meter
                    else ""
                )
            )
        posted = ledger_service.post(conn, request)
        if account["credit_unit"] == CreditUnit.QUANTITY.value:  # 购量: the quantity goes too
            quantity.refund_in(
                conn,
                account_id=account_id,
                transfer_id=posted.transfer_id,
                money=from_fen(fen),
                at=at,
            )
        sender = outbox or DatabaseOutbox(lambda: at)
        tell(conn, sender, account, "refund", f"refund:{posted.transfer_id}", fen, at)
        _decide(conn, account_id, Cause.DEDUCTION, sender, at)
        audit_desk_money(
            conn,
            action="money.refund",
            account=account,
            fen=fen,
            payment=payment,
            transfer_id=posted.transfer_id,
            actor=actor,
            at=at,
        )
        return money_result(conn, account, posted.transfer_id, False)


def reverse(
    db: Database,
    *,
    organisation_id: int,
    transfer_id: int,
    actor: str,
    idempotency_key: str,
    memo: str | None = None,
    outbox: Outbox | None = None,
) -> int:
    """Reverse a desk entry (a recharge, refund or arrears payment made in error) with a new,
    opposite transfer. A recharge or refund not once the account is closed: its wallet was
    settled, so reversing a recharge would take it below zero after the refund paid that money
    out, and reversing a refund would leave money in a wallet nobody can pay out. Arrears paid
    after a closing (:mod:`meterdesk.billing.cashier_arrears`) are owed again. A repeated request
    still answers the first reversal."""
    desk_text(memo, "memo", MEMO_LENGTH)
    at = db.clock()
    with db.transaction() as conn:
        entry = conn.execute(
            select(transfers.c.reason, transfers.c.account_id, transfers.c.method).where(
                transfers.c.id == transfer_id, transfers.c.organisation_id == organisation_id
            )
        ).one_or_none()
        if entry is None:
            raise NotFoundError(f"transfer {transfer_id} not found")
        reason = entry.reason
        # Arrears paid at the desk after a closing (cashier_arrears) carry their payment method;
        # the repayments a recharge or deduction makes by itself do not, and are never undone
        # alone.
        arrears_paid = reason == Reason.ARREARS_REPAYMENT.value and entry.method is not None
        if reason not in (Reason.RECHARGE.value, Reason.REFUND.value) and not arrears_paid:
            raise ConflictError(
                "only recharges, refunds and arrears paid at the desk can be reversed at the "
                f"desk, not a {reason}"
            )
        # Locked like every desk operation: a close (or a second reversal of the same entry)
        # waits for this one, so it settles the wallet as reversed, not the balance before.
        account = load_account(conn, organisation_id, int(entry.account_id))
        closed = account["status"] != AccountStatus.OPEN.value
        try:
            posted = ledger_service.reverse(
                conn,
                organisation_id=organisation_id,
                transfer_id=transfer_id,
                actor=actor,
                idempotency_key=desk_key(organisation_id, idempotency_key),
                at=at,
                memo=memo,
                refusal=f"account {account['number']} is closed: its credit was settled on closing"
                if closed and not arrears_paid
                else None,
            )
        except InsufficientFundsError:
            if reason != Reason.RECHARGE.value:
                raise
            # Refused before anything was written (the ledger checks floors first); say it in
            # the desk's words, not the ledger's ("ledger account 17 would fall to -1000 fen").
            raise _partly_spent(conn, account, transfer_id) from None
        if posted.replayed:
            return posted.transfer_id
        if arrears_paid:  # a closed account: the debt is owed again, nothing to decide
            if account["credit_unit"] == CreditUnit.QUANTITY.value:  # and the quantity ahead
                quantity.arrears_payment_reversed_in(
                    conn,
                    account_id=int(entry.account_id),
                    paid_id=transfer_id,
                    transfer_id=posted.transfer_id,
                    at=at,
                )
            _audit_reversal(conn, organisation_id, actor, transfer_id, posted.transfer_id, at)
            return posted.transfer_id
        if reason == Reason.RECHARGE.value and account["billing_mode"] == BillingMode.METER.value:
            from meterdesk.devices import reconcile

            reconcile.withdraw_push(
                conn,
                organisation_id=organisation_id,
                transfer_id=transfer_id,
                why=f"recharge reversed by transfer {posted.transfer_id}",
                at=at,
            )
        if account["credit_unit"] == CreditUnit.QUANTITY.value:
            _reverse_quantity(conn, account, transfer_id, posted.transfer_id, reason, at)
        # Money back in (a refund reversed) re-arms alarms and may restore, as a recharge does;
        # money out (a recharge reversed) may warn or cut, as a deduction does.
        cause = Cause.RECHARGE if reason == Reason.REFUND.value else Cause.DEDUCTION
        _decide(conn, int(entry.account_id), cause, outbox or DatabaseOutbox(lambda: at), at)
        _audit_reversal(conn, organisation_id, actor, transfer_id, posted.transfer_id, at)
        return posted.transfer_id


def _partly_spent(
    conn: Connection, account: dict[str, object], transfer_id: int
) -> InsufficientFundsError:
    """A recharge can be reversed only while its money is still in the wallet; once some was
    spent, the clerk refunds what is left instead. A quantity account says it in quantity when
    that is the reason (part of the recharge's own lots used or refunded)."""
    amount = conn.execute(
        select(transfers.c.amount_fen).where(transfers.c.id == transfer_id)
    ).scalar_one()
    if account["credit_unit"] == CreditUnit.QUANTITY.value:
        why = quantity.recharge_refusal(
            conn,
            account_id=int(str(account["id"])),
            recharge_id=transfer_id,
            number=str(account["number"]),
        )
        if why is not None:
            return InsufficientFundsError(
                f"recharge {transfer_id} of {from_fen(amount)} cannot be reversed: {why}"
            )
    wallet_id = int(str(account["wallet_id"]))
    held = ledger.lock_balances(conn, [wallet_id])[wallet_id]
    floor = f" (its overdraft floor is {from_fen(held.floor_fen)})" if held.floor_fen else ""
    return InsufficientFundsError(
        f"recharge {transfer_id} of {from_fen(amount)} cannot be reversed: account "
        f"{account['number']} holds {from_fen(held.balance_fen)}{floor}, so part of the recharge "
        "was already used; refund what is left instead"
    )


def _reverse_quantity(
    conn: Connection,
    account: dict[str, object],
    reversed_id: int,
    transfer_id: int,
    reason: str,
    at: datetime,
) -> None:
    """购量: a recharge reversed takes back exactly the lots it bought, at their own prices (the
    other lots stay as they are), refused — rolling back the posting — once part of them is used
    or refunded; a refund reversed puts back the lots and carried money it took, at their own
    prices (not bought again at today's: refund and reversal leave the account as it was)."""
    account_id = int(str(account["id"]))
    if reason == Reason.RECHARGE.value:
        if quantity.recharge_refusal(
            conn, account_id=account_id, recharge_id=reversed_id, number=str(account["number"])
        ):
            raise _partly_spent(conn, account, reversed_id)
        amount = from_fen(
            conn.execute(
                select(transfers.c.amount_fen).where(transfers.c.id == reversed_id)
            ).scalar_one()
        )
        try:
            quantity.reverse_recharge_in(
                conn,
                account_id=account_id,
                recharge_id=reversed_id,
                transfer_id=transfer_id,
                money=amount,
                at=at,
            )
        except ValidationError as short:  # the carried money it left is gone, nothing covers it
            raise InsufficientFundsError(
                f"recharge {reversed_id} of {amount} cannot be reversed: {short}; refund what is "
                "left instead"
            ) from None
    else:
        quantity.restore_refund_in(
            conn, account_id=account_id, refund_id=reversed_id, transfer_id=transfer_id, at=at
        )


def _audit_reversal(
    conn: Connection,
    organisation_id: int,
    actor: str,
    transfer_id: int,
    reversal: int,
    at: datetime,
) -> None:
    audit.record(
        conn,
        organisation_id=organisation_id,
        actor=actor,
        action="money.reverse",
        subject=f"transfer:{transfer_id}",
        at=at,
        detail={"reversal": reversal},
    )


def _decide(conn: Connection, account_id: int, cause: Cause, outbox: Outbox, at: datetime) -> None:
    """The control loop on the balance this desk entry left (in its transaction, under the
    balances' locks): a refund or a reversed recharge can take the balance to an alarm level or
    the cut threshold, a reversed refund above the restore threshold — decided now, not at the
    next reading or tick."""
    control.evaluate_in(
        conn,
        balances=control.net_balances(conn, [account_id], lock=True),
        at=at,
        cause=cause,
        outbox=outbox,
    )
