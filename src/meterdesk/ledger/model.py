"""The ledger's pure model.

Invariants:
- A transfer moves a positive whole-fen amount from a debit account to a different credit
  account; it is never changed or deleted. A correction is a new transfer (a reversal swaps the
  two accounts and points at the transfer it reverses; a transfer is reversed at most once).
- Balances are credits minus debits, so the balances of all accounts always sum to zero and each
  balance equals the sum of its transfers.
- A wallet never goes below its floor (0, or minus the allowed overdraft).
- Every transfer has an idempotency key. The same key with the same request returns the original
  transfer; the same key with a different request is a conflict. ``request_hash`` is what decides
  "same request": the fields that say what the transfer does, not when it was made.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class AccountKind(StrEnum):
    WALLET = "wallet"  # a customer account's prepaid balance (what the platform owes the tenant)
    ARREARS = "arrears"  # what the tenant owes beyond the wallet's floor (receivable, ≤ 0)
    REVENUE = "revenue"  # income per utility and charge type
    CLEARING = "clearing"  # money received or paid out per payment method (cash till, card, ...)


class Reason(StrEnum):
    RECHARGE = "recharge"
    REFUND = "refund"
    DEDUCTION = "deduction"
    DEDUCTION_CORRECTION = "deduction_correction"
    ARREARS_REPAYMENT = "arrears_repayment"
    REVERSAL = "reversal"
    EMERGENCY_CREDIT = "emergency_credit"
    EMERGENCY_REPAYMENT = "emergency_repayment"
    SETTLEMENT = "settlement"


class PaymentMethod(StrEnum):
    CASH = "cash"
    CARD = "card"
    TRANSFER = "transfer"
    WECHAT = "wechat"
    ALIPAY = "alipay"
    ONLINE = "online"


@dataclass(frozen=True, slots=True)
class TransferRequest:
    organisation_id: int
    idempotency_key: str
    debit_account_id: int
    credit_account_id: int
    amount_fen: int
    reason: Reason
    actor: str
    created_at: datetime
    account_id: int | None = None
    meter_id: int | None = None
    period_key: str | None = None
    method: str | None = None
    reference: str | None = None
    reverses_id: int | None = None
    memo: str | None = None

    def __post_init__(self) -> None:
        if self.amount_fen <= 0:
            raise ValueError(f"transfer amount must be positive, got {self.amount_fen} fen")
        if self.debit_account_id == self.credit_account_id:
            raise ValueError("a transfer needs two different accounts")
        if not self.idempotency_key:
            raise ValueError("a transfer needs an idempotency key")

    def request_hash(self) -> str:
        """What makes two requests "the same" for idempotency (not when they were made)."""
        return request_hash(
            self.organisation_id,
            self.debit_account_id,
            self.credit_account_id,
            self.amount_fen,
            self.reason,
            self.account_id,
            self.meter_id,
            self.period_key,
            self.method,
            self.reference,
            self.reverses_id,
        )


def request_hash(
    organisation_id: int,
    debit_account_id: int,
    credit_account_id: int,
    amount_fen: int,
    reason: Reason,
    account_id: int | None,
    meter_id: int | None,
    period_key: str | None,
    method: str | None,
    reference: str | None,
    reverses_id: int | None,
) -> str:
    """The stored fingerprint of a transfer request (see :meth:`TransferRequest.request_hash`)."""
    fields = (
        organisation_id,
        debit_account_id,
        credit_account_id,
        amount_fen,
        str(reason),
        account_id,
        meter_id,
        period_key,
        method,
        reference,
        reverses_id,
    )
    return hash_fields(fields)


def system_request_hash(
    organisation_id: int,
    debit_account_id: int,
    credit_account_id: int,
    amount_fen: int,
    reason: str,
    account_id: int | None,
    meter_id: int | None,
    period_key: str | None,
) -> str:
    """:func:`request_hash` of a system transfer (no method, reference or reversal; ``reason``
    as its text), for ingest's row per posting. It hashes the very text :func:`hash_fields`
    hashes — a tuple's repr is its items' reprs, joined by ", ", in parentheses — written out
    instead of building the tuple and taking its repr (≈ 4,000 instructions less a row)."""
    text = (
        f"({organisation_id!r}, {debit_account_id!r}, {credit_account_id!r}, {amount_fen!r}, "
        f"{reason!r}, {account_id!r}, {meter_id!r}, {period_key!r}, None, None, None)"
    )
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


REPAY_ARREARS = "repay-arrears"  # the purpose in a recharge's arrears repayment's key


def derived_key(purpose: str, key: str) -> str:
    """The key of a transfer a desk operation posts beside its own (a repayment, a part of a
    settlement): the purpose, a word, before the desk key. Desk keys start with the
    organisation's id (``{org}:{operator key}``), so no operator key can take a derived one;
    they used to be ``{key}:{purpose}``, which a recharge keyed ``R-7:repay`` took from the
    recharge keyed ``R-7``. Keys stored in that form stay as they are: a replay is answered by
    the desk key, and :func:`meterdesk.devices.reconcile` reads repayments by either form."""
    return f"{purpose}:{key}"


def hash_fields(fields: tuple[object, ...]) -> str:
    """The fingerprint of a request's fields, in :func:`request_hash`'s order, the reason as its
    text."""
    return hashlib.blake2b(repr(fields).encode(), digest_size=16).hexdigest()


def split_debit(*, amount_fen: int, balance_fen: int, floor_fen: int) -> tuple[int, int]:
    """Split a charge that cannot be refused (energy already used) into the part the wallet can
    carry down to its floor and the part that becomes arrears."""
    available = max(0, balance_fen - floor_fen)
    from_wallet = min(amount_fen, available)
    return from_wallet, amount_fen - from_wallet


def arrears_repayment(
    *, wallet_balance_fen: int, arrears_balance_fen: int, floor_fen: int = 0
) -> int:
    """How much of the wallet goes to repay arrears (arrears balances are ≤ 0). Arrears are debt
    beyond the allowed overdraft, so they are repaid first from everything above the floor: with
    an overdraft in use, a recharge clears the arrears before it refills the overdraft."""
    available = wallet_balance_fen - floor_fen
    if available <= 0 or arrears_balance_fen >= 0:
        return 0
    return min(available, -arrears_balance_fen)
