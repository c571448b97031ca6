"""The ledger at the desk and below it: idempotent recharge and refund, reversal at most once,
the floor enforced by the database itself, and arrears — what a deduction beyond the floor
becomes and what the next recharge repays first."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from builders import (
    D,
    Setup,
    all_transfers,
    balances_from_transfers,
    deducted,
    ledger_balances,
    make_meter,
    make_org,
    make_tariff,
    minutes,
    one_meter_account,
    open_account,
    owed,
    reading,
    row_counts,
    tou_definition,
    wallet,
)
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from meterdesk.billing import cashier, cashier_refund
from meterdesk.billing.ingest import Ingestor
from meterdesk.db.database import Database
from meterdesk.db.types import instant_int
from meterdesk.ledger import repository as ledger
from meterdesk.ledger.model import AccountKind, Reason, TransferRequest
from meterdesk.shared.errors import (
    ConflictError,
    IdempotencyConflictError,
    InsufficientFundsError,
    NotFoundError,
)
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration


def recharge(
    db: Database, setup: Setup, amount: str, key: str, **extra: object
) -> cashier.MoneyResult:
    arguments: dict[str, object] = {"method": "cash", "actor": "cashier", **extra}
    return cashier.recharge(
        db,
        organisation_id=setup.org.id,
        account_id=setup.account.account_id,
        amount=amount,
        idempotency_key=key,
        **arguments,  # type: ignore[arg-type]
    )


def refund(
    db: Database, setup: Setup, amount: str, key: str, **extra: object
) -> cashier.MoneyResult:
    arguments: dict[str, object] = {"method": "cash", "actor": "cashier", **extra}
    return cashier_refund.refund(
        db,
        organisation_id=setup.org.id,
        account_id=setup.account.account_id,
        amount=amount,
        idempotency_key=key,
        **arguments,  # type: ignore[arg-type]
    )


def reverse(db: Database, setup: Setup, transfer_id: int, key: str) -> int:
    return cashier_refund.reverse(
        db,
        organisation_id=setup.org.id,
        transfer_id=transfer_id,
        actor="cashier",
        idempotency_key=key,
    )


def use(db: Database, setup: Setup, at_minutes: int, total: str) -> None:
    Ingestor(db).ingest([reading(setup.meter_id, minutes(at_minutes), total)])


# --- idempotency -------------------------------------------------------------------------------


def test_a_repeated_recharge_returns_the_first_result_and_moves_no_money(db: Database) -> None:
    setup = one_meter_account(db, credit="0")
    first = recharge(db, setup, "50", "receipt-1")
    transfers_before = len(all_transfers(db))

    again = recharge(db, setup, "50.00", "receipt-1")

    assert (first.replayed, again.replayed) == (False, True)
    assert again.transfer_id == first.transfer_id
    assert again.balance == first.balance == D("50.00")
    assert len(all_transfers(db)) == transfers_before
    assert wallet(db, setup.account) == D("50.00")


@pytest.mark.parametrize(
    ("amount", "change"),
    [("60", {}), ("50", {"method": "wechat"}), ("50", {"reference": "another receipt"})],
    ids=["amount", "method", "reference"],
)
def test_the_same_recharge_key_for_a_different_request_is_a_conflict(
    db: Database, amount: str, change: dict[str, str]
) -> None:
    setup = one_meter_account(db, credit="0")
    recharge(db, setup, "50", "receipt-1")

    with pytest.raises(IdempotencyConflictError, match="already used for a different request"):
        recharge(db, setup, amount, "receipt-1", **change)

    assert wallet(db, setup.account) == D("50.00")


def test_the_same_recharge_key_on_another_account_is_a_conflict(db: Database) -> None:
    setup = one_meter_account(db, credit="0")
    other_meter = make_meter(db, setup.org, "M2")
    other = open_account(db, setup.org, "A-2", [(other_meter, setup.tariff_id, "0")], credit="0")
    recharge(db, setup, "50", "receipt-1")

    with pytest.raises(IdempotencyConflictError):
        cashier.recharge(
            db,
            organisation_id=setup.org.id,
            account_id=other.account_id,
            amount="50",
            method="cash",
            actor="cashier",
            idempotency_key="receipt-1",
        )
    assert wallet(db, other) == D("0.00")


def test_idempotency_keys_belong_to_one_organisation(db: Database) -> None:
    first = one_meter_account(db, credit="0")
    org_b = make_org(db, "Org B")
    tariff_b = make_tariff(db, org_b)
    meter_b = make_meter(db, org_b, "M1")
    account_b = open_account(db, org_b, "A-1", [(meter_b, tariff_b, "0")], credit="0")
    second = Setup(org_b, meter_b, tariff_b, account_b)

    recharge(db, first, "50", "receipt-1")
    result = recharge(db, second, "70", "receipt-1")

    assert not result.replayed
    assert (wallet(db, first.account), wallet(db, account_b)) == (D("50.00"), D("70.00"))


def test_a_repeated_refund_returns_the_first_result_and_a_changed_one_conflicts(
    db: Database,
) -> None:
    setup = one_meter_account(db, credit="100")
    first = refund(db, setup, "30", "refund-1")

    again = refund(db, setup, "30", "refund-1")
    with pytest.raises(IdempotencyConflictError):
        refund(db, setup, "31", "refund-1")

    assert again.replayed and again.transfer_id == first.transfer_id
    assert wallet(db, setup.account) == D("70.00")


def test_a_refund_key_replays_even_after_the_balance_no_longer_covers_it(db: Database) -> None:
    setup = one_meter_account(db, credit="100")
    first = refund(db, setup, "80", "refund-1")
    refund(db, setup, "20", "refund-2")

    again = refund(db, setup, "80", "refund-1")

    assert again.replayed and again.transfer_id == first.transfer_id
    assert wallet(db, setup.account) == D("0.00")


def test_a_refund_beyond_the_balance_is_refused_and_changes_nothing(db: Database) -> None:
    setup = one_meter_account(db, credit="100")
    before = row_counts(db)

    with pytest.raises(InsufficientFundsError, match=r"only 100\.00 can be refunded"):
        refund(db, setup, "100.01", "refund-1")

    assert row_counts(db) == before
    assert wallet(db, setup.account) == D("100.00")


# --- reversal ----------------------------------------------------------------------------------


def test_reversing_a_recharge_takes_the_money_back_with_an_opposite_transfer(db: Database) -> None:
    setup = one_meter_account(db, credit="0")
    made = recharge(db, setup, "50", "receipt-1")

    reversal_id = reverse(db, setup, made.transfer_id, "fix-1")

    by_id = {t["id"]: t for t in all_transfers(db)}
    original, reversal = by_id[made.transfer_id], by_id[reversal_id]
    assert reversal["reason"] == "reversal"
    assert reversal["reverses_id"] == made.transfer_id
    assert (reversal["debit_account_id"], reversal["credit_account_id"]) == (
        original["credit_account_id"],
        original["debit_account_id"],
    )
    assert reversal["amount_fen"] == original["amount_fen"] == 5000
    assert wallet(db, setup.account) == D("0.00")


def test_a_transfer_is_reversed_at_most_once(db: Database) -> None:
    setup = one_meter_account(db, credit="0")
    made = recharge(db, setup, "50", "receipt-1")
    reversal_id = reverse(db, setup, made.transfer_id, "fix-1")

    assert reverse(db, setup, made.transfer_id, "fix-1") == reversal_id  # a replay
    with pytest.raises(ConflictError, match="already reversed"):
        reverse(db, setup, made.transfer_id, "fix-2")
    assert wallet(db, setup.account) == D("0.00")


def test_a_reversal_cannot_be_reversed(db: Database) -> None:
    setup = one_meter_account(db, credit="0")
    made = recharge(db, setup, "50", "receipt-1")
    reversal_id = reverse(db, setup, made.transfer_id, "fix-1")

    with pytest.raises(ConflictError):
        reverse(db, setup, reversal_id, "fix-2")
    assert wallet(db, setup.account) == D("0.00")


def test_a_refund_can_be_reversed(db: Database) -> None:
    setup = one_meter_account(db, credit="100")
    made = refund(db, setup, "30", "refund-1")

    reverse(db, setup, made.transfer_id, "fix-1")

    assert wallet(db, setup.account) == D("100.00")


def test_a_deduction_cannot_be_reversed_at_the_desk(db: Database) -> None:
    setup = one_meter_account(db, price="1", credit="100")
    use(db, setup, 60, "1010")
    deduction = next(t for t in all_transfers(db) if t["reason"] == "deduction")

    with pytest.raises(ConflictError, match="only recharges, refunds and arrears paid at the desk"):
        reverse(db, setup, deduction["id"], "fix-1")
    assert wallet(db, setup.account) == D("90.00")


def test_reversing_a_recharge_already_spent_is_refused_by_the_floor(db: Database) -> None:
    setup = one_meter_account(db, price="1", credit="0")
    made = recharge(db, setup, "50", "receipt-1")
    use(db, setup, 60, "1010")
    before = row_counts(db)

    with pytest.raises(InsufficientFundsError) as refused:
        reverse(db, setup, made.transfer_id, "fix-1")

    assert row_counts(db) == before
    assert wallet(db, setup.account) == D("40.00")
    # In the desk's words (it was "ledger account 17 would fall to -1000 fen, below its floor").
    assert str(refused.value) == (
        f"recharge {made.transfer_id} of 50.00 cannot be reversed: account "
        f"{setup.account.number} holds 40.00, so part of the recharge was already used; "
        "refund what is left instead"
    )


def test_a_recharge_spent_into_the_overdraft_names_the_floor_when_refused(db: Database) -> None:
    setup = one_meter_account(db, price="1", credit="0", overdraft="20")
    made = recharge(db, setup, "50", "receipt-1")
    use(db, setup, 60, "1040")

    with pytest.raises(InsufficientFundsError) as refused:
        reverse(db, setup, made.transfer_id, "fix-1")

    assert "holds 10.00 (its overdraft floor is -20.00)" in str(refused.value)
    assert wallet(db, setup.account) == D("10.00")


def test_a_transfer_of_another_organisation_is_not_found(db: Database) -> None:
    setup = one_meter_account(db, credit="0")
    made = recharge(db, setup, "50", "receipt-1")
    stranger = make_org(db, "Org B")

    with pytest.raises(NotFoundError):
        cashier_refund.reverse(
            db,
            organisation_id=stranger.id,
            transfer_id=made.transfer_id,
            actor="x",
            idempotency_key="k",
        )


# --- the floor, in the database ----------------------------------------------------------------


@pytest.mark.parametrize(("overdraft", "floor_fen"), [("0", 0), ("50", -5000)])
def test_the_database_itself_refuses_a_wallet_balance_below_its_floor(
    db: Database, overdraft: str, floor_fen: int
) -> None:
    setup = one_meter_account(db, credit="10", overdraft=overdraft)
    update = text("UPDATE ledger_accounts SET balance_fen = :balance WHERE id = :id")

    with db.transaction() as conn:  # down to the floor itself is allowed
        conn.execute(update, {"balance": floor_fen, "id": setup.account.wallet_id})
    with pytest.raises(IntegrityError), db.transaction() as conn:
        conn.execute(update, {"balance": floor_fen - 1, "id": setup.account.wallet_id})

    assert wallet(db, setup.account) == D(floor_fen) / 100


def test_the_database_refuses_a_second_reversal_of_one_transfer(db: Database) -> None:
    setup = one_meter_account(db, credit="0")
    made = recharge(db, setup, "50", "receipt-1")
    reverse(db, setup, made.transfer_id, "fix-1")
    insert = text(
        "INSERT INTO transfers (organisation_id, idempotency_key, request_hash, debit_account_id, "
        "credit_account_id, amount_fen, reason, reverses_id, actor, created_at) "
        "VALUES (:org, :key, 'h', :debit, :credit, 5000, 'reversal', :reverses, 'raw', 0)"
    )
    original = next(t for t in all_transfers(db) if t["id"] == made.transfer_id)

    with pytest.raises(IntegrityError), db.transaction() as conn:
        conn.execute(
            insert,
            {
                "org": setup.org.id,
                "key": "raw-second-reversal",
                "debit": original["credit_account_id"],
                "credit": original["debit_account_id"],
                "reverses": made.transfer_id,
            },
        )


@pytest.mark.parametrize(
    ("key", "amount", "same_accounts"),
    [("fresh-key", 0, False), ("fresh-key", 100, True), ("REUSED", 100, False)],
    ids=["zero-amount", "one-account", "reused-key"],
)
def test_the_database_refuses_malformed_transfers(
    db: Database, key: str, amount: int, same_accounts: bool
) -> None:
    setup = one_meter_account(db, credit="10")
    [first] = all_transfers(db)
    insert = text(
        "INSERT INTO transfers (organisation_id, idempotency_key, request_hash, debit_account_id, "
        "credit_account_id, amount_fen, reason, actor, created_at) "
        "VALUES (:org, :key, 'h', :debit, :credit, :amount, 'recharge', 'raw', 0)"
    )
    debit = setup.account.wallet_id if same_accounts else first["debit_account_id"]

    with pytest.raises(IntegrityError), db.transaction() as conn:
        conn.execute(
            insert,
            {
                "org": setup.org.id,
                "key": first["idempotency_key"] if key == "REUSED" else key,
                "debit": debit,
                "credit": setup.account.wallet_id,
                "amount": amount,
            },
        )


# --- arrears -----------------------------------------------------------------------------------


def test_a_deduction_beyond_the_floor_goes_to_arrears(db: Database) -> None:
    setup = one_meter_account(db, price="1", credit="10")

    use(db, setup, 60, "1030")  # 30.00 due, 10.00 in the wallet

    assert (wallet(db, setup.account), owed(db, setup.account)) == (D("0.00"), D("20.00"))
    assert deducted(db, setup.account.account_id) == D("30.00")


def test_a_deduction_uses_the_overdraft_before_arrears(db: Database) -> None:
    setup = one_meter_account(db, price="1", credit="10", overdraft="15")

    use(db, setup, 60, "1030")

    assert (wallet(db, setup.account), owed(db, setup.account)) == (D("-15.00"), D("5.00"))


def test_the_next_recharge_repays_arrears_first(db: Database) -> None:
    setup = one_meter_account(db, price="1", credit="10")
    use(db, setup, 60, "1030")

    result = recharge(db, setup, "50", "receipt-1")

    assert (result.balance, result.arrears) == (D("30.00"), D("0.00"))
    repayment = [t for t in all_transfers(db) if t["reason"] == "arrears_repayment"]
    assert [t["amount_fen"] for t in repayment] == [2000]


def test_a_recharge_smaller_than_the_arrears_repays_part_of_them(db: Database) -> None:
    setup = one_meter_account(db, price="1", credit="10")
    use(db, setup, 60, "1030")

    result = recharge(db, setup, "15", "receipt-1")

    assert (result.balance, result.arrears) == (D("0.00"), D("5.00"))


def test_with_an_overdraft_in_use_a_recharge_still_repays_arrears_first(db: Database) -> None:
    """Wallet at its -50.00 floor, 30.00 in arrears; a 40.00 recharge clears the arrears (30.00)
    and leaves -40.00 in the wallet — not -10.00 with the arrears untouched (a bug once)."""
    setup = one_meter_account(db, price="1", credit="10", overdraft="50")
    use(db, setup, 60, "1090")
    assert (wallet(db, setup.account), owed(db, setup.account)) == (D("-50.00"), D("30.00"))

    result = recharge(db, setup, "40", "receipt-1")

    assert (result.balance, result.arrears) == (D("-40.00"), D("0.00"))


def test_the_wallet_and_arrears_after_late_data_do_not_depend_on_arrival_order(
    db: Database,
) -> None:
    """Credit 30.00, overdraft 50.00, time-of-use prices. In order (10:00 1100, 15:00 1101) the
    tenant owes 69.05: wallet -39.05, no arrears. When 15:00 arrives first, 95.37 is deducted
    (wallet -50.00, arrears 15.37); the late 10:00 reading gives 26.32 back, which must repay
    the arrears first: wallet -39.05, no arrears (once it ended at -23.68 and 15.37)."""
    in_order = one_meter_account(db, credit="30", overdraft="50", definition=tou_definition())
    meter_b = make_meter(db, in_order.org, "M2")
    account_b = open_account(
        db,
        in_order.org,
        "A-2",
        [(meter_b, in_order.tariff_id, "1000")],
        credit="30",
        overdraft="50",
    )
    pipeline = Ingestor(db)
    pipeline.ingest([reading(in_order.meter_id, minutes(120), "1100")])
    pipeline.ingest([reading(in_order.meter_id, minutes(420), "1101")])
    pipeline.ingest([reading(meter_b, minutes(420), "1101")])
    pipeline.ingest([reading(meter_b, minutes(120), "1100")])

    assert (wallet(db, in_order.account), owed(db, in_order.account)) == (D("-39.05"), D("0.00"))
    assert (wallet(db, account_b), owed(db, account_b)) == (D("-39.05"), D("0.00"))


# --- the books balance -------------------------------------------------------------------------


def test_after_a_day_at_the_desk_the_ledger_sums_to_zero_and_balances_match_transfers(
    db: Database, clock: FakeClock
) -> None:
    setup = one_meter_account(db, price="0.6537", credit="20", overdraft="5")
    pipeline = Ingestor(db)
    for step in range(1, 30):
        clock.advance(timedelta(minutes=10))
        total = D("1000") + D("1.37") * step
        pipeline.ingest([reading(setup.meter_id, minutes(10 * step), total)])
    assert owed(db, setup.account) > 0
    recharge(db, setup, "50", "receipt-1")
    made = refund(db, setup, "1", "refund-1")
    reverse(db, setup, made.transfer_id, "fix-1")

    balances = ledger_balances(db)
    assert sum(balances.values()) == 0
    assert balances == balances_from_transfers(db)
    assert all(t["amount_fen"] > 0 for t in all_transfers(db))


# --- concurrency -------------------------------------------------------------------------------


def wait_until_waiting_for_a_lock(engine: Engine, pid: int) -> None:
    """Poll PostgreSQL until backend ``pid`` waits for a lock (10 s at most)."""
    deadline = time.monotonic() + 10
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": pid},
            ).scalar_one_or_none()
            conn.rollback()  # a fresh statistics snapshot on the next round
            if waiting == "Lock":
                return
            time.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited for a lock")


def test_two_transactions_creating_an_organisations_system_account_get_the_same_one(
    engine: Engine, request: pytest.FixtureRequest
) -> None:
    """Revenue and clearing accounts are created on first use (ledger.repository.system_account:
    SELECT, then INSERT). Two ingest workers, or a worker and the desk, can use one for the
    first time together: the second must find the first's account. On PostgreSQL the second
    INSERT waits for the first transaction and then fails with a unique violation, so that whole
    batch or recharge is lost; SQLite's BEGIN IMMEDIATE runs the two one after the other."""
    db = Database(engine=engine, clock=FakeClock(minutes(0)))
    org = make_org(db)
    first_inserted, release = threading.Event(), threading.Event()
    found: dict[str, object] = {}

    def create(name: str, hold: bool) -> None:
        try:
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    found[f"{name}-pid"] = conn.execute(text("SELECT pg_backend_pid()")).scalar()
                found[name] = ledger.system_account(
                    conn,
                    organisation_id=org.id,
                    code="revenue:electricity:energy",
                    kind=AccountKind.REVENUE,
                    at=minutes(0),
                )
                if hold:
                    first_inserted.set()
                    release.wait(10)
        except Exception as error:  # reported below, in the test's own thread
            found[name] = error

    first = threading.Thread(target=create, args=("first", True))
    second = threading.Thread(target=create, args=("second", False))
    first.start()
    assert first_inserted.wait(10)
    second.start()
    if engine.dialect.name == "postgresql":
        deadline = time.monotonic() + 10
        while "second-pid" not in found and time.monotonic() < deadline:
            time.sleep(0.01)
        wait_until_waiting_for_a_lock(engine, int(str(found["second-pid"])))
    else:
        time.sleep(0.2)
    release.set()
    first.join(10)
    second.join(10)

    assert not isinstance(found["second"], Exception), found["second"]
    assert found["second"] == found["first"]


def test_a_system_transfer_row_is_stored_as_the_same_request_would_be(db: Database) -> None:
    """Ingest posts deductions as ready rows (``apply_system_rows``); what lands in the table —
    request hash, empty columns, balances — is what ``apply_transfers`` stores for the request."""
    setup = one_meter_account(db, credit="10")
    wallet_id, arrears_id = setup.account.wallet_id, setup.account.arrears_id
    at = db.clock()
    fields = {
        "organisation_id": setup.org.id,
        "debit_account_id": wallet_id,
        "credit_account_id": arrears_id,
        "amount_fen": 123,
        "reason": Reason.DEDUCTION,
        "actor": "system:billing",
        "account_id": setup.account.account_id,
        "meter_id": setup.meter_id,
        "period_key": "2026-11",
    }
    with db.transaction() as conn:
        ledger.apply_transfers(
            conn, [TransferRequest(idempotency_key="as-request", created_at=at, **fields)]
        )
    with db.transaction() as conn:
        # given a Reason (not its value), the row must still hash as the request does
        row = ledger.system_transfer_row(
            idempotency_key="as-row", created_at=instant_int(at), **fields
        )
        ledger.apply_system_rows(conn, [row])

    by_key = {t["idempotency_key"]: t for t in all_transfers(db)}
    as_request, as_row = by_key["as-request"], by_key["as-row"]
    differing = {k for k in as_request if as_request[k] != as_row[k]}
    assert differing == {"id", "idempotency_key"}
    assert (
        as_row["method"] is as_row["reference"] is as_row["reverses_id"] is as_row["memo"] is None
    )
    assert wallet(db, setup.account) == D("10") - D("2.46")


@pytest.mark.parametrize(
    ("amount", "debit_is_credit", "key", "message"),
    [
        (0, False, "k", "must be positive"),
        (5, True, "k", "two different accounts"),
        (5, False, "", "idempotency key"),
    ],
)
def test_a_system_transfer_row_is_checked_like_a_request(
    amount: int, debit_is_credit: bool, key: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ledger.system_transfer_row(
            organisation_id=1,
            idempotency_key=key,
            debit_account_id=1,
            credit_account_id=1 if debit_is_credit else 2,
            amount_fen=amount,
            reason=Reason.DEDUCTION,
            actor="system:billing",
            created_at=0,
            account_id=None,
            meter_id=None,
            period_key=None,
        )
