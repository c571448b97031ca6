"""The poller: reads every meter on its bus's schedule and hands the readings to the money core.

Scheduling. Each bus is one asyncio task that polls its meters one after the other, so a bus
never has more than one request in flight (its transport's lock also covers commands sent by
other tasks). Many buses run concurrently. A bus with ``poll_interval_s`` = T and n meters
polls meter i first at ``start + i·T/n`` and then every T, so the requests are spread evenly
over the interval instead of bursting at its start. A bus too slow for its interval polls
round-robin as fast as it can: a missed turn is not made up with a burst. T = 0 means "as fast
as the line allows" (the P6 bench).

Readings. A successful read with an energy/volume register becomes an
:class:`~meterdesk.billing.ingest.IncomingReading` (source REALTIME, ``measured_at`` = the
receive time, UTC). Readings and status changes are flushed together every
``flush_interval_s`` or as soon as ``flush_max_readings`` are waiting, by one flusher at a
time, through a :class:`ReadingSink` that does its database work in a worker thread so the
event loop is never blocked. A failed flush keeps its readings for the next one (the core
recognises re-sent readings as duplicates); when ``max_pending_readings`` are waiting the bus
tasks pause (memory stays bounded while the database is away).

Status and clocks: see :mod:`meterdesk.devices.status` for online/lost. DL/T 645 buses get a
broadcast time sync when the poller starts and every ``clock_sync_interval_s`` (daily) after.

Stopping: :meth:`Poller.stop` (or cancelling :meth:`Poller.run`) cancels the bus tasks, flushes
what is pending, then closes the transports. Time comes from an injectable :class:`PollClock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from meterdesk.billing.ingest import IncomingReading, Ingestor
from meterdesk.db.database import Database
from meterdesk.devices.drivers.registry import BusConfig, BusConnection, open_bus
from meterdesk.devices.ports import DeviceError, MeterAddress, Snapshot
from meterdesk.devices.status import StatusBook, StatusChanges, write_changes
from meterdesk.devices.transports import DeviceConnectionError
from meterdesk.metering.model import ReadingSource

log = logging.getLogger(__name__)


class PollClock(Protocol):
    def now(self) -> datetime: ...  # aware UTC, for measured_at

    def monotonic(self) -> float: ...  # seconds, for schedules

    async def sleep(self, seconds: float) -> None: ...


class SystemPollClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class ScaledPollClock:
    """Instants from ``clock`` (real or accelerated, e.g. the simulator's), sleeps shortened by
    ``speed`` so schedules keep the clock's pace."""

    def __init__(self, clock: Callable[[], datetime], speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self._clock, self.speed = clock, speed

    def now(self) -> datetime:
        return self._clock()

    def monotonic(self) -> float:
        return time.monotonic() * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0) / self.speed)


class FakePollClock:
    """Virtual time for tests: sleepers wake only when :meth:`advance` passes their time."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self._now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = 0

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self._now)

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._count += 1
        heapq.heappush(self._sleepers, (self._now + seconds, self._count, future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking sleepers in time order and letting the woken tasks run."""
        target = self._now + seconds
        await _settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, when)
            if not future.done():
                future.set_result(None)
            await _settle()
        self._now = target
        await _settle()


async def _settle(rounds: int = 30) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


@dataclass(frozen=True)
class BusPlan:
    config: BusConfig
    organisation_id: int
    gateway_id: int | None
    poll_interval_s: float
    meters: tuple[MeterAddress, ...]


class ReadingSink(Protocol):
    async def write(self, readings: list[IncomingReading], changes: StatusChanges) -> None: ...


class DatabaseSink:
    """Readings to :meth:`Ingestor.ingest` (one transaction per batch), then the status rows —
    both in a worker thread."""

    def __init__(self, db: Database, ingestor: Ingestor | None = None) -> None:
        self.db = db
        self.ingestor = ingestor or Ingestor(db)

    async def write(self, readings: list[IncomingReading], changes: StatusChanges) -> None:
        await asyncio.to_thread(self._write, readings, changes)

    def _write(self, readings: list[IncomingReading], changes: StatusChanges) -> None:
        if readings:
            self.ingestor.ingest(readings)
        if not changes.empty:
            with self.db.transaction() as conn:
                write_changes(conn, changes)


@dataclass(frozen=True)
class PollerSettings:
    lost_after: int = 3
    flush_interval_s: float = 1.0
    flush_max_readings: int = 1000
    max_pending_readings: int = 50_000
    clock_sync_interval_s: float = 86_400.0


@dataclass
class PollStats:
    reads: int = 0
    failures: int = 0
    readings_flushed: int = 0
    flushes: int = 0
    flush_errors: int = 0
    reads_by_bus: dict[int, int] = field(default_factory=dict)


BusOpener = Callable[[BusConfig, Callable[[], datetime]], BusConnection]


def default_opener(config: BusConfig, clock: Callable[[], datetime]) -> BusConnection:
    return open_bus(config, clock=clock)


async def _cancel(tasks: list[asyncio.Task[None]], *, rounds: int = 100) -> None:
    """Cancel until done. On Python 3.11 ``asyncio.wait_for`` (used inside pymodbus) drops a
    cancel that races with the awaited reply, so one ``cancel()`` may not stop a task."""
    for _ in range(rounds):
        pending = [task for task in tasks if not task.done()]
        if not pending:
            break
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("poller task failed", exc_info=task.exception())


class _Schedule:
    """When each meter of one bus is due next (monotonic seconds)."""

    def __init__(self, count: int, interval_s: float, start: float) -> None:
        self.interval_s = interval_s
        self._heap = [(start + i * interval_s / count, i) for i in range(count)]
        heapq.heapify(self._heap)

    def next(self) -> tuple[float, int]:
        return self._heap[0]

    def done(self, now: float) -> None:
        due, index = heapq.heappop(self._heap)
        heapq.heappush(self._heap, (max(due + self.interval_s, now), index))


class Poller:
    """Polls the buses of ``plans`` until stopped; see the module docstring."""

    def __init__(
        self,
        plans: Sequence[BusPlan],
        *,
        sink: ReadingSink,
        clock: PollClock | None = None,
        settings: PollerSettings | None = None,
        status: StatusBook | None = None,
        opener: BusOpener = default_opener,
    ) -> None:
        self.plans = [plan for plan in plans if plan.meters]
        self.sink = sink
        self.clock = clock or SystemPollClock()
        self.settings = settings or PollerSettings()
        self.status = status or StatusBook(lost_after=self.settings.lost_after)
        self.stats = PollStats()
        self.connections: dict[int, BusConnection] = {}
        self._opener = opener
        self._pending: list[IncomingReading] = []
        self._flush_now = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._stopping = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        for plan in self.plans:
            for meter in plan.meters:
                if meter.meter_id not in self.status.meters:
                    self.status.track(meter.meter_id, plan.gateway_id)

    def connection(self, bus_id: int) -> BusConnection:
        """The bus's driver, shared with the command executor so both queue on one lock."""
        return self.connections[bus_id]

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        buses = [asyncio.create_task(self._poll_bus(plan)) for plan in self._open()]
        flusher = asyncio.create_task(self._flusher())
        try:
            await self._stopping.wait()
        finally:
            await self._shutdown(buses, flusher)

    def _open(self) -> list[BusPlan]:
        """Open the buses not open yet; the plans whose bus is open."""
        for plan in self.plans:
            if plan.config.bus_id in self.connections:
                continue
            try:
                self.connections[plan.config.bus_id] = self._opener(plan.config, self.clock.now)
            except DeviceError as error:  # a misconfigured bus must not stop the others
                log.error("bus %d not polled: %s", plan.config.bus_id, error)
                for meter in plan.meters:
                    self._failed(meter, f"bus not polled: {error}", connection=True)
        return [plan for plan in self.plans if plan.config.bus_id in self.connections]

    async def poll_round(self) -> None:
        """Read every meter once, now, and flush: buses concurrently, one request in flight per
        bus. For stepped time (the demo's accelerated history moves its clock, then polls a
        round); :meth:`run` is the scheduled mode. :meth:`close` closes the buses afterwards."""

        async def one_bus(plan: BusPlan) -> None:
            connection = self.connections[plan.config.bus_id]
            for meter in plan.meters:
                await self._poll_meter(plan, connection, meter)

        await asyncio.gather(*(one_bus(plan) for plan in self._open()))
        await self.flush()

    async def close(self) -> None:
        """Close the buses (after :meth:`poll_round`; :meth:`run` closes its own). The closed
        connections stay in :attr:`connections` for their statistics; a closed poller is done."""
        for connection in self.connections.values():
            with contextlib.suppress(DeviceError):
                await connection.close()

    async def _shutdown(self, buses: list[asyncio.Task[None]], flusher: asyncio.Task[None]) -> None:
        self._stopping.set()  # the loops also check it: a cancel can be lost (see _cancel)
        await _cancel(buses)
        self._flush_now.set()  # the flusher is not cancelled: a write in its thread would go on
        with contextlib.suppress(Exception):
            await flusher
        await self.flush()
        if self._pending:
            log.warning("poller stopped with %d readings not stored", len(self._pending))
        await self.close()

    async def _poll_bus(self, plan: BusPlan) -> None:
        connection = self.connections[plan.config.bus_id]
        schedule = _Schedule(len(plan.meters), plan.poll_interval_s, self.clock.monotonic())
        next_sync = self.clock.monotonic() if plan.config.protocol == "dlt645" else None
        while not self._stopping.is_set():
            due, index = schedule.next()
            await self.clock.sleep(due - self.clock.monotonic())
            if next_sync is not None and self.clock.monotonic() >= next_sync:
                await self._sync_clock(plan, connection)
                next_sync = self.clock.monotonic() + self.settings.clock_sync_interval_s
            await self._room.wait()
            await self._poll_meter(plan, connection, plan.meters[index])
            schedule.done(self.clock.monotonic())

    async def _sync_clock(self, plan: BusPlan, connection: BusConnection) -> None:
        try:
            await connection.driver.sync_clock(plan.meters[0], self.clock.now())
        except DeviceError as error:
            log.warning("bus %d: clock sync failed: %s", plan.config.bus_id, error)

    async def _poll_meter(
        self, plan: BusPlan, connection: BusConnection, meter: MeterAddress
    ) -> None:
        try:
            snapshot = await connection.driver.read(meter)
        except DeviceError as error:
            self._failed(meter, str(error), connection=isinstance(error, DeviceConnectionError))
            return
        except Exception as error:  # a driver bug must not stop the bus
            log.exception("bus %d: reading meter %d failed", plan.config.bus_id, meter.meter_id)
            self._failed(meter, f"internal error: {error!r}", connection=False)
            return
        self._succeeded(plan.config.bus_id, snapshot)

    def _failed(self, meter: MeterAddress, error: str, *, connection: bool) -> None:
        self.stats.failures += 1
        self.status.failed(meter.meter_id, error, self.clock.now(), connection=connection)

    def _succeeded(self, bus_id: int, snapshot: Snapshot) -> None:
        self.stats.reads += 1
        self.stats.reads_by_bus[bus_id] = self.stats.reads_by_bus.get(bus_id, 0) + 1
        self.status.succeeded(snapshot)
        if snapshot.total is None:
            return
        reading = IncomingReading(
            snapshot.meter_id,
            snapshot.measured_at,
            snapshot.total,
            snapshot.bands,
            ReadingSource.REALTIME,
        )
        self._pending.append(reading)
        if len(self._pending) >= self.settings.flush_max_readings:
            self._flush_now.set()
        if len(self._pending) >= self.settings.max_pending_readings:
            self._room.clear()

    async def _flusher(self) -> None:
        while not self._stopping.is_set():
            waiter = asyncio.ensure_future(self._flush_now.wait())
            sleeper = asyncio.ensure_future(self.clock.sleep(self.settings.flush_interval_s))
            try:
                await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                sleeper.cancel()
            await self.flush()

    async def flush(self) -> None:
        """Hand pending readings and status changes to the sink (one flush at a time)."""
        async with self._flush_lock:
            self._flush_now.clear()
            readings, self._pending = self._pending, []
            changes = self.status.take_changes()
            if not readings and changes.empty:
                return
            try:
                await self.sink.write(readings, changes)
            except Exception:
                self.stats.flush_errors += 1
                log.exception("storing %d readings failed; kept for the next flush", len(readings))
                self._pending[:0] = readings
                self.status.restore(changes)
            else:
                self.stats.flushes += 1
                self.stats.readings_flushed += len(readings)
            finally:
                if len(self._pending) < self.settings.max_pending_readings:
                    self._room.set()
