"""Arrears paid at the desk (欠费补缴) after a closing.

Closing an account settles its wallet (F-CLOSE): what is left is refunded; what the wallet could
not cover — usage beyond the credit, an overdraft in use — stays owed on the account's arrears
ledger account. On an open account the next recharge repays arrears first
(:mod:`meterdesk.billing.cashier_repay`), but a closed account takes no recharge, so before this
the debt of a tenant who had moved out could never be collected and stayed on the books for
ever.

A payment moves money from the payment method's clearing account straight to the arrears
account (reason ``arrears_repayment``, the method and reference on the transfer, like a
recharge): the wallet of a closed account stays empty. It is refused on an open account (a
recharge repays arrears first and may restore supply, which a direct payment would bypass), when
nothing is owed, and above what is owed (nothing may be owed *to* a closed account). Idempotent
by the desk key like every desk entry, read under the arrears balance's lock, audited as
``money.arrears_payment``; a payment made in error is undone with ``reverse`` like a recharge.
For a quantity-credit account (购量) the payment also buys back the quantity used ahead that the
debt is, so once nothing is owed nothing reads as used ahead.
"""

from __future__ import annotations

from meterdesk.billing import quantity
from meterdesk.billing.cashier import (
    MoneyResult,
    audit_desk_money,
    clearing_account,
    desk_transfer,
    load_account,
    money_result,
    payment_method,
)
from meterdesk.billing.model import AccountStatus
from meterdesk.billing.quantity_model import CreditUnit
from meterdesk.db.database import Database
from meterdesk.ledger import repository as ledger
from meterdesk.ledger import service as ledger_service
from meterdesk.ledger.model import Reason
from meterdesk.shared.errors import ConflictError
from meterdesk.shared.money import from_fen, parse_positive_money, to_fen


def pay_arrears(
    db: Database,
    *,
    organisation_id: int,
    account_id: int,
    amount: object,
    method: str,
    actor: str,
    idempotency_key: str,
    reference: str | None = None,
) -> MoneyResult:
    at = db.clock()
    fen = to_fen(parse_positive_money(amount, field="amount"))
    payment = payment_method(method)
    with db.transaction() as conn:
        account = load_account(conn, organisation_id, account_id)
        arrears_id = int(str(account["arrears_id"]))
        request, replay = desk_transfer(
            conn,
            account,
            clearing_account(conn, organisation_id, payment, at),
            fen,
            Reason.ARREARS_REPAYMENT,
            payment,
            actor=actor,
            at=at,
            key=idempotency_key,
            reference=reference,
        )
        if replay is not None:
            return money_result(conn, account, replay, True)
        number = account["number"]
        if account["status"] == AccountStatus.OPEN.value:
            raise ConflictError(
                f"account {number} is open: recharge it, a recharge repays its arrears first"
            )
        owed = -ledger.lock_balances(conn, [arrears_id])[arrears_id].balance_fen
        if owed <= 0:
            raise ConflictError(f"account {number} owes nothing")
        if fen > owed:
            raise ConflictError(f"account {number} owes {from_fen(owed)}: pay at most that")
        posted = ledger_service.post(conn, request)
        if account["credit_unit"] == CreditUnit.QUANTITY.value:  # 购量: the used ahead is paid
            quantity.arrears_paid_in(
                conn,
                account_id=account_id,
                transfer_id=posted.transfer_id,
                money=from_fen(fen),
                cleared=fen == owed,
                at=at,
            )
        audit_desk_money(
            conn,
            action="money.arrears_payment",
            account=account,
            fen=fen,
            payment=payment,
            transfer_id=posted.transfer_id,
            actor=actor,
            at=at,
        )
        return money_result(conn, account, posted.transfer_id, False)
