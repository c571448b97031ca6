"""Settlement when an account closes (销户): emergency credit (应急用电) still owed is repaid from
the wallet first and what the wallet cannot cover becomes arrears; whatever credit is left then
goes back to the tenant through the chosen payment method, and an overdraft used up at closing
becomes arrears to collect. Runs in the closing's transaction
(:func:`meterdesk.billing.accounts.close_account`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection

from meterdesk.billing import control_state, quantity
from meterdesk.billing.cashier import clearing_account, desk_key, load_account, payment_method
from meterdesk.billing.cashier_repay import emergency_receivable
from meterdesk.billing.model import BillingMode
from meterdesk.billing.postings import revenue_code
from meterdesk.billing.quantity_model import CreditUnit
from meterdesk.ledger import repository as ledger
from meterdesk.ledger import service as ledger_service
from meterdesk.ledger.model import AccountKind, Reason, TransferRequest, derived_key
from meterdesk.shared.money import from_fen


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
    account = load_account(conn, organisation_id, account_id)
    payment = payment_method(method)
    wallet_id, arrears_id = int(str(account["wallet_id"])), int(str(account["arrears_id"]))
    wallet = ledger_service.balance_fen(conn, wallet_id)
    wallet -= _settle_emergency(conn, account, wallet, actor=actor, at=at, key=idempotency_key)
    if account["billing_mode"] == BillingMode.METER.value:
        wallet -= _settle_meter_usage(
            conn, account, wallet, actor=actor, at=at, key=idempotency_key
        )
    transfer_id = None
    if wallet < 0:
        # An allowed overdraft used up at closing becomes arrears to collect.
        ledger.apply_transfers(
            conn,
            [
                TransferRequest(
                    organisation_id=organisation_id,
                    idempotency_key=derived_key(
                        "settle-overdraft", desk_key(organisation_id, idempotency_key)
                    ),
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
        clearing = clearing_account(conn, organisation_id, payment, at)
        transfer_id = ledger_service.post(
            conn,
            TransferRequest(
                organisation_id=organisation_id,
                idempotency_key=desk_key(organisation_id, idempotency_key),
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
    if account["credit_unit"] == CreditUnit.QUANTITY.value:  # 购量: nothing left to use
        quantity.close_in(
            conn, account_id=account_id, transfer_id=transfer_id, owes=arrears < 0, at=at
        )
    return Settlement(from_fen(max(wallet, 0)), from_fen(-arrears), transfer_id)


def _settle_meter_usage(
    conn: Connection,
    account: dict[str, object],
    wallet_fen: int,
    *,
    actor: str,
    at: datetime,
    key: str,
) -> int:
    """Meter billing (表端计费): the wallet was never deducted, so it still holds every recharge,
    also the part the meter has spent. Pushes that never went out are cancelled (their money
    is refunded below); what the platform priced from the readings up to the final one is the
    meter's usage, paid from the wallet (what it cannot cover, the meter's own overdraft,
    becomes arrears); the rest is refunded. A push on its way to the meter stops the close.
    Returns what the wallet paid."""
    from meterdesk.devices import reconcile

    organisation_id, account_id = int(str(account["organisation_id"])), int(str(account["id"]))
    reconcile.stop_pushes_on_closing(
        conn, organisation_id=organisation_id, account_id=account_id, at=at
    )
    paid, left = 0, max(wallet_fen, 0)
    for utility, used in sorted(reconcile.used_on_meter_fen(conn, account_id).items()):
        if used <= 0:
            continue
        revenue = ledger.system_account(
            conn,
            organisation_id=organisation_id,
            code=revenue_code(utility),
            kind=AccountKind.REVENUE,
            at=at,
        )
        from_wallet = _wallet_then_arrears(
            conn,
            account,
            used,
            wallet_fen=left,
            credit_account_id=revenue,
            purpose=f"meter-used-{utility}",
            reason=Reason.SETTLEMENT,
            memo="used on the meter (表端计费), priced at the account's tariff",
            actor=actor,
            at=at,
            key=key,
        )
        paid, left = paid + from_wallet, left - from_wallet
    return paid


def _settle_emergency(
    conn: Connection,
    account: dict[str, object],
    wallet_fen: int,
    *,
    actor: str,
    at: datetime,
    key: str,
) -> int:
    """Emergency credit still owed is the operator's loan, not the tenant's credit: repay it
    from the wallet and move what the wallet cannot cover to arrears. Returns what the wallet
    paid."""
    account_id = int(str(account["id"]))
    state, _, _ = control_state.load_state(conn, account_id)
    owed = state.emergency_outstanding_fen
    if owed <= 0:
        return 0
    organisation_id = int(str(account["organisation_id"]))
    from_wallet = _wallet_then_arrears(
        conn,
        account,
        owed,
        wallet_fen=wallet_fen,
        credit_account_id=emergency_receivable(conn, organisation_id, at),
        purpose="settle-emergency",
        reason=Reason.EMERGENCY_REPAYMENT,
        memo="emergency credit (应急用电) owed on closing",
        actor=actor,
        at=at,
        key=key,
    )
    control_state.record_emergency(conn, account_id=account_id, outstanding_fen=0, at=at)
    return from_wallet


def _wallet_then_arrears(
    conn: Connection,
    account: dict[str, object],
    amount_fen: int,
    *,
    wallet_fen: int,
    credit_account_id: int,
    purpose: str,
    reason: Reason,
    memo: str,
    actor: str,
    at: datetime,
    key: str,
) -> int:
    """Pay ``amount_fen`` owed on closing to ``credit_account_id``: from the wallet as far as it
    holds (``wallet_fen``), the rest as arrears to collect. Each part has its own key derived
    from the close's (``{purpose}-wallet`` / ``{purpose}-arrears``). Returns what the wallet
    paid."""
    organisation_id, account_id = int(str(account["organisation_id"])), int(str(account["id"]))
    from_wallet = min(amount_fen, max(wallet_fen, 0))
    parts = (
        (from_wallet, "wallet_id", "wallet"),
        (amount_fen - from_wallet, "arrears_id", "arrears"),
    )
    ledger.apply_transfers(
        conn,
        [
            TransferRequest(
                organisation_id=organisation_id,
                idempotency_key=derived_key(f"{purpose}-{part}", desk_key(organisation_id, key)),
                debit_account_id=int(str(account[source])),
                credit_account_id=credit_account_id,
                amount_fen=amount,
                reason=reason,
                actor=actor,
                created_at=at,
                account_id=account_id,
                memo=memo,
            )
            for amount, source, part in parts
            if amount
        ],
    )
    return from_wallet
