"""Poller scheduling, one-in-flight per bus, online/lost, batching and stopping — on virtual time
with fake drivers (no sockets, no database)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from meterdesk.billing.ingest import IncomingReading
from meterdesk.devices.drivers.registry import BusConfig, BusConnection
from meterdesk.devices.poller import BusPlan, FakePollClock, Poller, PollerSettings
from meterdesk.devices.ports import DeviceError, DeviceTimeoutError, MeterAddress, Snapshot
from meterdesk.devices.status import LOST, ONLINE, UNKNOWN, StatusChanges
from meterdesk.devices.transports import DeviceConnectionError, TransportStats
from meterdesk.metering.model import ReadingSource

START = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)


@dataclass
class FakeDriver:
    """Answers reads after ``busy_s`` of virtual time; ``failing`` meters raise their error."""

    clock: FakePollClock
    busy_s: float = 0.0
    failing: dict[int, DeviceError] = field(default_factory=dict)
    polls: list[tuple[int, float]] = field(default_factory=list)
    syncs: list[datetime] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    closed: bool = False

    async def read(self, meter: MeterAddress) -> Snapshot:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.clock.sleep(self.busy_s)
            self.polls.append((meter.meter_id, self.clock.monotonic()))
            if meter.meter_id in self.failing:
                raise self.failing[meter.meter_id]
            bands = {"peak": Decimal(1)} if meter.options.get("bands") else None
            total = Decimal(len(self.polls))
            return Snapshot(meter.meter_id, self.clock.now(), total, bands, relay="closed")
        finally:
            self.in_flight -= 1

    async def sync_clock(self, meter: MeterAddress, now: datetime) -> None:
        self.syncs.append(now)

    async def close(self) -> None:
        self.closed = True


@dataclass
class MemorySink:
    batches: list[list[IncomingReading]] = field(default_factory=list)
    changes: list[StatusChanges] = field(default_factory=list)
    fail: bool = False

    async def write(self, readings: list[IncomingReading], changes: StatusChanges) -> None:
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError("database away")
        self.batches.append(readings)
        self.changes.append(changes)

    @property
    def readings(self) -> list[IncomingReading]:
        return [reading for batch in self.batches for reading in batch]


def plan(
    bus_id: int,
    meter_ids: range | list[int],
    *,
    interval_s: float = 60,
    gateway_id: int | None = None,
    protocol: str = "modbus_tcp",
    options: dict[str, str] | None = None,
) -> BusPlan:
    meters = tuple(MeterAddress(m, protocol, str(m), options or {}) for m in meter_ids)
    config = BusConfig(bus_id, protocol, "tcp", f"127.0.0.1:{5000 + bus_id}")
    return BusPlan(config, 1, gateway_id, interval_s, meters)


def poller_for(
    plans: list[BusPlan],
    clock: FakePollClock,
    drivers: dict[int, FakeDriver],
    sink: MemorySink,
    **settings: Any,
) -> Poller:
    def opener(config: BusConfig, now: Callable[[], datetime]) -> BusConnection:
        driver = drivers.setdefault(config.bus_id, FakeDriver(clock))
        return BusConnection(config.bus_id, driver, TransportStats(), driver.close)  # type: ignore[arg-type]

    return Poller(plans, sink=sink, clock=clock, settings=PollerSettings(**settings), opener=opener)


def run_for(poller: Poller, clock: FakePollClock, seconds: float) -> None:
    async def scenario() -> None:
        task = asyncio.create_task(poller.run())
        await clock.advance(seconds)
        poller.stop()
        await task

    run(scenario())


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


def test_meters_of_a_bus_are_spread_evenly_over_the_interval() -> None:
    clock, drivers, sink = FakePollClock(START), dict[int, FakeDriver](), MemorySink()
    poller = poller_for([plan(1, range(1, 5), interval_s=60)], clock, drivers, sink)
    run_for(poller, clock, 130)
    assert drivers[1].polls == [
        (1, 0.0), (2, 15.0), (3, 30.0), (4, 45.0),
        (1, 60.0), (2, 75.0), (3, 90.0), (4, 105.0),
        (1, 120.0),
    ]  # fmt: skip


def test_a_bus_slower_than_its_interval_polls_round_robin_without_bursts() -> None:
    clock, sink = FakePollClock(START), MemorySink()
    drivers = {1: FakeDriver(clock, busy_s=10)}  # 3 meters × 10 s > 20 s interval
    poller = poller_for([plan(1, [1, 2, 3], interval_s=20)], clock, drivers, sink)
    run_for(poller, clock, 95)
    assert [m for m, _ in drivers[1].polls] == [1, 2, 3, 1, 2, 3, 1, 2, 3]
    times = [t for _, t in drivers[1].polls]
    assert all(b - a == 10 for a, b in itertools.pairwise(times))


def test_one_request_in_flight_per_bus_while_buses_run_concurrently() -> None:
    clock, sink = FakePollClock(START), MemorySink()
    drivers = {bus: FakeDriver(clock, busy_s=0.25) for bus in range(1, 6)}
    plans = [plan(bus, range(bus * 100, bus * 100 + 10), interval_s=1) for bus in range(1, 6)]
    in_flight_overall: list[int] = []

    async def watch() -> None:
        while True:
            in_flight_overall.append(sum(d.in_flight for d in drivers.values()))
            await asyncio.sleep(0)

    async def scenario() -> None:
        watcher = asyncio.create_task(watch())
        poller = poller_for(plans, clock, drivers, sink)
        task = asyncio.create_task(poller.run())
        await clock.advance(20)
        poller.stop()
        await task
        watcher.cancel()

    run(scenario())
    assert all(driver.max_in_flight == 1 for driver in drivers.values())
    assert max(in_flight_overall) == 5  # the buses did overlap
    assert all(len(driver.polls) >= 70 for driver in drivers.values())


def test_a_meter_is_lost_after_n_consecutive_failures_and_online_again_after_a_read() -> None:
    clock, sink = FakePollClock(START), MemorySink()
    drivers = {1: FakeDriver(clock, failing={2: DeviceTimeoutError("no answer")})}
    poller = poller_for([plan(1, [1, 2], interval_s=10, gateway_id=9)], clock, drivers, sink)

    async def scenario() -> list[tuple[str, int]]:
        task = asyncio.create_task(poller.run())
        seen = []
        for _ in range(3):
            await clock.advance(10)
            meter = poller.status.meters[2]
            seen.append((meter.state, meter.failures))
        drivers[1].failing.clear()
        await clock.advance(10)
        poller.stop()
        await task
        return seen

    assert run(scenario()) == [(UNKNOWN, 1), (UNKNOWN, 2), (LOST, 3)]
    meter = poller.status.meters[2]
    assert (meter.state, meter.failures, meter.last_error) == (ONLINE, 0, None)
    assert poller.status.meters[1].state == ONLINE and poller.status.gateways[9].state == ONLINE
    assert poller.stats.failures == 3


def test_gateway_is_lost_when_all_its_meters_are_or_its_connection_fails() -> None:
    clock, sink = FakePollClock(START), MemorySink()
    timeout = DeviceTimeoutError("no answer")
    drivers = {
        1: FakeDriver(clock, failing={1: timeout, 2: timeout}),
        2: FakeDriver(clock, failing={3: DeviceConnectionError("refused")}),
    }
    plans = [
        plan(1, [1, 2], interval_s=10, gateway_id=8),
        plan(2, [3], interval_s=10, gateway_id=9),
    ]
    poller = poller_for(plans, clock, drivers, sink)

    async def scenario() -> list[str]:
        task = asyncio.create_task(poller.run())
        await clock.advance(1)
        early = [poller.status.gateways[8].state, poller.status.gateways[9].state]
        await clock.advance(30)
        poller.stop()
        await task
        return early

    assert run(scenario()) == [UNKNOWN, LOST]  # a failed connection counts at once
    assert poller.status.gateways[8].state == LOST  # after all its meters were lost
    written = {row["gateway"]: row["state"] for c in sink.changes for row in c.gateways}
    assert written == {8: LOST, 9: LOST}


def test_readings_are_flushed_as_soon_as_a_batch_is_full() -> None:
    clock, sink = FakePollClock(START), MemorySink()
    plans = [plan(1, range(1, 13), interval_s=12, options={"bands": "1"})]  # a read per second
    poller = poller_for(plans, clock, {}, sink, flush_max_readings=5, flush_interval_s=60)

    async def scenario() -> list[int]:
        task = asyncio.create_task(poller.run())
        await clock.advance(9.5)  # reads at 0 … 9 s
        sizes = [len(batch) for batch in sink.batches]
        poller.stop()
        await task
        return sizes

    assert run(scenario()) == [5, 5]
    first = sink.readings[0]
    assert first.source is ReadingSource.REALTIME and first.measured_at == START
    assert first.bands == {"peak": Decimal(1)}
    assert [r.meter_id for r in sink.readings] == list(range(1, 11))


def test_readings_wait_at_most_the_flush_interval() -> None:
    clock, sink = FakePollClock(START), MemorySink()
    poller = poller_for([plan(1, [1], interval_s=10)], clock, {}, sink, flush_interval_s=1)

    async def scenario() -> list[int]:
        task = asyncio.create_task(poller.run())
        counts = []
        for step in (0.5, 0.6, 8.8, 1.2):  # reads at 0 and 10 s
            await clock.advance(step)
            counts.append(len(sink.readings))
        poller.stop()
        await task
        return counts

    assert run(scenario()) == [0, 1, 1, 2]


def test_stop_flushes_pending_readings_and_closes_the_buses() -> None:
    clock, sink, drivers = FakePollClock(START), MemorySink(), dict[int, FakeDriver]()
    poller = poller_for([plan(1, [1, 2], interval_s=10)], clock, drivers, sink, flush_interval_s=60)
    run_for(poller, clock, 6)
    assert [r.meter_id for r in sink.readings] == [1, 2]
    assert sink.changes[-1].meters and drivers[1].closed


def test_a_failed_flush_keeps_its_readings_and_full_memory_pauses_polling() -> None:
    clock, sink, drivers = FakePollClock(START), MemorySink(fail=True), dict[int, FakeDriver]()
    plans = [plan(1, [1, 2], interval_s=1)]
    poller = poller_for(plans, clock, drivers, sink, flush_interval_s=1, max_pending_readings=6)

    async def scenario() -> int:
        task = asyncio.create_task(poller.run())
        await clock.advance(20)
        polls_while_full = len(drivers[1].polls)
        sink.fail = False
        await clock.advance(2)
        poller.stop()
        await task
        return polls_while_full

    assert run(scenario()) == 6  # paused at the limit instead of piling up readings
    assert len(sink.readings) >= 6 and poller.stats.flush_errors > 0
    assert [r.measured_at for r in sink.readings][:2] == [START, START + timedelta(seconds=0.5)]


def test_dlt645_buses_sync_clocks_at_start_and_daily() -> None:
    clock, sink, drivers = FakePollClock(START), MemorySink(), dict[int, FakeDriver]()
    plans = [plan(1, [1], interval_s=3600, protocol="dlt645"), plan(2, [2], interval_s=3600)]
    poller = poller_for(
        plans, clock, drivers, sink, clock_sync_interval_s=86_400, flush_interval_s=3600
    )
    run_for(poller, clock, 2 * 86_400 - 1)
    assert len(drivers[1].syncs) == 2 and drivers[1].syncs[0] == START
    assert drivers[2].syncs == []


def test_a_bus_that_cannot_be_opened_does_not_stop_the_others() -> None:
    clock, sink, drivers = FakePollClock(START), MemorySink(), dict[int, FakeDriver]()
    plans = [plan(1, [1], interval_s=10), plan(2, [2], interval_s=10, gateway_id=5)]

    def opener(config: BusConfig, now: Callable[[], datetime]) -> BusConnection:
        if config.bus_id == 2:
            raise DeviceError("endpoint 'x' is not host:port")
        driver = drivers.setdefault(config.bus_id, FakeDriver(clock))
        return BusConnection(config.bus_id, driver, TransportStats(), driver.close)  # type: ignore[arg-type]

    poller = Poller(plans, sink=sink, clock=clock, opener=opener)
    run_for(poller, clock, 5)
    assert [m for m, _ in drivers[1].polls] == [1]
    assert poller.status.meters[2].last_error is not None
    assert poller.status.gateways[5].state == LOST
