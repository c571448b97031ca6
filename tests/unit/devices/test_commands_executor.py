"""The command executor with a fake driver and a fake clock: read-back confirmation, retries with
backoff and fresh validity windows, deadlines, refusals, supersede, already-in-state, and recharge
pushes that never take effect twice."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select
from test_commands_support import (
    ACTOR,
    FAST,
    T0,
    FakeDriver,
    FakeMeter,
    World,
    executor,
    make_world,
    run_until_idle,
    sqlite_db,
)

from meterdesk.audit.tables import audit_log
from meterdesk.devices.commands import service
from meterdesk.devices.commands.executor import ExecutorConfig
from meterdesk.devices.commands.model import CommandKind, CommandSpec
from meterdesk.devices.ports import RelayAction
from meterdesk.devices.tables import device_status
from meterdesk.shared.time import FakeClock

D = Decimal


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def world(tmp_path: Path, clock: FakeClock) -> World:
    return make_world(sqlite_db(tmp_path, clock), clock)


def send(
    world: World, kind: str, key: str, params: dict[str, object] | None = None, **extra: int
) -> int:
    result = service.send_command(
        world.db,
        organisation_id=world.organisation_id,
        meter_id=world.meter_id,
        kind=kind,
        params=params or {},
        actor=ACTOR,
        idempotency_key=key,
        **extra,  # type: ignore[arg-type]
    )
    return result.command.id


def push(world: World, key: str, amount: str, count: int) -> int:
    spec = CommandSpec(CommandKind.RECHARGE, amount=D(amount), purchase_count=count)
    with world.db.transaction() as conn:
        result = service.create_in(
            conn,
            organisation_id=world.organisation_id,
            meter_id=world.meter_id,
            spec=spec,
            actor=ACTOR,
            at=world.clock(),
            idempotency_key=key,
        )
    return result.command.id


def log(world: World, command_id: int) -> service.CommandLog:
    return service.command_log(
        world.db, organisation_id=world.organisation_id, command_id=command_id
    )


def run(world: World, driver: FakeDriver, config: ExecutorConfig = FAST) -> None:
    asyncio.run(
        run_until_idle(executor(world.db, world.clock, driver, config), world.db, world.clock)
    )


# --- confirmation by read-back -----------------------------------------------------------------


def test_trip_is_confirmed_when_the_read_back_shows_the_relay_open(
    world: World, clock: FakeClock
) -> None:
    driver = FakeDriver(clock)
    command_id = send(world, "relay_trip", "k1")
    run(world, driver)
    shown = log(world, command_id)
    assert shown.command.status == "confirmed" and shown.command.reason is None
    assert [e.event for e in shown.events] == ["created", "sent", "confirmed"]
    assert shown.events[-1].detail == {"state": "meter shows relay open", "sent": True}
    assert driver.sends == [("relay", RelayAction.TRIP)]
    with world.db.read() as conn:
        status = (
            conn.execute(select(device_status).where(device_status.c.meter_id == world.meter_id))
            .mappings()
            .one()
        )
        actions = conn.execute(select(audit_log.c.action).order_by(audit_log.c.id)).scalars().all()
    assert (status["relay"], status["state"], status["failures"]) == ("open", "online", 0)
    assert actions[-2:] == ["command.send", "command.confirmed"]


def test_command_already_in_its_state_is_confirmed_after_one_read_without_sending(
    world: World, clock: FakeClock
) -> None:
    driver = FakeDriver(clock, FakeMeter(relay="open"))
    command_id = send(world, "relay_trip", "k1")
    run(world, driver)
    shown = log(world, command_id)
    assert shown.command.status == "confirmed"
    assert shown.events[-1].detail == {"state": "meter shows relay open", "sent": False}
    assert driver.sends == [] and len(driver.calls) == 1


def test_valve_is_read_back_until_it_has_moved(world: World, clock: FakeClock) -> None:
    water = world.add_meter("W1", utility="water")
    driver = FakeDriver(clock)
    driver.valve_travel = timedelta(seconds=13)  # slower than the 8 s settle delay
    result = service.send_command(
        world.db,
        organisation_id=world.organisation_id,
        meter_id=water,
        kind="valve_close",
        params=None,
        actor=ACTOR,
        idempotency_key="v1",
    )
    run(world, driver)
    assert log(world, result.command.id).command.status == "confirmed"
    reads_after_send = [c for c in driver.calls if c[0] == "read"][1:]
    assert [round((at - T0).total_seconds()) for _, _, at in reads_after_send] == [8, 10, 12, 14]


def test_prices_are_written_and_confirmed_by_the_acknowledgement(
    world: World, clock: FakeClock
) -> None:
    driver = FakeDriver(clock)
    command_id = send(world, "write_prices", "p1", {"prices": {"peak": "1.05", "valley": "0.32"}})
    run(world, driver)
    assert log(world, command_id).command.status == "confirmed"
    assert driver.meter.prices == {"peak": D("1.05"), "valley": D("0.32")}


# --- retries, deadlines, refusals --------------------------------------------------------------


def test_lost_commands_are_retried_with_backoff_and_a_fresh_validity_window(
    world: World, clock: FakeClock
) -> None:
    driver = FakeDriver(clock)
    driver.silent_sends = 2
    command_id = send(world, "relay_trip", "k1")
    run(world, driver)
    shown = log(world, command_id)
    assert shown.command.status == "confirmed" and shown.command.attempts == 3
    assert [e.event for e in shown.events] == [
        "created",
        "sent",
        "retry",
        "sent",
        "retry",
        "sent",
        "confirmed",
    ]
    sent_at = [at for at, _ in driver.deadlines]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(sent_at)] == [5, 10]
    assert all(deadline == at + timedelta(seconds=120) for at, deadline in driver.deadlines)


def test_validity_window_never_reaches_past_the_command_deadline(
    world: World, clock: FakeClock
) -> None:
    driver = FakeDriver(clock)
    send(world, "relay_trip", "k1", deadline_s=30)
    run(world, driver)
    assert driver.deadlines == [(T0, T0 + timedelta(seconds=30))]


def test_unreachable_meter_fails_deadline_passed(world: World, clock: FakeClock) -> None:
    driver = FakeDriver(clock)
    driver.silent_reads = 10**6
    command_id = send(world, "relay_trip", "k1", deadline_s=60, max_attempts=100)
    run(world, driver)
    shown = log(world, command_id)
    assert shown.command.status == "failed"
    assert shown.command.reason is not None and shown.command.reason.startswith("deadline passed")
    assert shown.command.finished_at == T0 + timedelta(seconds=60)
    assert driver.sends == []


def test_no_answer_fails_when_the_attempts_are_used_up(world: World, clock: FakeClock) -> None:
    driver = FakeDriver(clock)
    driver.silent_sends = 10
    command_id = send(world, "relay_trip", "k1", max_attempts=2)
    run(world, driver)
    assert log(world, command_id).command.reason == "no answer after 2 attempts"
    with world.db.read() as conn:
        failures = conn.execute(select(device_status.c.failures)).scalar_one()
    assert failures == 1  # each attempt's read succeeded (back to 0), then its send was lost


def test_refusal_fails_at_once_with_the_meters_reason(world: World, clock: FakeClock) -> None:
    driver = FakeDriver(clock)
    driver.refusal = "wrong password / unauthorised"
    command_id = send(world, "relay_trip", "k1")
    run(world, driver)
    shown = log(world, command_id)
    assert (shown.command.status, shown.command.reason) == (
        "failed",
        "refused by meter: wrong password / unauthorised",
    )
    assert len(driver.sends) == 1


def test_meter_that_acknowledges_but_does_not_switch_fails_read_back_disagrees(
    world: World, clock: FakeClock
) -> None:
    driver = FakeDriver(clock)
    driver.ignored_sends = 10
    command_id = send(world, "relay_trip", "k1", max_attempts=2)
    run(world, driver)
    assert (
        log(world, command_id).command.reason
        == "read-back disagrees: relay is closed, expected open"
    )
    assert len(driver.sends) == 2


def test_driver_lookup_failure_fails_the_command_without_stopping_the_worker(
    world: World, clock: FakeClock
) -> None:
    def no_driver(_target: object) -> FakeDriver:
        raise LookupError("no bus for meter M1")

    command_id = send(world, "relay_trip", "k1")
    asyncio.run(run_until_idle(executor(world.db, clock, no_driver), world.db, clock))
    assert log(world, command_id).command.reason == "no answer: no driver (no bus for meter M1)"


# --- desired state: supersede and cancel -------------------------------------------------------


def test_newer_command_for_the_relay_supersedes_the_pending_one(
    world: World, clock: FakeClock
) -> None:
    driver = FakeDriver(clock, FakeMeter(relay="open"))
    trip = send(world, "relay_trip", "k1")
    protect = send(world, "protect_on", "k2")
    close = send(world, "relay_close", "k3")
    first = log(world, trip)
    assert (first.command.status, first.command.reason) == ("cancelled", f"superseded by #{close}")
    run(world, driver)
    assert driver.sends == [("relay", RelayAction.PROTECT_ON), ("relay", RelayAction.CLOSE)]
    assert log(world, protect).command.status == log(world, close).command.status == "confirmed"


def test_result_arriving_after_a_cancel_is_logged_not_applied(
    world: World, clock: FakeClock
) -> None:
    driver = FakeDriver(clock)
    command_id = send(world, "relay_trip", "k1")

    def operator_cancels() -> None:
        service.cancel(
            world.db,
            organisation_id=world.organisation_id,
            command_id=command_id,
            actor=ACTOR,
            reason="wrong room",
        )

    driver.on_send = operator_cancels
    run(world, driver)
    shown = log(world, command_id)
    assert (shown.command.status, shown.command.reason) == (
        "cancelled",
        f"cancelled by {ACTOR}: wrong room",
    )
    assert [e.event for e in shown.events] == ["created", "sent", "cancelled", "late_result"]


# --- recharges never take effect twice ---------------------------------------------------------


def test_lost_reply_after_the_meter_applied_a_recharge_is_confirmed_not_resent(
    world: World, clock: FakeClock
) -> None:
    driver = FakeDriver(clock, FakeMeter(money=D("10.00"), purchase_count=3))
    driver.lost_replies = 1
    command_id = push(world, "r1", "50.00", 4)
    run(world, driver)
    shown = log(world, command_id)
    assert shown.command.status == "confirmed"
    assert driver.sends == [("recharge", (D("50.00"), 4))]
    assert (driver.meter.money, driver.meter.purchase_count) == (D("60.00"), 4)
    assert [e.event for e in shown.events] == ["created", "sent", "retry", "confirmed"]
    assert shown.events[-1].detail["state"].startswith("purchase count is 4: the push took effect")
    assert "remaining money 60.00 (was 10.00)" in shown.events[-1].detail["state"]


def test_recharge_lost_on_the_way_is_resent_with_the_same_count(
    world: World, clock: FakeClock
) -> None:
    driver = FakeDriver(clock, FakeMeter(purchase_count=3))
    driver.silent_sends = 2
    command_id = push(world, "r1", "50.00", 4)
    run(world, driver)
    assert log(world, command_id).command.status == "confirmed"
    assert driver.sends == [("recharge", (D("50.00"), 4))] * 3
    assert driver.meter.money == D("60.00")


def test_unsent_push_takes_its_count_from_the_meter_just_before_sending(
    world: World, clock: FakeClock
) -> None:
    driver = FakeDriver(clock, FakeMeter(purchase_count=6))  # topped up elsewhere since last read
    command_id = push(world, "r1", "20.00", 4)
    run(world, driver)
    shown = log(world, command_id)
    assert shown.command.status == "confirmed" and shown.command.params["purchase_count"] == 7
    assert [e.event for e in shown.events] == ["created", "renumbered", "sent", "confirmed"]
    assert driver.sends == [("recharge", (D("20.00"), 7))]


def test_sent_push_whose_count_moved_past_it_fails_for_reconciliation(
    world: World, clock: FakeClock
) -> None:
    driver = FakeDriver(clock, FakeMeter(purchase_count=3))
    driver.silent_sends = 1
    command_id = push(world, "r1", "20.00", 4)

    def card_top_up() -> None:  # between our attempts, two top-ups reach the meter another way
        if len(driver.sends) == 1:
            driver.meter.purchase_count = 5

    driver.on_send = card_top_up
    run(world, driver)
    shown = log(world, command_id)
    assert shown.command.status == "failed"
    assert (
        shown.command.reason
        == "read-back disagrees: purchase count 5 is past purchase 4; reconcile before pushing again"
    )
    assert len(driver.sends) == 1


def test_pushes_to_one_meter_reach_it_in_order(world: World, clock: FakeClock) -> None:
    driver = FakeDriver(clock, FakeMeter(purchase_count=3))
    driver.silent_sends = 1
    first, second = push(world, "r1", "10.00", 4), push(world, "r2", "20.00", 5)
    run(world, driver)
    assert driver.sends == [
        ("recharge", (D("10.00"), 4)),
        ("recharge", (D("10.00"), 4)),
        ("recharge", (D("20.00"), 5)),
    ]
    assert log(world, first).command.status == log(world, second).command.status == "confirmed"


def test_sent_push_cannot_be_cancelled(world: World, clock: FakeClock) -> None:
    from meterdesk.shared.errors import ConflictError

    driver = FakeDriver(clock, FakeMeter(purchase_count=3))
    driver.silent_sends = 1
    command_id = push(world, "r1", "10.00", 4)
    asyncio.run(executor(world.db, clock, driver).run_once())
    with pytest.raises(ConflictError, match="may already have reached the meter"):
        service.cancel(
            world.db, organisation_id=world.organisation_id, command_id=command_id, actor=ACTOR
        )


# --- the worker loop ---------------------------------------------------------------------------


def test_run_works_until_stopped(world: World, clock: FakeClock) -> None:
    driver = FakeDriver(clock)
    command_id = send(world, "clock_sync", "c1")
    work = executor(world.db, clock, driver, ExecutorConfig(idle_s=0.01))

    async def scenario() -> None:
        task = asyncio.create_task(work.run())
        for _ in range(500):
            if log(world, command_id).command.status == "confirmed":
                break
            await asyncio.sleep(0.01)
        work.stop()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert log(world, command_id).command.status == "confirmed"
    assert driver.meter.clock_set_to == T0


# --- rows written by the control loop's outbox -------------------------------------------------


def test_control_loop_rows_are_executed_and_superseded_at_claim(
    world: World, clock: FakeClock
) -> None:
    from meterdesk.billing.control_send import CommandRequest
    from meterdesk.billing.outbox import DatabaseOutbox

    outbox = DatabaseOutbox(clock)
    with world.db.transaction() as conn:
        outbox.send_commands(  # one batch: the close supersedes the trip recorded before it
            conn,
            [
                CommandRequest(
                    organisation_id=world.organisation_id,
                    meter_id=world.meter_id,
                    kind=kind,
                    key=key,
                    params={"reason": kind, "account_id": 7},
                )
                for kind, key in (("relay_trip", "cut:1"), ("relay_close", "restore:1"))
            ],
        )
    driver = FakeDriver(clock)
    run(world, driver)
    trip, close = service.list_commands(world.db, organisation_id=world.organisation_id)[::-1]
    assert (trip.status, trip.reason) == ("cancelled", f"superseded by #{close.id}")
    assert (close.status, close.context) == (
        "confirmed",
        {"reason": "relay_close", "account_id": 7},
    )
    assert driver.sends == []  # the relay was closed all along
