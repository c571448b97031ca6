"""The executor's loop and its transactions: a command committed in this process is taken at
once (not at the next idle poll); meters are worked side by side while earlier ones wait for
their read-back, one command at a time per meter; an attempt writes "snapshot + sent" and
"snapshot + confirmed" in one transaction each, and a crash between the send and the read-back
still never sends twice."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from test_commands_support import (
    ACTOR,
    FAST,
    T0,
    FakeDriver,
    FakeMeter,
    World,
    make_world,
    run_until_idle,
    sqlite_db,
)

from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.devices.commands import service
from meterdesk.devices.commands.executor import CommandExecutor, ExecutorConfig
from meterdesk.devices.commands.model import CommandTarget
from meterdesk.devices.ports import MeterAddress, RelayAction, Snapshot
from meterdesk.devices.tables import device_status
from meterdesk.shared.time import FakeClock

IDLE_FOREVER = ExecutorConfig(
    idle_s=60.0, retry=FAST.retry, settle=FAST.settle, validity_window_s=120
)
WELL_UNDER_IDLE_S = 10.0  # a generous bound: only a wake at commit beats idle_s = 60


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def world(tmp_path: Path, clock: FakeClock) -> World:
    return make_world(sqlite_db(tmp_path, clock), clock)


def send(world: World, kind: str, key: str, meter_id: int | None = None) -> int:
    result = service.send_command(
        world.db,
        organisation_id=world.organisation_id,
        meter_id=meter_id or world.meter_id,
        kind=kind,
        params={},
        actor=ACTOR,
        idempotency_key=key,
    )
    return result.command.id


def status(world: World, command_id: int) -> str:
    return service.command_log(
        world.db, organisation_id=world.organisation_id, command_id=command_id
    ).command.status


def events(world: World, command_id: int) -> list[str]:
    shown = service.command_log(
        world.db, organisation_id=world.organisation_id, command_id=command_id
    )
    return [e.event for e in shown.events]


async def until(condition: Callable[[], bool], timeout_s: float = WELL_UNDER_IDLE_S) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout_s)


class Gate:
    """The executor's ``sleep`` (settle delays): moves the fake clock, then waits while closed —
    so a test holds attempts in their read-back wait for as long as it likes."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.open = asyncio.Event()
        self.waiting = 0

    async def __call__(self, seconds: float) -> None:
        self.clock.advance(timedelta(seconds=seconds))
        self.waiting += 1
        await self.open.wait()
        self.waiting -= 1


def executor_with(
    world: World,
    drivers: dict[int, FakeDriver],
    sleep: Callable[[float], Awaitable[None]],
    config: ExecutorConfig = IDLE_FOREVER,
) -> CommandExecutor:
    def driver_for(target: CommandTarget) -> Any:
        return drivers[target.meter.meter_id]

    return CommandExecutor(world.db, driver_for, config=config, clock=world.clock, sleep=sleep)


async def no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


# --- woken at commit ---------------------------------------------------------------------------


def test_a_command_committed_while_the_executor_idles_is_sent_without_waiting_for_idle_s(
    world: World, clock: FakeClock
) -> None:
    driver = FakeDriver(clock)
    work = executor_with(world, {world.meter_id: driver}, no_sleep)

    async def scenario() -> None:
        first = send(world, "relay_trip", "trip")
        task = asyncio.create_task(work.run())
        await until(lambda: status(world, first) == "confirmed")  # the start claims it
        await asyncio.sleep(0.05)  # the loop is now in its 60 s idle wait
        second = send(world, "relay_close", "close")  # commits → wakes the executor
        await until(lambda: status(world, second) == "confirmed")
        work.stop()
        await asyncio.wait_for(task, WELL_UNDER_IDLE_S)

    asyncio.run(scenario())
    assert driver.sends == [("relay", RelayAction.TRIP), ("relay", RelayAction.CLOSE)]


def test_a_command_created_by_another_process_is_found_by_the_idle_poll(
    world: World, clock: FakeClock
) -> None:
    """No signal crosses processes: a row written through another engine (as another process
    would) waits for the idle poll, which stays as the fallback."""
    other = Database(engine=build_engine(str(world.db.engine.url)), clock=clock)
    driver = FakeDriver(clock)
    config = ExecutorConfig(idle_s=0.05, retry=FAST.retry, settle=FAST.settle)
    work = executor_with(world, {world.meter_id: driver}, no_sleep, config)

    async def scenario() -> None:
        task = asyncio.create_task(work.run())
        await asyncio.sleep(0.05)
        command_id = service.send_command(
            other,
            organisation_id=world.organisation_id,
            meter_id=world.meter_id,
            kind="relay_trip",
            params={},
            actor=ACTOR,
            idempotency_key="from-the-cli",
        ).command.id
        await until(lambda: status(world, command_id) == "confirmed")
        work.stop()
        await asyncio.wait_for(task, WELL_UNDER_IDLE_S)

    asyncio.run(scenario())
    other.engine.dispose()
    assert driver.sends == [("relay", RelayAction.TRIP)]


# --- pipelining --------------------------------------------------------------------------------


def test_a_second_meter_is_sent_while_the_first_waits_for_its_read_back(
    world: World, clock: FakeClock
) -> None:
    other_meter = world.add_meter("M2")
    first, second = FakeDriver(clock), FakeDriver(clock)
    gate = Gate(clock)
    work = executor_with(world, {world.meter_id: first, other_meter: second}, gate)

    async def scenario() -> None:
        trip_1 = send(world, "relay_trip", "trip-1")
        task = asyncio.create_task(work.run())
        await until(lambda: gate.waiting == 1)  # meter 1 sent, waiting to read back
        trip_2 = send(world, "relay_trip", "trip-2", meter_id=other_meter)
        await until(lambda: gate.waiting == 2)  # meter 2 sent too, meter 1 still settling
        assert (status(world, trip_1), status(world, trip_2)) == ("sent", "sent")
        assert second.sends == [("relay", RelayAction.TRIP)]
        gate.open.set()
        await until(lambda: status(world, trip_1) == status(world, trip_2) == "confirmed")
        work.stop()
        await asyncio.wait_for(task, WELL_UNDER_IDLE_S)

    asyncio.run(scenario())


def test_a_meters_next_command_waits_until_its_current_one_is_finished(
    world: World, clock: FakeClock
) -> None:
    driver = FakeDriver(clock)
    gate = Gate(clock)
    work = executor_with(world, {world.meter_id: driver}, gate)

    async def scenario() -> None:
        trip = send(world, "relay_trip", "trip")
        task = asyncio.create_task(work.run())
        await until(lambda: gate.waiting == 1)
        close = send(world, "relay_close", "close")  # supersedes the trip in the database
        for _ in range(20):  # the executor was woken; the close must still wait for the meter
            await asyncio.sleep(0.01)
        assert driver.sends == [("relay", RelayAction.TRIP)]
        assert status(world, close) == "pending"
        gate.open.set()
        await until(lambda: status(world, close) == "confirmed")
        work.stop()
        await asyncio.wait_for(task, WELL_UNDER_IDLE_S)
        assert events(world, trip)[-1] == "late_result"  # the trip's result, logged not applied

    asyncio.run(scenario())
    assert driver.sends == [("relay", RelayAction.TRIP), ("relay", RelayAction.CLOSE)]


def test_stop_lets_the_attempts_in_flight_finish(world: World, clock: FakeClock) -> None:
    driver = FakeDriver(clock)
    gate = Gate(clock)
    work = executor_with(world, {world.meter_id: driver}, gate)

    async def scenario() -> None:
        trip = send(world, "relay_trip", "trip")
        task = asyncio.create_task(work.run())
        await until(lambda: gate.waiting == 1)
        work.stop()
        await asyncio.sleep(0.05)
        assert not task.done()  # waits for the read-back in flight
        gate.open.set()
        await asyncio.wait_for(task, WELL_UNDER_IDLE_S)
        assert status(world, trip) == "confirmed"

    asyncio.run(scenario())


# --- transactions per attempt and crash safety -------------------------------------------------


def count_commits(world: World) -> list[int]:
    commits = [0]

    def counted(_conn: Any) -> None:
        commits[0] += 1

    event.listen(world.db.engine, "commit", counted)
    return commits


def test_a_trip_takes_three_write_transactions_claim_sent_and_confirmed(
    world: World, clock: FakeClock
) -> None:
    driver = FakeDriver(clock)
    command_id = send(world, "relay_trip", "trip")
    commits = count_commits(world)
    work = executor_with(world, {world.meter_id: driver}, no_sleep, FAST)
    assert asyncio.run(work.run_once()) == 1
    # claim; pre-send snapshot + "sent"; read-back snapshot + "confirmed"; run_once lets go of
    # the meter (run() does that in its next claim's transaction instead)
    assert commits[0] == 4
    assert events(world, command_id) == ["created", "sent", "confirmed"]
    with world.db.read() as conn:
        row = conn.execute(
            select(device_status).where(device_status.c.meter_id == world.meter_id)
        ).one()
    assert (row.relay, row.state, row.failures, row.last_seen_at) == ("open", "online", 0, clock())


class Crash(BaseException):
    """The process dies (not an error the worker could catch and record)."""


class CrashingAfterTheSend(FakeDriver):
    """Notes what is committed when the frame leaves, then dies at the first read-back."""

    def __init__(self, world: World, clock: FakeClock) -> None:
        super().__init__(clock)
        self.world = world
        self.committed_at_send: tuple[str, str | None] | None = None  # (command, relay seen)
        self.crash = True

    async def relay(self, meter: MeterAddress, action: RelayAction, deadline: Any) -> None:
        with self.world.db.read() as conn:
            relay = conn.execute(
                select(device_status.c.relay).where(device_status.c.meter_id == meter.meter_id)
            ).scalar_one_or_none()
        command_id = max(
            c.id
            for c in service.list_commands(
                self.world.db, organisation_id=self.world.organisation_id
            )
        )
        self.committed_at_send = (status(self.world, command_id), relay)
        await super().relay(meter, action, deadline)

    async def read(self, meter: MeterAddress) -> Snapshot:
        if self.crash and self.sends:
            raise Crash
        return await super().read(meter)


def test_sent_is_committed_with_its_snapshot_before_the_frame_and_a_crash_never_resends(
    world: World, clock: FakeClock
) -> None:
    driver = CrashingAfterTheSend(world, clock)
    command_id = send(world, "relay_trip", "trip")
    with pytest.raises(Crash):
        asyncio.run(executor_with(world, {world.meter_id: driver}, no_sleep, FAST).run_once())
    # "sent" and the pre-send read (relay closed) were committed before the bytes left
    assert driver.committed_at_send == ("sent", "closed")
    assert driver.meter.relay == "open" and status(world, command_id) == "sent"

    driver.crash = False  # a new process, after the lease ran out
    clock.advance(timedelta(seconds=FAST.lease_s + 1))
    restarted = executor_with(world, {world.meter_id: driver}, no_sleep, FAST)
    asyncio.run(run_until_idle(restarted, world.db, clock))
    shown = service.command_log(
        world.db, organisation_id=world.organisation_id, command_id=command_id
    )
    assert shown.command.status == "confirmed"
    assert shown.events[-1].detail == {"state": "meter shows relay open", "sent": True}
    assert driver.sends == [("relay", RelayAction.TRIP)]  # never twice


def test_a_silent_meter_is_counted_with_the_retry_in_one_transaction(
    world: World, clock: FakeClock
) -> None:
    driver = FakeDriver(clock, FakeMeter())
    driver.silent_reads = 1
    command_id = send(world, "relay_trip", "trip")
    commits = count_commits(world)
    asyncio.run(executor_with(world, {world.meter_id: driver}, no_sleep, FAST).run_once())
    assert commits[0] == 3  # claim; failure count + retry; run_once lets go of the meter
    assert events(world, command_id)[-1] == "retry"
    with world.db.read() as conn:
        failures = conn.execute(
            select(device_status.c.failures).where(device_status.c.meter_id == world.meter_id)
        ).scalar_one()
    assert failures == 1


def test_a_worker_finishing_while_a_claim_is_in_flight_wakes_the_loop(
    world: World, clock: FakeClock
) -> None:
    """The claim that skipped a busy meter may still be waiting (for its SQLite writer turn) when
    that meter's worker finishes; the meter's next command must not wait for the idle poll."""
    driver = FakeDriver(clock)
    gate = Gate(clock)
    work = executor_with(world, {world.meter_id: driver}, gate)
    claim_started, release_claim = threading.Event(), threading.Event()
    hold = {"armed": False}

    async def in_transaction(fn: Callable[[Any], Any]) -> Any:
        def run() -> Any:
            if hold["armed"]:  # this claim waits before BEGIN, as for its writer turn
                hold["armed"] = False
                claim_started.set()
                release_claim.wait(5)
            with work.db.transaction() as conn:
                return fn(conn)

        return await asyncio.to_thread(run)

    work.in_transaction = in_transaction  # type: ignore[method-assign]

    async def scenario() -> None:
        send(world, "relay_trip", "trip")
        task = asyncio.create_task(work.run())
        await until(lambda: gate.waiting == 1)  # the trip is sent and settling
        hold["armed"] = True
        close = send(world, "relay_close", "close")  # its commit wakes the loop: a claim starts
        await asyncio.to_thread(claim_started.wait, 5)
        gate.open.set()  # the meter's worker finishes while the claim is in flight
        await until(lambda: not work._working)
        release_claim.set()  # the claim skips the meter that was busy when it started
        try:
            await until(lambda: status(world, close) == "confirmed")
        finally:
            work.stop()
            await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
