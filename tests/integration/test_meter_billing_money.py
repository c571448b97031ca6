"""Money that has reached a meter (meter billing, 表端计费) on SQLite and PostgreSQL: the desk
cannot pay it out again (refund, close) or take it back in the ledger while the meter keeps it
(reversal), and a push whose recharge is gone never goes out.

The meter holds and spends what was pushed to it; the platform's wallet is never deducted in
meter billing, so its balance is everything ever pushed, not what the tenant has left."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from builders import (
    ACTOR,
    check_books,
    flat_definition,
    make_org,
    make_tariff,
    minutes,
    reading,
)
from test_commands import Meters, drain, executor, meter, meter_billing_account

from meterdesk.billing import accounts as account_service
from meterdesk.billing import cashier, cashier_refund, corrections
from meterdesk.billing.ingest import Ingestor
from meterdesk.db.database import Database
from meterdesk.devices import reconcile
from meterdesk.devices.commands import repository, service, writes
from meterdesk.devices.ports import DeviceRefusedError, DeviceTimeoutError, MeterAddress
from meterdesk.shared.errors import ConflictError, InsufficientFundsError
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration
D = Decimal


def desk_recharge(db: Database, org_id: int, account_id: int, amount: str, key: str) -> int:
    return cashier.recharge(
        db,
        organisation_id=org_id,
        account_id=account_id,
        amount=amount,
        method="cash",
        actor=ACTOR,
        idempotency_key=key,
    ).transfer_id


def push_of(db: Database, org_id: int, transfer_id: int) -> service.CommandView:
    [push] = [
        c
        for c in service.list_commands(db, organisation_id=org_id, kind="recharge")
        if c.params["transfer_id"] == transfer_id
    ]
    return push


def test_a_refund_never_pays_out_money_already_pushed_to_the_meter(
    db: Database, clock: FakeClock
) -> None:
    org, meter_id, opened = meter_billing_account(db)  # 100.00, pushed
    driver = Meters(clock)
    asyncio.run(drain(db, clock, executor(db, clock, driver)))
    assert driver.money[meter_id] == D("100.00")
    with pytest.raises(InsufficientFundsError, match="on the meter"):
        cashier_refund.refund(
            db,
            organisation_id=org.id,
            account_id=opened.account_id,
            amount="100",
            method="cash",
            actor=ACTOR,
            idempotency_key="refund-1",
        )
    # A recharge whose push was cancelled before it went out is still the platform's to refund.
    paid = desk_recharge(db, org.id, opened.account_id, "20", "desk-1")
    push = push_of(db, org.id, paid)
    service.cancel(db, organisation_id=org.id, command_id=push.id, actor=ACTOR)
    with pytest.raises(InsufficientFundsError, match="on the meter"):
        cashier_refund.refund(
            db,
            organisation_id=org.id,
            account_id=opened.account_id,
            amount="20.01",
            method="cash",
            actor=ACTOR,
            idempotency_key="refund-2",
        )
    done = cashier_refund.refund(
        db,
        organisation_id=org.id,
        account_id=opened.account_id,
        amount="20",
        method="cash",
        actor=ACTOR,
        idempotency_key="refund-3",
    )
    assert done.balance == D("100.00")


def test_a_pending_push_is_not_counted_as_refundable(db: Database, clock: FakeClock) -> None:
    """A push still pending may go out at any moment: cancel it first, then refund."""
    org, _, opened = meter_billing_account(db)
    with pytest.raises(InsufficientFundsError, match="on the meter"):
        cashier_refund.refund(
            db,
            organisation_id=org.id,
            account_id=opened.account_id,
            amount="1",
            method="cash",
            actor=ACTOR,
            idempotency_key="refund-1",
        )


def test_reversing_a_recharge_cancels_its_push_before_it_goes_out(
    db: Database, clock: FakeClock
) -> None:
    org, meter_id, opened = meter_billing_account(db)
    driver = Meters(clock)
    asyncio.run(drain(db, clock, executor(db, clock, driver)))
    paid = desk_recharge(db, org.id, opened.account_id, "20", "desk-1")
    cashier_refund.reverse(
        db, organisation_id=org.id, transfer_id=paid, actor=ACTOR, idempotency_key="undo-1"
    )
    asyncio.run(drain(db, clock, executor(db, clock, driver)))
    assert driver.sends == Counter({(meter_id, "recharge"): 1})  # the opening's only
    assert driver.money[meter_id] == D("100.00")
    push = push_of(db, org.id, paid)
    assert push.status == "cancelled" and "reversed" in (push.reason or "")


def test_a_recharge_already_on_the_meter_cannot_be_reversed(db: Database, clock: FakeClock) -> None:
    org, _, opened = meter_billing_account(db)
    asyncio.run(drain(db, clock, executor(db, clock, Meters(clock))))
    assert opened.initial_transfer_id is not None
    with pytest.raises(ConflictError, match="on the meter"):
        cashier_refund.reverse(
            db,
            organisation_id=org.id,
            transfer_id=opened.initial_transfer_id,
            actor=ACTOR,
            idempotency_key="undo-1",
        )


class SilentOnce(Meters):
    """The first push is sent and never answered."""

    async def recharge(self, meter: MeterAddress, amount: Decimal, purchase_count: int) -> None:
        if not self.sends[(meter.meter_id, "recharge")]:
            self.sends[(meter.meter_id, "recharge")] += 1
            raise DeviceTimeoutError("no answer within 1.0 s")
        await super().recharge(meter, amount, purchase_count)


def close(db: Database, org_id: int, meter_id: int, total: str, key: str = "close-1") -> Decimal:
    return account_service.close_account(
        db,
        organisation_id=org_id,
        number="A-1",
        final_readings=[account_service.FinalReading(meter_id, D(total))],
        refund_method="cash",
        actor=ACTOR,
        idempotency_key=key,
    ).refunded


def test_closing_refunds_what_the_meter_did_not_use_not_every_recharge(
    db: Database, clock: FakeClock
) -> None:
    org, meter_id, _ = meter_billing_account(db)
    driver = Meters(clock)
    asyncio.run(drain(db, clock, executor(db, clock, driver)))
    Ingestor(db).ingest([reading(meter_id, minutes(60), "1010")])  # 10 kWh × 0.6537 = 6.537
    clock.now = minutes(120)
    # 20 kWh in all at closing: 13.07 used on the meter, 86.93 left of the 100.00 pushed.
    assert close(db, org.id, meter_id, "1020") == D("86.93")
    check_books(db)


def test_closing_after_the_meter_ran_into_its_overdraft_leaves_arrears(
    db: Database, clock: FakeClock
) -> None:
    org, meter_id, _ = meter_billing_account(db, credit="5")
    asyncio.run(drain(db, clock, executor(db, clock, Meters(clock))))
    clock.now = minutes(120)
    closed = account_service.close_account(
        db,
        organisation_id=org.id,
        number="A-1",
        final_readings=[account_service.FinalReading(meter_id, D("1010"))],  # 6.54 used
        refund_method="cash",
        actor=ACTOR,
        idempotency_key="close-1",
    )
    assert (closed.refunded, closed.arrears, closed.refund_transfer_id) == (D("0"), D("1.54"), None)
    check_books(db)


def test_a_close_waits_for_a_push_on_its_way_to_the_meter(db: Database, clock: FakeClock) -> None:
    org, meter_id, opened = meter_billing_account(db)
    driver = SilentOnce(clock)  # the push goes out, no answer: it may be on the meter
    asyncio.run(executor(db, clock, driver).run_once())
    assert opened.initial_transfer_id is not None
    assert push_of(db, org.id, opened.initial_transfer_id).status == "sent"
    with pytest.raises(ConflictError, match="may be reaching the meter"):
        close(db, org.id, meter_id, "1000")
    asyncio.run(drain(db, clock, executor(db, clock, driver)))
    assert close(db, org.id, meter_id, "1000") == D("100.00")


def test_closing_cancels_a_push_not_yet_sent_and_refunds_it(db: Database, clock: FakeClock) -> None:
    org, meter_id, opened = meter_billing_account(db)
    driver = Meters(clock)
    asyncio.run(drain(db, clock, executor(db, clock, driver)))
    paid = desk_recharge(db, org.id, opened.account_id, "20", "desk-1")
    clock.now = minutes(10)
    assert close(db, org.id, meter_id, "1000") == D("120.00")
    asyncio.run(drain(db, clock, executor(db, clock, driver)))
    assert driver.sends == Counter({(meter_id, "recharge"): 1})  # the 20.00 never went out
    assert push_of(db, org.id, paid).status == "cancelled"
    check_books(db)


def test_a_purchase_counter_that_went_back_gets_no_money_until_a_replacement_is_recorded(
    db: Database, clock: FakeClock
) -> None:
    org, meter_id, opened = meter_billing_account(db)
    driver = Meters(clock, count=4)
    asyncio.run(drain(db, clock, executor(db, clock, driver)))  # purchase 5 confirmed
    driver.count[meter_id], driver.money[meter_id] = 0, D("0.00")  # reset (清零) or swapped
    reset = desk_recharge(db, org.id, opened.account_id, "20", "desk-1")
    asyncio.run(drain(db, clock, executor(db, clock, driver)))
    push = push_of(db, org.id, reset)
    assert push.status == "failed" and "went back" in (push.reason or ""), push.reason
    assert driver.sends == Counter({(meter_id, "recharge"): 1})
    # Its money never went out: the desk may refund it.
    cashier_refund.refund(
        db,
        organisation_id=org.id,
        account_id=opened.account_id,
        amount="20",
        method="cash",
        actor=ACTOR,
        idempotency_key="refund-1",
    )

    clock.now = minutes(30)
    corrections.replace_meter(
        db,
        organisation_id=org.id,
        replacement=corrections.Replacement(meter_id, clock.now, D("1000"), D("0")),
        actor=ACTOR,
    )
    clock.now = minutes(31)
    fresh = desk_recharge(db, org.id, opened.account_id, "30", "desk-2")
    asyncio.run(drain(db, clock, executor(db, clock, driver)))
    push = push_of(db, org.id, fresh)
    assert (push.status, push.params["purchase_count"]) == ("confirmed", 1)
    [row] = reconcile.reconcile(db, org.id)
    assert (row.purchases_expected, row.purchases_meter) == (1, 1)
    # The 100.00 left on the replaced device is not on this one: flagged, not hidden.
    assert row.verdict == "money differs by -100.00"


@pytest.mark.parametrize("who", ["cancel", "reverse", "close"])
def test_a_push_the_executor_marks_sent_meanwhile_is_not_cancelled(
    db: Database, clock: FakeClock, who: str
) -> None:
    """The desk reads the push unsent, the executor marks it sent (bytes about to leave) and
    commits while the desk's cancel waits for the row: the cancel must then find it sent."""
    if db.dialect != "postgresql":
        pytest.skip("SQLite writers take turns: the desk and the executor cannot interleave")
    org, meter_id, opened = meter_billing_account(db)
    asyncio.run(drain(db, clock, executor(db, clock, Meters(clock))))
    paid = desk_recharge(db, org.id, opened.account_id, "20", "desk-1")
    push_id = push_of(db, org.id, paid).id
    holding, release = threading.Event(), threading.Event()

    def executor_marks_sent() -> None:
        with db.engine.begin() as conn:
            command = repository.get(conn, push_id)
            assert command is not None
            assert writes.record_sent(conn, command, command.spec, clock(), {}, 0)
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=executor_marks_sent)
    thread.start()
    holding.wait(10)
    timer = threading.Timer(0.5, release.set)  # commit while the desk waits for the row
    timer.start()
    try:
        with pytest.raises(
            ConflictError, match=r"sent or finished meanwhile|may be reaching|on its way"
        ):
            if who == "cancel":
                service.cancel(db, organisation_id=org.id, command_id=push_id, actor=ACTOR)
            elif who == "reverse":
                cashier_refund.reverse(
                    db, organisation_id=org.id, transfer_id=paid, actor=ACTOR, idempotency_key="u"
                )
            else:
                close(db, org.id, meter_id, "1000")
    finally:
        release.set()
        thread.join(10)
        timer.join(10)
    assert push_of(db, org.id, paid).status == "sent"


class Crash(BaseException):
    """The executor's process dies: nothing of the attempt after this point is recorded."""


class CrashAfterSending(Meters):
    """The meter takes the push; the process dies before the read-back is recorded."""

    async def recharge(self, meter: MeterAddress, amount: Decimal, purchase_count: int) -> None:
        await super().recharge(meter, amount, purchase_count)
        raise Crash


def test_an_executor_killed_after_sending_a_push_leaves_it_to_the_next_one_which_confirms_it(
    db: Database, clock: FakeClock
) -> None:
    org, meter_id, opened = meter_billing_account(db)
    driver = CrashAfterSending(clock, count=2)
    with pytest.raises(Crash):
        asyncio.run(executor(db, clock, driver).run_once())
    assert opened.initial_transfer_id is not None
    push = push_of(db, org.id, opened.initial_transfer_id)
    assert (push.status, push.params["purchase_count"]) == ("sent", 3)  # recorded before sending
    # Leased: nobody takes it until the lease (180 s) ends, then the next executor reads the
    # counter, finds purchase 3 there and confirms without sending it again.
    assert asyncio.run(executor(db, clock, driver).run_once()) == 0
    clock.now = clock.now + timedelta(seconds=181)
    survivor = Meters(clock)
    survivor.count, survivor.money = driver.count, driver.money
    asyncio.run(drain(db, clock, executor(db, clock, survivor)))
    push = push_of(db, org.id, opened.initial_transfer_id)
    assert push.status == "confirmed"
    assert driver.sends + survivor.sends == Counter({(meter_id, "recharge"): 1})
    assert survivor.money[meter_id] == D("100.00")


class StrictMeters(Meters):
    """Takes a purchase only as the next count, like a real prepaid meter (and the simulator)."""

    async def recharge(self, meter: MeterAddress, amount: Decimal, purchase_count: int) -> None:
        if purchase_count != self.count.get(meter.meter_id, self.start[1]) + 1:
            raise DeviceRefusedError(f"purchase count {purchase_count} refused")
        await super().recharge(meter, amount, purchase_count)


def test_two_executors_push_every_recharge_once_and_in_order(
    db: Database, clock: FakeClock
) -> None:
    org = make_org(db)
    tariff_id = make_tariff(db, org, definition=flat_definition("0.6537"))
    accounts_of: dict[int, int] = {}
    for n in range(4):
        meter_id = meter(db, org, f"M{n}")
        request = account_service.OpenAccount(
            number=f"A-{n}",
            customer_id=org.customer_id,
            meters=[account_service.MeterOpening(meter_id, tariff_id, D("1000"))],
            billing_mode="meter",
            initial_credit="10",
        )
        opened = account_service.open_account(
            db, organisation_id=org.id, request=request, actor=ACTOR
        )
        accounts_of[meter_id] = opened.account_id
    for n in range(3):
        for meter_id, account_id in accounts_of.items():
            desk_recharge(db, org.id, account_id, str(n + 1), f"desk-{meter_id}-{n}")
    driver = StrictMeters(clock)
    asyncio.run(drain(db, clock, executor(db, clock, driver), executor(db, clock, driver)))
    pushes = service.list_commands(db, organisation_id=org.id, kind="recharge")
    assert {p.status for p in pushes} == {"confirmed"}
    for meter_id in accounts_of:
        mine = sorted((p.id, p.params["purchase_count"]) for p in pushes if p.meter_id == meter_id)
        assert [count for _, count in mine] == [1, 2, 3, 4]  # in the order they were made
        assert driver.money[meter_id] == D("16.00")
    assert driver.sends == Counter({(m, "recharge"): 4 for m in accounts_of})


class Hoarding(Meters):
    """Refuses any purchase that would take the meter above 150.00 (its hoarding limit)."""

    async def recharge(self, meter: MeterAddress, amount: Decimal, purchase_count: int) -> None:
        if self.money.get(meter.meter_id, self.start[0]) + amount > D("150.00"):
            self.sends[(meter.meter_id, "recharge")] += 1
            raise DeviceRefusedError("money would exceed the hoarding limit 150.00")
        await super().recharge(meter, amount, purchase_count)


def test_a_push_the_meter_refused_can_be_refunded_or_reversed(
    db: Database, clock: FakeClock
) -> None:
    org, meter_id, opened = meter_billing_account(db)
    driver = Hoarding(clock)
    asyncio.run(drain(db, clock, executor(db, clock, driver)))
    big = desk_recharge(db, org.id, opened.account_id, "80", "desk-1")
    bigger = desk_recharge(db, org.id, opened.account_id, "90", "desk-2")
    asyncio.run(drain(db, clock, executor(db, clock, driver)))
    for refused in (big, bigger):
        push = push_of(db, org.id, refused)
        assert push.status == "failed" and (push.reason or "").startswith("refused by meter")
    assert driver.money[meter_id] == D("100.00")
    cashier_refund.reverse(
        db, organisation_id=org.id, transfer_id=big, actor=ACTOR, idempotency_key="undo-1"
    )
    done = cashier_refund.refund(
        db,
        organisation_id=org.id,
        account_id=opened.account_id,
        amount="90",
        method="cash",
        actor=ACTOR,
        idempotency_key="refund-1",
    )
    assert done.balance == D("100.00")  # what the meter holds
    [row] = reconcile.reconcile(db, org.id)
    assert row.not_on_meter == D("0.00")
