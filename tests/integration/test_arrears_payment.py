"""Arrears paid at the desk after a closing (欠费补缴): a tenant who moved out owing money can pay
it — exactly what is owed at most, once per key, never on an open account (its recharge repays
arrears first), reversible like a recharge — and the books stay balanced, on SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from builders import D, Setup, check_books, one_meter_account, owed, reading, wallet
from sqlalchemy import select
from test_money_races import held_before, racing

from meterdesk.audit.tables import audit_log
from meterdesk.billing import accounts, cashier, cashier_arrears, cashier_refund
from meterdesk.billing.ingest import Ingestor
from meterdesk.db.consistency import ledger_differences
from meterdesk.db.database import Database
from meterdesk.ledger.model import Reason
from meterdesk.ledger.tables import transfers
from meterdesk.shared.errors import ConflictError, IdempotencyConflictError, ValidationError
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration


def pay(
    db: Database, org: int, account: int, amount: str, key: str, method: str = "cash"
) -> cashier.MoneyResult:
    return cashier_arrears.pay_arrears(
        db,
        organisation_id=org,
        account_id=account,
        amount=amount,
        method=method,
        actor="cashier-wang",
        idempotency_key=key,
    )


@pytest.fixture
def moved_out(db: Database, clock: FakeClock) -> Setup:
    """An account closed owing 20.00: 10.00 of credit, 30 kWh at 1.00."""
    setup = one_meter_account(db, price="1", credit="10")
    clock.advance(timedelta(hours=1))
    accounts.close_account(
        db,
        organisation_id=setup.org.id,
        number="A-1",
        final_readings=[accounts.FinalReading(setup.meter_id, D("1030"))],
        refund_method="cash",
        actor="op",
        idempotency_key="close-1",
    )
    assert owed(db, setup.account) == D("20.00")
    return setup


def test_a_tenant_who_moved_out_pays_what_is_owed_once(db: Database, moved_out: Setup) -> None:
    setup = moved_out
    org, account = setup.org.id, setup.account.account_id
    with pytest.raises(ConflictError, match=r"owes 20\.00: pay at most that"):
        pay(db, org, account, "20.01", "p-0")
    first = pay(db, org, account, "12.50", "p-1")
    again = pay(db, org, account, "12.50", "p-1")  # the same receipt entered twice
    assert (first.replayed, again.replayed, again.transfer_id) == (False, True, first.transfer_id)
    with pytest.raises(IdempotencyConflictError):
        pay(db, org, account, "7.50", "p-1")  # the key of another payment
    assert owed(db, setup.account) == D("7.50")
    pay(db, org, account, "7.50", "p-2", method="wechat")
    assert (owed(db, setup.account), wallet(db, setup.account)) == (D("0.00"), D("0.00"))
    with pytest.raises(ConflictError, match="owes nothing"):
        pay(db, org, account, "0.01", "p-3")
    with db.read() as conn:
        paid = conn.execute(
            select(transfers.c.amount_fen, transfers.c.method, transfers.c.reason)
            .where(transfers.c.account_id == account, transfers.c.method.is_not(None))
            .where(transfers.c.reason == Reason.ARREARS_REPAYMENT.value)
            .order_by(transfers.c.id)
        ).all()
        assert [(p.amount_fen, p.method) for p in paid] == [(1250, "cash"), (750, "wechat")]
        assert not any(ledger_differences(conn).values()), ledger_differences(conn)
        actions = conn.execute(
            select(audit_log.c.actor).where(audit_log.c.action == "money.arrears_payment")
        ).scalars()
        assert list(actions) == ["cashier-wang", "cashier-wang"]


def test_an_open_account_recharges_instead(db: Database, clock: FakeClock) -> None:
    setup = one_meter_account(db, price="1", credit="10", overdraft="50")
    with pytest.raises(ConflictError, match="is open: recharge it"):
        pay(db, setup.org.id, setup.account.account_id, "1", "p-1")
    with pytest.raises(ValidationError):
        pay(db, setup.org.id, setup.account.account_id, "-1", "p-2")


def test_a_payment_made_in_error_is_reversed_and_owed_again(db: Database, moved_out: Setup) -> None:
    setup = moved_out
    org, account = setup.org.id, setup.account.account_id
    made = pay(db, org, account, "5.00", "p-1")
    reversal = cashier_refund.reverse(
        db,
        organisation_id=org,
        transfer_id=made.transfer_id,
        actor="chief",
        idempotency_key="rv-1",
    )
    assert owed(db, setup.account) == D("20.00")
    again = cashier_refund.reverse(
        db,
        organisation_id=org,
        transfer_id=made.transfer_id,
        actor="chief",
        idempotency_key="rv-1",
    )
    assert again == reversal and owed(db, setup.account) == D("20.00")
    with pytest.raises(ConflictError):  # once per transfer, whatever the key
        cashier_refund.reverse(
            db,
            organisation_id=org,
            transfer_id=made.transfer_id,
            actor="chief",
            idempotency_key="rv-2",
        )


def test_a_repayment_the_ledger_made_by_itself_is_not_reversed_alone(
    db: Database, clock: FakeClock
) -> None:
    """A recharge repays arrears from the wallet on its own (no payment method): undoing that
    transfer alone would leave the recharge's money nowhere."""
    setup = one_meter_account(db, price="1", credit="10", overdraft="50")
    clock.advance(timedelta(hours=1))
    Ingestor(db).ingest([reading(setup.meter_id, clock.now, "1030")])  # 20.00 into overdraft
    cashier.recharge(
        db,
        organisation_id=setup.org.id,
        account_id=setup.account.account_id,
        amount="50",
        method="cash",
        actor="c",
        idempotency_key="r-1",
    )
    with db.read() as conn:
        repayments = list(
            conn.execute(
                select(transfers.c.id).where(
                    transfers.c.account_id == setup.account.account_id,
                    transfers.c.reason == Reason.ARREARS_REPAYMENT.value,
                )
            ).scalars()
        )
    for repayment in repayments:
        with pytest.raises(ConflictError, match="arrears paid at the desk"):
            cashier_refund.reverse(
                db,
                organisation_id=setup.org.id,
                transfer_id=repayment,
                actor="chief",
                idempotency_key=f"rv-{repayment}",
            )


# --- races (PostgreSQL: the second waits for the first's locks; SQLite takes turns) -----------


def _reverse(db: Database, org: int, transfer_id: int, key: str) -> int:
    return cashier_refund.reverse(
        db, organisation_id=org, transfer_id=transfer_id, actor="chief", idempotency_key=key
    )


def test_two_payments_of_all_that_is_owed_at_once_collect_it_once(
    db: Database, moved_out: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    org, account = moved_out.org.id, moved_out.account.account_id
    first = held_before(
        monkeypatch, cashier_arrears, "audit_desk_money", lambda: pay(db, org, account, "20", "a")
    )
    second = racing(db, monkeypatch, lambda: pay(db, org, account, "20", "b"))
    first.release()
    second.release()
    assert not isinstance(first.outcome, Exception), first.outcome
    assert isinstance(second.outcome, ConflictError), second.outcome
    assert "owes nothing" in str(second.outcome)
    assert owed(db, moved_out.account) == D("0.00")
    check_books(db)


def test_one_payment_sent_twice_at_once_is_made_once_and_answered_twice(
    db: Database, moved_out: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    org, account = moved_out.org.id, moved_out.account.account_id
    first = held_before(
        monkeypatch, cashier_arrears, "audit_desk_money", lambda: pay(db, org, account, "20", "a")
    )
    second = racing(db, monkeypatch, lambda: pay(db, org, account, "20", "a"))
    first.release()
    second.release()
    assert isinstance(first.outcome, cashier.MoneyResult), first.outcome
    assert isinstance(second.outcome, cashier.MoneyResult), second.outcome
    assert second.outcome.replayed and second.outcome.transfer_id == first.outcome.transfer_id
    assert owed(db, moved_out.account) == D("0.00")
    check_books(db)


def test_a_payment_racing_the_reversal_of_another_never_collects_more_than_owed(
    db: Database, moved_out: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 owed, 20 paid, then: the payment reversed (owed 20 again) while a new payment of 20
    is made. Whatever the order, at most what is owed is collected."""
    org, account = moved_out.org.id, moved_out.account.account_id
    made = pay(db, org, account, "20", "a").transfer_id
    first = held_before(
        monkeypatch, cashier_refund, "_audit_reversal", lambda: _reverse(db, org, made, "void")
    )
    second = racing(db, monkeypatch, lambda: pay(db, org, account, "20", "b"))
    first.release()
    second.release()
    assert not isinstance(first.outcome, Exception), first.outcome
    assert not isinstance(second.outcome, Exception), second.outcome  # owed again: accepted
    assert owed(db, moved_out.account) == D("0.00")
    check_books(db)


def test_two_reversals_of_one_payment_at_once_reverse_it_once(
    db: Database, moved_out: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    org, account = moved_out.org.id, moved_out.account.account_id
    made = pay(db, org, account, "5", "a").transfer_id
    first = held_before(
        monkeypatch, cashier_refund, "_audit_reversal", lambda: _reverse(db, org, made, "v-1")
    )
    second = racing(db, monkeypatch, lambda: _reverse(db, org, made, "v-2"))
    first.release()
    second.release()
    assert not isinstance(first.outcome, Exception), first.outcome
    assert isinstance(second.outcome, ConflictError), second.outcome
    assert "already reversed" in str(second.outcome)
    assert owed(db, moved_out.account) == D("20.00")
    check_books(db)
