"""The command executor: an async worker that takes due commands, sends them through the meter's
driver and confirms them by reading the meter back (one attempt: :mod:`.attempt`).

How commands are taken (:meth:`CommandExecutor.run`):

- **Woken at commit.** A transaction of this process that creates commands wakes the executor
  when it commits (:mod:`meterdesk.db.commit_signals`), so a trip decided inside an ingest batch
  is claimed at once; the idle poll (``idle_s``) stays for commands written by other processes
  (CLI, API server) and for retries that fall due.
- **Pipelined, one command at a time per meter.** Each claimed meter gets a worker that works
  its commands one after the other; up to ``concurrency`` meters are worked at once. The claim
  skips the meters still being worked on, and new meters are claimed while earlier ones wait
  for their read-back (seconds of settle delay), not only once a whole batch is done. The
  driver of a bus (the poller's connection) still lets one request on the line at a time.
- A claimed command is leased (``lease_s``), so a worker that dies mid-attempt loses it to
  another worker (or to itself after a restart) when the lease runs out.

Database work runs in ``asyncio.to_thread``; the clock and ``sleep`` are injected so tests run
in simulated time. ``stop()`` lets the attempts in flight finish and then returns from ``run()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from sqlalchemy import Connection

from meterdesk.db.commit_signals import COMMANDS, wake_on_commit
from meterdesk.db.database import Database
from meterdesk.devices.commands import claiming
from meterdesk.devices.commands.attempt import DEFAULT_SETTLE, SYSTEM_ACTOR, Attempt, Settle
from meterdesk.devices.commands.model import Aspect, Command, CommandTarget, RetryPolicy
from meterdesk.devices.ports import BusUnavailableError, MeterDriver
from meterdesk.shared.time import Clock

__all__ = ["DEFAULT_SETTLE", "SYSTEM_ACTOR", "CommandExecutor", "ExecutorConfig", "Settle"]

log = logging.getLogger(__name__)
DriverFor = Callable[[CommandTarget], MeterDriver]
Sleep = Callable[[float], Awaitable[None]]
Claimed = list[tuple[Command, CommandTarget]]
_T = TypeVar("_T")


@dataclass(frozen=True)
class ExecutorConfig:
    batch_size: int = 20
    # Meters worked on at once (commands of one meter go one by one). A relay's worker holds
    # its meter for the settle delay and the read-backs (≥ 1 s), so this bounds commands per
    # second: 8 allowed ≈ 5 a second, and in `bench control` (200 trips and closes in 40 s)
    # commands waited up to 1.5–3 s for a free worker before they were claimed. Each bus still
    # carries one request at a time, whatever this allows.
    concurrency: int = 64
    idle_s: float = 1.0  # poll for due commands this often when no commit woke the executor
    lease_s: float = 180.0  # longer than any attempt: a dead worker's command returns after it
    validity_window_s: float = 120.0  # DL/T 645 1C deadline = now + this, capped at the deadline
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    settle: Mapping[Aspect, Settle] = field(default_factory=lambda: dict(DEFAULT_SETTLE))
    money_tolerance: Decimal = Decimal("0.50")  # what a tenant may use between two reads


class CommandExecutor:
    def __init__(
        self,
        db: Database,
        driver_for: DriverFor,
        *,
        config: ExecutorConfig | None = None,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.db = db
        self.driver_for = driver_for
        self.config = config or ExecutorConfig()
        self.clock = clock or db.clock
        self.sleep = sleep
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._working: dict[int, asyncio.Task[None]] = {}  # meter id → its worker
        self._claim_again = False  # a finished worker may leave due commands behind
        # Commands whose attempt ended, with the lease their claim set: their meters are let go
        # of (claiming.release) in the next claim's transaction, not in one of their own.
        self._done: list[tuple[int, datetime]] = []

    async def run(self) -> None:
        """Work until :meth:`stop`; an unexpected error is logged and the loop goes on."""
        self._stopping.clear()
        self._wake = asyncio.Event()  # bound to this loop (run() may be called in another one)
        unsubscribe = wake_on_commit(self.db.engine, COMMANDS, self._wake)
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                if await self._claim_and_start():
                    continue  # the claim was full: more may be due now
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.idle_s)
        finally:
            unsubscribe()
            await asyncio.gather(*self._working.values(), return_exceptions=True)
            await self._release_done()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def _claim_and_start(self) -> bool:
        """Claim due commands of meters not worked on, as many as there are free workers, and
        start a worker per meter; True when the claim was limited by its size (claim again)."""
        free = self.config.concurrency - len(self._working)
        if free <= 0:
            self._claim_again = True  # a worker that finishes wakes the loop
            return False
        limit = min(self.config.batch_size, free)
        busy = frozenset(self._working)
        # Set before the claim, not after: a busy meter's worker may finish while the claim is
        # in flight (waiting for its writer turn), and must then wake the loop for what the
        # claim skipped.
        self._claim_again = self._claim_again or bool(busy)
        done = list(self._done)
        try:
            claimed = await self.in_transaction(lambda conn: self._claim(conn, limit, busy, done))
        except Exception:
            log.exception("command executor: claiming commands failed")
            return False
        del self._done[: len(done)]  # let go of in the claim's transaction, now committed
        for meter_id, items in _by_meter(claimed).items():
            self._start(meter_id, items)
        full = len(claimed) >= limit
        # Commands of a busy meter were skipped: look again when a worker finishes.
        self._claim_again = full or bool(busy)
        return full and len(self._working) < self.config.concurrency

    def _start(self, meter_id: int, items: Claimed) -> None:
        task = asyncio.create_task(self._work(items))
        self._working[meter_id] = task

        def finished(_task: asyncio.Task[None]) -> None:
            self._working.pop(meter_id, None)
            if self._claim_again:
                self._wake.set()

        task.add_done_callback(finished)

    async def _work(self, items: Claimed) -> None:
        for command, target in items:
            try:
                await self._process(command, target)
            except Exception:  # recording the outcome failed: the lease brings it back
                log.exception("command #%s: recording the attempt failed", command.id)
            self._done.append((command.id, command.next_attempt_at))  # as claimed: the lease

    async def _release_done(self) -> None:
        done = list(self._done)
        if done:
            try:
                await self.in_transaction(lambda conn: claiming.release(conn, done))
            except Exception:  # the leases run out by themselves
                log.exception("command executor: letting go of finished commands failed")
            else:
                del self._done[: len(done)]

    async def run_once(self) -> int:
        """Claim one batch of due commands and work it to the end; returns how many were
        claimed (tests and the demo drive the executor step by step with it)."""
        limit = self.config.batch_size
        done = list(self._done)
        claimed = await self.in_transaction(lambda conn: self._claim(conn, limit, (), done))
        del self._done[: len(done)]
        gate = asyncio.Semaphore(self.config.concurrency)

        async def work(items: Claimed) -> None:
            async with gate:
                for command, target in items:
                    await self._process(command, target)
                    self._done.append((command.id, command.next_attempt_at))

        await asyncio.gather(*(work(items) for items in _by_meter(claimed).values()))
        # Let go of the meters now: a caller that works one batch and stops (the CLI, a test)
        # must not hold them from another executor until the lease ends. run() does it in its
        # next claim instead, without a transaction of its own.
        await self._release_done()
        return len(claimed)

    def _claim(
        self,
        conn: Connection,
        limit: int,
        busy: Collection[int],
        done: list[tuple[int, datetime]],
    ) -> Claimed:
        claiming.release(conn, done)
        lease = timedelta(seconds=self.config.lease_s)
        return claiming.claim_batch(
            conn, now=self.clock(), limit=limit, lease=lease, skip_meters=busy
        )

    async def _process(self, command: Command, target: CommandTarget) -> None:
        try:
            driver = self.driver_for(target)
        except BusUnavailableError as error:  # the bus is (re)connecting: try again later
            await Attempt(self, command, target, None).retry_or_fail(f"no answer: {error}")
            return
        except Exception as error:  # no driver for this protocol or bus
            await Attempt(self, command, target, None).fail(f"no answer: no driver ({error})")
            return
        attempt = Attempt(self, command, target, driver)
        try:
            await attempt.run()
        except Exception as error:  # a driver bug must not stop the worker
            log.exception("command #%s: attempt failed unexpectedly", command.id)
            await attempt.retry_or_fail(f"no answer: {error!r}")

    async def in_transaction(self, work: Callable[[Connection], _T]) -> _T:
        def run() -> _T:
            with self.db.transaction() as conn:
                return work(conn)

        return await asyncio.to_thread(run)


def _by_meter(claimed: Claimed) -> dict[int, Claimed]:
    by_meter: dict[int, Claimed] = defaultdict(list)
    for command, target in claimed:
        by_meter[command.meter_id].append((command, target))
    return by_meter
