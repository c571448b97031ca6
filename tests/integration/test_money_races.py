"""Second red-team round on the desk and the control admin: decisions on balances a concurrent
recharge or batch changed meanwhile, the same transfer reversed or the same key sent twice at
once, a close sent again with its key, desk entries reversed after the account closed, and
operator keys that look like the keys the desk derives from them. PostgreSQL races use the
helpers of ``test_money_edges``; SQLite takes turns, so there the same tests check the plain
order."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from unittest.mock import ANY

import pytest
from builders import (
    ACTOR,
    D,
    Setup,
    all_transfers,
    check_books,
    make_meter,
    minutes,
    one_meter_account,
    open_account,
    owed,
    reading,
    row_counts,
    wallet,
)
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from test_money_edges import Paused, blocked_or_done, close, refund

from meterdesk.billing import (
    accounts,
    cashier,
    cashier_refund,
    control,
    control_admin,
    control_state,
    control_tick,
)
from meterdesk.billing.control_send import RecordingOutbox
from meterdesk.billing.ingest import Ingestor
from meterdesk.billing.policy import Supply
from meterdesk.db.database import Database
from meterdesk.shared.errors import ConflictError, IdempotencyConflictError
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration


def noting_backends(
    db: Database, monkeypatch: pytest.MonkeyPatch, pids: list[int], worker: Callable[[], Paused]
) -> None:
    """Note the PostgreSQL backend of every transaction ``worker``'s thread begins, whatever it
    calls first (so :func:`blocked_or_done` sees it wait for a lock)."""
    if db.dialect != "postgresql":
        return
    real = db.transaction

    @contextmanager
    def transaction() -> Iterator[Any]:
        with real() as conn:
            if threading.current_thread() is worker().thread:
                pids.insert(0, int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one()))
            yield conn

    monkeypatch.setattr(db, "transaction", transaction)


def held_before(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, target: Callable[[], object]
) -> Paused:
    """Start ``target`` in a thread that stops when it calls ``owner.<name>`` (its money
    posted, not yet committed) until released."""
    worker = Paused(target)
    real = getattr(owner, name)

    def pause_then_call(*args: Any, **arguments: Any) -> Any:
        if threading.current_thread() is worker.thread:
            worker.hold()
        return real(*args, **arguments)

    monkeypatch.setattr(owner, name, pause_then_call)
    worker.thread.start()
    assert worker.reached.wait(10)
    return worker


def racing(db: Database, monkeypatch: pytest.MonkeyPatch, target: Callable[[], object]) -> Paused:
    """Start ``target`` in a second thread; return once it finished or (PostgreSQL) waits for a
    lock the first holds."""
    pids: list[int] = []
    second = Paused(target)
    noting_backends(db, monkeypatch, pids, lambda: second)
    second.thread.start()
    blocked_or_done(db, second.thread, pids)
    return second


def supply(db: Database, setup: Setup) -> Supply:
    with db.read() as conn:
        state, _, _ = control_state.load_state(conn, setup.account.account_id)
    return state.supply


def set_policy(db: Database, setup: Setup, outbox: RecordingOutbox, **change: Any) -> Any:
    return control_admin.set_account_policy(
        db,
        organisation_id=setup.org.id,
        number="A-1",
        actor=ACTOR,
        outbox=outbox,
        change=control_admin.PolicyChange(**change),
    )


def recharge(
    db: Database, setup: Setup, amount: str, key: str, account_id: int | None = None, **extra: Any
) -> cashier.MoneyResult:
    return cashier.recharge(
        db,
        organisation_id=setup.org.id,
        account_id=account_id or setup.account.account_id,
        amount=amount,
        method="cash",
        actor=ACTOR,
        idempotency_key=key,
        **extra,
    )


def reverse(db: Database, setup: Setup, transfer_id: int, key: str) -> int:
    return cashier_refund.reverse(
        db, organisation_id=setup.org.id, transfer_id=transfer_id, actor=ACTOR, idempotency_key=key
    )


# --- 1. the control admin deciding on balances read without their locks ----------------------


def test_a_policy_change_racing_a_recharge_never_cuts_a_recharged_account(
    db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Protect on at -5.00; protect is turned off while a 100.00 recharge commits. Deciding on
    the balance read before the recharge cuts a tenant with 95.00 of credit."""
    setup = one_meter_account(db, price="1", credit="30")
    outbox = RecordingOutbox()
    set_policy(db, setup, outbox, protect=True)
    Ingestor(db, outbox).ingest([reading(setup.meter_id, minutes(15), "1035")])  # -5.00
    assert supply(db, setup) is Supply.ON
    clock.advance(timedelta(hours=1))
    real_evaluate = control.evaluate_in

    def evaluate_after_pause(*args: Any, **arguments: Any) -> Any:  # balances already read
        if threading.current_thread() is policy.thread:
            policy.hold()
        return real_evaluate(*args, **arguments)

    monkeypatch.setattr(control, "evaluate_in", evaluate_after_pause)
    policy = Paused(lambda: set_policy(db, setup, outbox, protect=False))
    policy.thread.start()
    assert policy.reached.wait(10)
    pids: list[int] = []
    paying = Paused(lambda: recharge(db, setup, "100", "receipt-1", outbox=outbox))
    noting_backends(db, monkeypatch, pids, lambda: paying)
    paying.thread.start()
    blocked_or_done(db, paying.thread, pids)
    policy.release()
    paying.release()

    assert not isinstance(policy.outcome, Exception), policy.outcome
    assert not isinstance(paying.outcome, Exception), paying.outcome
    assert (wallet(db, setup.account), owed(db, setup.account)) == (D("95.00"), D("0.00"))
    assert supply(db, setup) is Supply.ON
    check_books(db)


def test_emergency_credit_taken_while_a_batch_deducts_does_not_restore_a_negative_balance(
    db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut at 0.00; the tenant takes 10.00 of emergency credit while a batch deducts 12.00.
    Deciding on the balance read before the batch restores supply at -2.00."""
    setup = one_meter_account(db, price="1", credit="10")
    outbox = RecordingOutbox()
    set_policy(db, setup, outbox, emergency_credit="10.00")
    Ingestor(db, outbox).ingest([reading(setup.meter_id, minutes(15), "1010")])
    assert supply(db, setup) is Supply.OFF
    clock.advance(timedelta(hours=1))
    real_may = control_admin.may_take_emergency_credit

    def may_after_pause(*args: Any) -> Any:  # runs right after the balance is read
        taking.hold()
        return real_may(*args)

    monkeypatch.setattr(control_admin, "may_take_emergency_credit", may_after_pause)
    taking = Paused(
        lambda: control_admin.take_emergency_credit(
            db, organisation_id=setup.org.id, number="A-1", actor="tenant", outbox=outbox
        )
    )
    taking.thread.start()
    assert taking.reached.wait(10)
    pids: list[int] = []
    batch = Paused(
        lambda: Ingestor(db, outbox).ingest([reading(setup.meter_id, minutes(30), "1022")])
    )
    noting_backends(db, monkeypatch, pids, lambda: batch)
    batch.thread.start()
    blocked_or_done(db, batch.thread, pids)
    taking.release()
    batch.release()

    assert not isinstance(taking.outcome, Exception), taking.outcome
    assert not isinstance(batch.outcome, Exception), batch.outcome
    assert wallet(db, setup.account) - owed(db, setup.account) == D("-2.00")
    assert supply(db, setup) is Supply.OFF
    check_books(db)


def test_policy_changes_emergency_credit_recharges_batches_and_ticks_do_not_deadlock(
    db: Database, clock: FakeClock
) -> None:
    """Everything that locks an account's rows, at once and over and over: each takes them in
    the same order (account row, cursor, wallet and arrears by id, control row), so PostgreSQL
    never has to break a deadlock and nothing fails."""
    if db.dialect != "postgresql":
        pytest.skip("SQLite writers take turns")
    setup = one_meter_account(db, price="1", credit="5", overdraft="3")
    outbox = RecordingOutbox()
    set_policy(db, setup, outbox, emergency_credit="2.00")
    rounds = 12
    errors: list[BaseException] = []

    def run(step: Callable[[int], object]) -> Callable[[], None]:
        def loop() -> None:
            for i in range(rounds):
                try:
                    step(i)
                except ConflictError:
                    pass  # e.g. emergency credit not available now: a refusal, not a failure
                except BaseException as error:
                    errors.append(error)

        return loop

    steps: list[Callable[[int], object]] = [
        lambda i: Ingestor(db, outbox).ingest(
            [reading(setup.meter_id, minutes(15 * (i + 1)), str(1000 + 2 * (i + 1)))]
        ),
        lambda i: recharge(db, setup, "1", f"r-{i}", outbox=outbox),
        lambda i: set_policy(db, setup, outbox, protect=bool(i % 2), cut_at="overdraft"),
        lambda i: control_admin.take_emergency_credit(
            db, organisation_id=setup.org.id, number="A-1", actor="tenant", outbox=outbox
        ),
        lambda i: control_tick.tick(db, outbox=outbox),
    ]
    threads = [threading.Thread(target=run(step)) for step in steps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not [e for e in errors if isinstance(e, DBAPIError)], errors
    assert not errors, errors
    check_books(db)


# --- 2. the same reversal or key twice at the same time ----------------------------------------


def test_two_reversals_of_one_recharge_at_once_reverse_it_once_with_a_clear_refusal(
    db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = one_meter_account(db, price="1", credit="100")
    entry = recharge(db, setup, "50", "receipt-1").transfer_id
    first = held_before(
        monkeypatch, cashier_refund.audit, "record", lambda: reverse(db, setup, entry, "void-1")
    )
    second = racing(db, monkeypatch, lambda: reverse(db, setup, entry, "void-2"))
    first.release()
    second.release()

    assert not isinstance(first.outcome, Exception), first.outcome
    assert isinstance(second.outcome, ConflictError), second.outcome
    assert "already reversed" in str(second.outcome)
    assert wallet(db, setup.account) == D("100.00")
    assert [t["reverses_id"] for t in all_transfers(db) if t["reason"] == "reversal"] == [entry]
    check_books(db)


def test_one_key_on_two_accounts_at_once_is_refused_as_reused_not_a_database_error(
    db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = one_meter_account(db, price="1", credit="100")
    other = open_account(
        db, setup.org, "A-2", [(make_meter(db, setup.org, "M2"), setup.tariff_id, "0")]
    )
    first = held_before(
        monkeypatch, cashier, "tell", lambda: recharge(db, setup, "50", "receipt-9")
    )
    second = racing(
        db,
        monkeypatch,
        lambda: recharge(db, setup, "70", "receipt-9", account_id=other.account_id),
    )
    first.release()
    second.release()

    assert not isinstance(first.outcome, Exception), first.outcome
    assert isinstance(second.outcome, IdempotencyConflictError), second.outcome
    assert (wallet(db, setup.account), wallet(db, other)) == (D("150.00"), D("100.00"))
    check_books(db)


# --- 3. a close sent again with its key ------------------------------------------------------


def test_a_close_sent_again_with_its_key_answers_the_first_result(
    db: Database, clock: FakeClock
) -> None:
    setup = one_meter_account(db, price="1", credit="100")
    clock.advance(timedelta(hours=1))
    first = close(db, setup, "1015", key="close-1")
    before = (all_transfers(db), row_counts(db))

    again = close(db, setup, "1015", key="close-1")

    assert again == first
    assert (all_transfers(db), row_counts(db)) == before
    with pytest.raises(ConflictError, match="already closed"):
        close(db, setup, "1015", key="close-2")
    with pytest.raises(IdempotencyConflictError):
        close(db, setup, "1016", key="close-1")  # the same key, another final reading
    check_books(db)


def test_a_close_without_a_refund_sent_again_answers_the_first_result(
    db: Database, clock: FakeClock
) -> None:
    """Nothing to refund (the credit used up exactly): no settlement transfer carries the key."""
    setup = one_meter_account(db, price="1", credit="10")
    clock.advance(timedelta(hours=1))
    first = close(db, setup, "1010", key="close-1")
    assert first.refund_transfer_id is None

    assert close(db, setup, "1010", key="close-1") == first


def test_one_close_key_on_two_accounts_at_once_is_refused_as_reused_not_a_database_error(
    db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both closes refund their credit under the organisation-wide key: the second waits for the
    first's settlement, then must be refused as a reused key (exit 5) and leave A-2 open."""
    setup = one_meter_account(db, price="1", credit="100")
    meter_2 = make_meter(db, setup.org, "M2")
    other = open_account(db, setup.org, "A-2", [(meter_2, setup.tariff_id, "0")], credit="70")
    clock.advance(timedelta(hours=1))
    first = held_before(  # settled, not yet committed
        monkeypatch, accounts.audit, "record", lambda: close(db, setup, "1010", key="close-9")
    )
    second = racing(
        db,
        monkeypatch,
        lambda: close(db, setup, "5", key="close-9", number="A-2", meter_id=meter_2),
    )
    first.release()
    second.release()

    assert first.outcome == accounts.ClosedAccount("A-1", D("90.00"), D("0.00"), ANY)
    assert isinstance(second.outcome, IdempotencyConflictError), second.outcome
    with db.read() as conn:
        statuses = dict(conn.execute(text("SELECT number, status FROM accounts")).all())
    assert statuses == {"A-1": "closed", "A-2": "open"}
    assert wallet(db, other) == D("70.00")
    check_books(db)


def test_a_close_key_used_by_another_accounts_close_is_refused_even_with_nothing_to_refund(
    db: Database, clock: FakeClock
) -> None:
    """No refund transfer carries the key when there is nothing to refund: the account's own
    record of its close key must refuse it (exit 5), leaving the second account open."""
    setup = one_meter_account(db, price="1", credit="10")
    meter_2 = make_meter(db, setup.org, "M2")
    open_account(db, setup.org, "A-2", [(meter_2, setup.tariff_id, "0")], credit="5")
    clock.advance(timedelta(hours=1))
    assert close(db, setup, "1010", key="close-7").refund_transfer_id is None  # used up exactly
    before = (all_transfers(db), row_counts(db))

    with pytest.raises(IdempotencyConflictError):
        close(db, setup, "5", key="close-7", number="A-2", meter_id=meter_2)

    assert (all_transfers(db), row_counts(db)) == before
    with db.read() as conn:
        statuses = dict(conn.execute(text("SELECT number, status FROM accounts")).all())
    assert statuses == {"A-1": "closed", "A-2": "open"}
    assert close(db, setup, "1010", key="close-7").refund_transfer_id is None  # still a replay
    check_books(db)


# --- 4. desk entries after the account closed -------------------------------------------------


@pytest.mark.parametrize("kind", ["recharge", "refund"])
def test_a_desk_entry_of_a_closed_account_cannot_be_reversed(
    db: Database, clock: FakeClock, kind: str
) -> None:
    """Closing settled the wallet: reversing a recharge would take the closed wallet into its
    overdraft after the refund paid the money out; reversing a refund would leave money in a
    closed wallet nobody can pay out. The clerk is told why, and nothing changes."""
    setup = one_meter_account(db, price="1", credit="100", overdraft="50")
    if kind == "recharge":
        entry = recharge(db, setup, "30", "receipt-1").transfer_id
    else:
        entry = cashier_refund.refund(
            db,
            organisation_id=setup.org.id,
            account_id=setup.account.account_id,
            amount="30",
            method="cash",
            actor=ACTOR,
            idempotency_key="refund-1",
        ).transfer_id
    clock.advance(timedelta(hours=1))
    close(db, setup, "1000")
    before = (all_transfers(db), row_counts(db))

    with pytest.raises(ConflictError, match="closed"):
        reverse(db, setup, entry, "void-1")

    assert (all_transfers(db), row_counts(db)) == before
    assert wallet(db, setup.account) == D("0.00")
    check_books(db)


def test_a_refund_on_a_closed_account_is_refused_as_closed(db: Database, clock: FakeClock) -> None:
    setup = one_meter_account(db, price="1", credit="100", overdraft="50")
    clock.advance(timedelta(hours=1))
    close(db, setup, "1000")

    with pytest.raises(ConflictError, match="closed"):
        refund(db, setup, "10", "refund-1")
    assert wallet(db, setup.account) == D("0.00")


def test_a_reversal_racing_a_close_never_pays_the_recharge_out_twice(
    db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The close read the wallet (150.00) while a reversal of a 50.00 recharge was posting: the
    refund of 150.00 then paid the reversed 50.00 out in cash and left the closed wallet at
    -50.00 of its overdraft."""
    setup = one_meter_account(db, price="1", credit="100", overdraft="50")
    entry = recharge(db, setup, "50", "receipt-1").transfer_id
    clock.advance(timedelta(hours=1))
    voiding = held_before(
        monkeypatch, cashier_refund.audit, "record", lambda: reverse(db, setup, entry, "void-1")
    )
    closing = racing(db, monkeypatch, lambda: close(db, setup, "1000"))
    voiding.release()
    closing.release()

    assert not isinstance(voiding.outcome, Exception), voiding.outcome
    assert not isinstance(closing.outcome, Exception), closing.outcome
    assert closing.outcome.refunded == D("100.00")
    assert (wallet(db, setup.account), owed(db, setup.account)) == (D("0.00"), D("0.00"))
    check_books(db)


# --- 5. operator keys shaped like the keys the desk derives ----------------------------------


@pytest.mark.parametrize("suffix", ["repay", "emergency"])
def test_an_operator_key_shaped_like_a_derived_key_does_not_block_a_later_recharge(
    db: Database, clock: FakeClock, suffix: str
) -> None:
    """A recharge keyed "R-7:repay" must not make the recharge keyed "R-7" fail when that one
    repays arrears (or emergency credit) under a key derived from its own."""
    setup = one_meter_account(db, price="1", credit="10")
    outbox = RecordingOutbox()
    set_policy(db, setup, outbox, emergency_credit="10.00")
    Ingestor(db, outbox).ingest([reading(setup.meter_id, minutes(15), "1015")])  # owes 5.00
    if suffix == "emergency":
        control_admin.take_emergency_credit(
            db, organisation_id=setup.org.id, number="A-1", actor="tenant", outbox=outbox
        )
    recharge(db, setup, "1", f"R-7:{suffix}")

    done = recharge(db, setup, "20", "R-7")

    assert (done.arrears, owed(db, setup.account)) == (D("0.00"), D("0.00"))
    check_books(db)


def test_a_close_key_shaped_like_a_derived_key_does_not_block_a_later_close(
    db: Database, clock: FakeClock
) -> None:
    setup = one_meter_account(db, price="1", credit="10", overdraft="20")
    recharge(db, setup, "1", "C-1:overdraft")
    clock.advance(timedelta(hours=1))

    closed = close(db, setup, "1016", key="C-1")  # 5.00 of the overdraft used

    assert (closed.refunded, closed.arrears) == (D("0.00"), D("5.00"))
    check_books(db)


# --- refunds and reversals decide at once, as recharges and deductions do ---------------------


def test_a_refund_of_all_the_credit_cuts_supply_at_once(db: Database) -> None:
    setup = one_meter_account(db, credit="50")
    assert supply(db, setup) is Supply.ON
    refund(db, setup, "50", "refund-all")
    assert supply(db, setup) is Supply.OFF  # cut at zero: not left on until the next reading
    check_books(db)


def test_a_reversed_recharge_that_leaves_the_account_in_debt_cuts_supply_at_once(
    db: Database, clock: FakeClock
) -> None:
    setup = one_meter_account(db, credit="10", overdraft="100")
    topped = recharge(db, setup, "40", "r-40")
    clock.advance(timedelta(hours=1))
    Ingestor(db).ingest([reading(setup.meter_id, clock.now, "1030.5951")])  # 30.5951 × 0.6537
    assert wallet(db, setup.account) == D("30.00")
    reverse(db, setup, topped.transfer_id, "undo-r-40")
    assert wallet(db, setup.account) == D("-10.00")
    assert supply(db, setup) is Supply.OFF
    check_books(db)


def test_a_reversed_refund_restores_supply_at_once(db: Database) -> None:
    setup = one_meter_account(db, credit="50")
    refunded = refund(db, setup, "50", "refund-all")
    assert supply(db, setup) is Supply.OFF
    reverse(db, setup, refunded.transfer_id, "undo-refund")
    assert wallet(db, setup.account) == D("50.00")
    assert supply(db, setup) is Supply.ON
    check_books(db)
