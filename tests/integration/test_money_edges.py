"""Money edges found by red-teaming the desk and the ingest together: emergency credit outstanding
when an account closes or asks for a refund, and desk operations racing each other on
PostgreSQL. Each test names what must hold; the books are checked after each."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from builders import (
    ACTOR,
    D,
    Setup,
    all_transfers,
    check_books,
    ledger_code_balances,
    minutes,
    one_meter_account,
    owed,
    quarantined,
    reading,
    row_counts,
    tou_definition,
    wallet,
)
from sqlalchemy import Connection, text

from meterdesk.billing import (
    accounts,
    cashier,
    cashier_refund,
    control_admin,
    control_state,
    control_tick,
    corrections,
    postings,
)
from meterdesk.billing.control_send import RecordingOutbox
from meterdesk.billing.ingest import Ingestor
from meterdesk.billing.policy import Supply
from meterdesk.db.database import Database
from meterdesk.ledger import repository as ledger
from meterdesk.shared.errors import ConflictError, InsufficientFundsError
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration

RECEIVABLE = "receivable:emergency_credit"


def close(
    db: Database,
    setup: Setup,
    final: str,
    key: str = "close-1",
    number: str = "A-1",
    meter_id: int | None = None,
) -> Any:
    return accounts.close_account(
        db,
        organisation_id=setup.org.id,
        number=number,
        final_readings=[accounts.FinalReading(meter_id or setup.meter_id, D(final))],
        refund_method="cash",
        actor=ACTOR,
        idempotency_key=key,
    )


def with_emergency_credit_taken(db: Database, clock: FakeClock) -> Setup:
    """10.00 credit used up at 1.00/kWh, then 10.00 of emergency credit taken (owed)."""
    setup = one_meter_account(db, price="1", credit="10")
    outbox = RecordingOutbox()
    control_admin.set_account_policy(
        db,
        organisation_id=setup.org.id,
        number="A-1",
        actor=ACTOR,
        outbox=outbox,
        change=control_admin.PolicyChange(emergency_credit="10.00"),
    )
    Ingestor(db).ingest([reading(setup.meter_id, minutes(15), "1010")])
    control_admin.take_emergency_credit(
        db, organisation_id=setup.org.id, number="A-1", actor="tenant", outbox=outbox
    )
    assert wallet(db, setup.account) == D("10.00")
    clock.advance(timedelta(hours=1))
    return setup


# --- emergency credit ------------------------------------------------------------------------


def test_closing_with_unused_emergency_credit_repays_it_instead_of_refunding_it(
    db: Database, clock: FakeClock
) -> None:
    """The 10.00 in the wallet is the operator's loan, not the tenant's money: closing must
    repay it, not pay it out as a refund while the loan stays unrecorded."""
    setup = with_emergency_credit_taken(db, clock)

    closed = close(db, setup, "1010")

    assert (closed.refunded, closed.arrears) == (D("0.00"), D("0.00"))
    assert ledger_code_balances(db)[RECEIVABLE] == 0
    check_books(db)


def test_closing_with_emergency_credit_spent_leaves_it_owed_as_arrears(
    db: Database, clock: FakeClock
) -> None:
    """Spent emergency credit is a debt: after closing it must still be owed by the tenant."""
    setup = with_emergency_credit_taken(db, clock)

    closed = close(db, setup, "1020")  # the 10.00 of emergency credit used up

    assert (closed.refunded, closed.arrears) == (D("0.00"), D("10.00"))
    assert (wallet(db, setup.account), owed(db, setup.account)) == (D("0.00"), D("10.00"))
    assert ledger_code_balances(db)[RECEIVABLE] == 0
    check_books(db)


def refund(db: Database, setup: Setup, amount: str, key: str) -> cashier.MoneyResult:
    return cashier_refund.refund(
        db,
        organisation_id=setup.org.id,
        account_id=setup.account.account_id,
        amount=amount,
        method="cash",
        actor=ACTOR,
        idempotency_key=key,
    )


def test_emergency_credit_cannot_be_refunded_as_cash(db: Database, clock: FakeClock) -> None:
    setup = with_emergency_credit_taken(db, clock)

    with pytest.raises(InsufficientFundsError):
        refund(db, setup, "10", "refund-1")
    assert wallet(db, setup.account) == D("10.00")
    check_books(db)


# --- desk operations racing each other (PostgreSQL row locks; SQLite takes turns) ------------


class Paused:
    """Runs ``target`` in a thread; ``hold`` called inside it blocks until :meth:`release`."""

    def __init__(self, target: Callable[[], object]) -> None:
        self.reached, self.go = threading.Event(), threading.Event()
        self.outcome: object = None
        self.thread = threading.Thread(target=self._run, args=(target,))

    def _run(self, target: Callable[[], object]) -> None:
        try:
            self.outcome = target()
        except Exception as error:  # reported in the test's own thread
            self.outcome = error

    def hold(self) -> None:
        if not self.reached.is_set():
            self.reached.set()
            assert self.go.wait(10)

    def release(self) -> None:
        self.go.set()
        self.thread.join(20)
        assert not self.thread.is_alive()


def blocked_or_done(db: Database, worker: threading.Thread, pids: list[int]) -> None:
    """Wait until ``worker`` finished or (PostgreSQL) waits for a row lock; SQLite's writers
    queue in the process, so there a short pause must do."""
    if db.dialect != "postgresql":
        worker.join(0.3)
        return
    deadline = time.monotonic() + 10
    with db.engine.connect() as conn:
        while worker.is_alive() and time.monotonic() < deadline:
            if pids:
                waiting = conn.execute(
                    text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": pids[0]},
                ).scalar_one_or_none()
                conn.rollback()
                if waiting == "Lock":
                    return
            time.sleep(0.02)


def test_a_recharge_racing_a_close_is_refunded_or_refused_never_left_in_the_closed_wallet(
    db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recharge read the account as open; the close settled the wallet meanwhile. The
    recharge must then either wait and be refused, or be part of what the close refunds."""
    setup = one_meter_account(db, price="1", credit="100")
    clock.advance(timedelta(hours=1))
    real_clearing = cashier.clearing_account

    def clearing_then_pause(*args: Any) -> int:  # runs right after the status check
        if threading.current_thread() is recharge.thread:
            recharge.hold()
        return real_clearing(*args)

    monkeypatch.setattr(cashier, "clearing_account", clearing_then_pause)
    recharge = Paused(
        lambda: cashier.recharge(
            db,
            organisation_id=setup.org.id,
            account_id=setup.account.account_id,
            amount="50",
            method="cash",
            actor=ACTOR,
            idempotency_key="receipt-1",
        )
    )
    recharge.thread.start()
    assert recharge.reached.wait(10)
    pids: list[int] = []
    closing = Paused(lambda: close(db, setup, "1000"))
    if db.dialect == "postgresql":
        monkeypatch.setattr(accounts, "account_by_number", backend_noted(pids))
    closing.thread.start()
    blocked_or_done(db, closing.thread, pids)
    recharge.release()
    closing.release()

    if isinstance(recharge.outcome, Exception):
        assert isinstance(recharge.outcome, ConflictError), recharge.outcome
        refunded = D("100.00")
    else:
        refunded = D("150.00")
    assert not isinstance(closing.outcome, Exception), closing.outcome
    assert closing.outcome.refunded == refunded
    assert wallet(db, setup.account) == D("0.00")
    check_books(db)


def backend_noted(pids: list[int]) -> Callable[..., dict[str, object]]:
    """``accounts.account_by_number`` that first notes the backend running it."""
    real = accounts.account_by_number

    def noted(conn: Connection, **arguments: Any) -> dict[str, object]:
        pids.append(int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one()))
        return real(conn, **arguments)

    return noted


def test_a_refund_racing_a_deduction_never_pays_out_the_overdraft(
    db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refund checked against 100.00 of credit while a batch deducted 30.00: posting it then
    would pay 30.00 of the allowed overdraft out as cash. It must be checked against the balance
    it is posted against (or wait for the batch and be refused)."""
    setup = one_meter_account(db, price="1", credit="100", overdraft="50")
    real_service = cashier_refund.ledger_service

    class PauseBeforePosting:
        def __getattr__(self, name: str) -> Any:
            return getattr(real_service, name)

        def post(self, *args: Any) -> Any:
            refund.hold()
            return real_service.post(*args)

    monkeypatch.setattr(cashier_refund, "ledger_service", PauseBeforePosting())
    refund = Paused(
        lambda: cashier_refund.refund(
            db,
            organisation_id=setup.org.id,
            account_id=setup.account.account_id,
            amount="100",
            method="cash",
            actor=ACTOR,
            idempotency_key="refund-1",
        )
    )
    refund.thread.start()
    assert refund.reached.wait(10)
    pids: list[int] = []
    ingest = Paused(lambda: Ingestor(db).ingest([reading(setup.meter_id, minutes(15), "1030")]))
    if db.dialect == "postgresql":
        real_lock = ledger.lock_balances

        def noted(conn: Connection, ids: Any) -> Any:
            if threading.current_thread() is ingest.thread and not pids:
                pids.append(int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one()))
            return real_lock(conn, ids)

        monkeypatch.setattr(postings.ledger, "lock_balances", noted)
    ingest.thread.start()
    blocked_or_done(db, ingest.thread, pids)
    refund.release()
    ingest.release()

    assert not isinstance(ingest.outcome, Exception), ingest.outcome
    if isinstance(refund.outcome, Exception):
        assert isinstance(refund.outcome, InsufficientFundsError), refund.outcome
    assert_refunds_came_from_credit(db, setup.account.wallet_id)
    check_books(db)


def assert_refunds_came_from_credit(db: Database, wallet_id: int) -> None:
    """Replaying the wallet's transfers in order, each refund was covered by the balance."""
    running = 0
    for transfer in all_transfers(db):
        if transfer["reason"] == "refund":
            assert running >= transfer["amount_fen"], f"refund of {transfer} from {running} fen"
        if transfer["credit_account_id"] == wallet_id:
            running += transfer["amount_fen"]
        if transfer["debit_account_id"] == wallet_id:
            running -= transfer["amount_fen"]


# --- readings after closing ------------------------------------------------------------------


@pytest.mark.parametrize("late_total", ["1011", "1019"])  # re-priced dearer / cheaper
def test_a_late_reading_inside_a_closed_accounts_billing_is_quarantined_and_moves_no_money(
    db: Database, clock: FakeClock, late_total: str
) -> None:
    """Closing settled the account: its last interval (09:30-10:30 local, across the 10:00
    flat → peak boundary) was billed and the rest refunded. A reading measured at 10:00 that
    arrives afterwards would re-price that interval and post the difference to the closed
    account: arrears after the settlement, or credit stranded in a closed wallet."""
    setup = one_meter_account(db, price="1", credit="100", definition=tou_definition())
    Ingestor(db).ingest([reading(setup.meter_id, minutes(90), "1010")])  # 09:30 local
    clock.advance(timedelta(minutes=150))  # 10:30 local
    close(db, setup, "1020")
    before = (all_transfers(db), wallet(db, setup.account), owed(db, setup.account))

    report = Ingestor(db).ingest([reading(setup.meter_id, minutes(120), late_total)])

    assert (report.accepted, report.quarantined, report.transfers) == (0, 1, 0)
    assert (all_transfers(db), wallet(db, setup.account), owed(db, setup.account)) == before
    assert [q["reason_code"] for q in quarantined(db, setup.org)] == ["settled"]
    check_books(db)


def test_a_reading_of_a_closed_accounts_time_cannot_be_released_into_its_billing(
    db: Database, clock: FakeClock
) -> None:
    """A jump quarantined while the account was open, released after it closed, would bill
    the closed account: the release is refused and changes nothing."""
    setup = one_meter_account(db, price="1", credit="100", max_rate="10")
    Ingestor(db).ingest([reading(setup.meter_id, minutes(15), "1005")])  # 20 kWh an hour
    [jump] = quarantined(db, setup.org)
    clock.advance(timedelta(hours=2))
    close(db, setup, "1015")
    before = (all_transfers(db), row_counts(db))

    with pytest.raises(ConflictError, match="closed"):
        corrections.release(db, organisation_id=setup.org.id, quarantine_id=jump["id"], actor=ACTOR)

    assert (all_transfers(db), row_counts(db)) == before
    assert [q["id"] for q in quarantined(db, setup.org)] == [jump["id"]]
    check_books(db)


# --- the control tick racing a recharge ------------------------------------------------------


def test_a_tick_racing_a_recharge_never_leaves_a_recharged_account_cut(
    db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cut deferred by friendly hours is due at the first tick after the window. The tick read
    the balance (-5.00) just before a 100.00 recharge committed: deciding and saving on that
    balance cuts a tenant with 95.00 of credit and overwrites the recharge's control state."""
    setup = one_meter_account(db, price="1", credit="30")
    outbox = RecordingOutbox()
    control_admin.create_friendly_profile(
        db,
        organisation_id=setup.org.id,
        name="nights",
        windows=[{"start": "20:00", "end": "08:00"}],
        weekends=False,
        holidays=False,
        actor=ACTOR,
    )
    control_admin.set_account_policy(
        db,
        organisation_id=setup.org.id,
        number="A-1",
        actor=ACTOR,
        outbox=outbox,
        change=control_admin.PolicyChange(friendly_profile="nights"),
    )
    clock.now = clock.now.replace(hour=13)  # 21:00 local: inside the window
    Ingestor(db, outbox).ingest([reading(setup.meter_id, clock.now, "1035")])  # -5.00
    assert outbox.commands == []
    clock.now = clock.now.replace(hour=23, minute=30) + timedelta(hours=1)  # 08:30 local
    real_days_left = control_tick.days_left

    def days_left_then_pause(*args: Any) -> Any:  # runs right after the balances are read
        tick.hold()
        return real_days_left(*args)

    monkeypatch.setattr(control_tick, "days_left", days_left_then_pause)
    tick = Paused(lambda: control_tick.tick(db, outbox=outbox))
    tick.thread.start()
    assert tick.reached.wait(10)
    pids: list[int] = []
    if db.dialect == "postgresql":
        monkeypatch.setattr(cashier, "load_account", pid_noted(pids, cashier.load_account))
    recharge = Paused(
        lambda: cashier.recharge(
            db,
            organisation_id=setup.org.id,
            account_id=setup.account.account_id,
            amount="100",
            method="cash",
            actor=ACTOR,
            idempotency_key="receipt-1",
            outbox=outbox,
        )
    )
    recharge.thread.start()
    blocked_or_done(db, recharge.thread, pids)
    tick.release()
    recharge.release()

    assert not isinstance(tick.outcome, Exception), tick.outcome
    assert not isinstance(recharge.outcome, Exception), recharge.outcome
    assert wallet(db, setup.account) == D("95.00")
    with db.read() as conn:
        state, _, _ = control_state.load_state(conn, setup.account.account_id)
    assert state.supply is Supply.ON, state
    check_books(db)


def pid_noted(pids: list[int], real: Callable[..., Any]) -> Callable[..., Any]:
    """``real`` (taking the connection first) that first notes the backend running it."""

    def noted(conn: Connection, *args: Any, **arguments: Any) -> Any:
        if not pids:
            pids.append(int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one()))
        return real(conn, *args, **arguments)

    return noted
