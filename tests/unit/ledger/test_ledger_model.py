"""The ledger's pure rules: what makes a transfer valid, what makes two requests "the same" for
idempotency, and how a charge splits between the wallet and arrears."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterdesk.ledger.model import (
    Reason,
    TransferRequest,
    arrears_repayment,
    request_hash,
    split_debit,
    system_request_hash,
)

REQUEST = TransferRequest(
    organisation_id=1,
    idempotency_key="1:receipt-1",
    debit_account_id=10,
    credit_account_id=20,
    amount_fen=5000,
    reason=Reason.RECHARGE,
    actor="cashier",
    created_at=datetime(2026, 11, 2, tzinfo=UTC),
    account_id=3,
    method="cash",
)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amount_fen": 0}, "must be positive"),
        ({"amount_fen": -1}, "must be positive"),
        ({"credit_account_id": 10}, "two different accounts"),
        ({"idempotency_key": ""}, "needs an idempotency key"),
    ],
)
def test_a_transfer_moves_a_positive_amount_between_two_accounts_under_a_key(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        replace(REQUEST, **change)  # type: ignore[arg-type]


def test_when_and_by_whom_do_not_make_a_different_request() -> None:
    later = replace(
        REQUEST, created_at=datetime(2027, 1, 1, tzinfo=UTC), actor="someone else", memo="note"
    )
    assert later.request_hash() == REQUEST.request_hash()


@pytest.mark.parametrize(
    "change",
    [
        {"amount_fen": 5001},
        {"credit_account_id": 21},
        {"method": "wechat"},
        {"reference": "another receipt"},
        {"account_id": 4},
        {"reason": Reason.REFUND},
    ],
)
def test_what_the_transfer_does_makes_a_different_request(change: dict[str, object]) -> None:
    assert replace(REQUEST, **change).request_hash() != REQUEST.request_hash()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "balance", "floor", "expected"),
    [
        (300, 1000, 0, (300, 0)),  # enough credit
        (300, 100, 0, (100, 200)),  # the rest becomes arrears
        (300, 100, -150, (250, 50)),  # the overdraft is used first
        (300, 0, 0, (0, 300)),  # an empty wallet: all arrears
        (300, -200, -150, (0, 300)),  # already below the floor: nothing more from the wallet
    ],
)
def test_a_charge_that_cannot_be_refused_splits_between_wallet_and_arrears(
    amount: int, balance: int, floor: int, expected: tuple[int, int]
) -> None:
    assert split_debit(amount_fen=amount, balance_fen=balance, floor_fen=floor) == expected


@pytest.mark.parametrize(
    ("wallet", "arrears", "expected"),
    [(5000, -2000, 2000), (1500, -2000, 1500), (5000, 0, 0), (0, -2000, 0), (-100, -2000, 0)],
)
def test_arrears_are_repaid_from_a_positive_wallet(
    wallet: int, arrears: int, expected: int
) -> None:
    assert arrears_repayment(wallet_balance_fen=wallet, arrears_balance_fen=arrears) == expected


IDS = st.integers(min_value=-(2**63), max_value=2**63)
TEXT = st.text()  # quotes, backslashes, non-ASCII: repr must come out the same


@given(
    org=IDS,
    debit=IDS,
    credit=IDS,
    amount=IDS,
    reason=st.sampled_from([str(r) for r in Reason]) | TEXT,
    account=st.none() | IDS,
    meter=st.none() | IDS,
    period=st.none() | TEXT,
)
def test_a_system_request_hash_is_the_request_hash_without_method_reference_or_reversal(
    org: int,
    debit: int,
    credit: int,
    amount: int,
    reason: str,
    account: int | None,
    meter: int | None,
    period: str | None,
) -> None:
    fields = (org, debit, credit, amount, reason, account, meter, period)
    assert system_request_hash(*fields) == request_hash(
        org, debit, credit, amount, reason, account, meter, period, None, None, None
    )
