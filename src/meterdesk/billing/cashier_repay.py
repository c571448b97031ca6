"""Repayment out of a recharge, in the recharge's transaction: emergency credit (应急用电) still
owed is repaid first, in full if the recharge covers it (:func:`repay_emergency`); then arrears,
from whatever the wallet holds above its floor (:func:`repay_arrears`). Each repayment is its own
transfer keyed by the recharge's idempotency key, so a replayed recharge repays nothing twice.
Called by :func:`meterdesk.billing.cashier.recharge_in` in that order.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from meterdesk.billing import control_state
from meterdesk.billing.policy import emergency_repayment
from meterdesk.ledger import repository as ledger
from meterdesk.ledger.model import (
    REPAY_ARREARS,
    AccountKind,
    Reason,
    TransferRequest,
    arrears_repayment,
    derived_key,
)


def emergency_receivable(conn: Connection, organisation_id: int, at: datetime) -> int:
    """The organisation's account for emergency credit (应急用电) lent and not yet repaid."""
    return ledger.system_account(
        conn,
        organisation_id=organisation_id,
        code="receivable:emergency_credit",
        kind=AccountKind.CLEARING,
        at=at,
    )


def repay_emergency(conn: Connection, account: dict[str, object], cause: TransferRequest) -> None:
    state, _, _ = control_state.load_state(conn, int(str(account["id"])))
    amount = emergency_repayment(state, cause.amount_fen)
    if not amount:
        return
    receivable = emergency_receivable(conn, cause.organisation_id, cause.created_at)
    ledger.apply_transfers(
        conn,
        [
            TransferRequest(
                organisation_id=cause.organisation_id,
                idempotency_key=derived_key("repay-emergency", cause.idempotency_key),
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
    control_state.record_emergency(
        conn,
        account_id=int(str(account["id"])),
        outstanding_fen=state.emergency_outstanding_fen - amount,
        at=cause.created_at,
    )


def repay_arrears(conn: Connection, account: dict[str, object], cause: TransferRequest) -> None:
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
                    idempotency_key=derived_key(REPAY_ARREARS, cause.idempotency_key),
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
