"""Group commit of MQTT uplink messages: collect, commit in one transaction, then reply.

:class:`GroupCommitter` collects messages until the first one has waited ``window_s`` (50 ms) or
``max_batch_readings`` (2,000) readings are waiting, then hands them to the commit function
(:meth:`~meterdesk.devices.mqtt_store.UplinkStore.commit`) in a worker thread, one commit at a
time, while the event loop keeps receiving. While a commit runs the next batch fills, so batches
grow with the load. Replies are sent only after the commit returned, and without holding up the
next commit.

A failed commit sends no reply and is retried with back-off; a message that failed before is
retried alone, so one bad message cannot block the others; after ``max_attempts`` it is dropped
unanswered and the gateway re-sends it later.

The committer knows its messages only as :class:`Queued` (arrival time, reading count, where
they came from), so the HJ212 uplink (:mod:`meterdesk.devices.hj212.server`) batches its packets
through the same code; a :class:`Reply`'s ``topic`` is wherever its sender delivers it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from meterdesk.devices.mqtt_rows import Reply
from meterdesk.devices.mqtt_store import BatchOutcome, BatchStats

log = logging.getLogger(__name__)


class Queued(Protocol):
    """What the committer needs of a message: an MQTT :class:`Inbound` or an HJ212 packet."""

    @property
    def topic(self) -> str: ...  # where it came from, for the logs

    @property
    def arrived(self) -> float: ...  # monotonic seconds at receipt

    @property
    def readings(self) -> int: ...


ItemT = TypeVar("ItemT", bound=Queued)
CommitBatch = Callable[[list[ItemT]], BatchOutcome]
RunSync = Callable[[CommitBatch[ItemT], list[ItemT]], Awaitable[BatchOutcome]]


class ReplySender(Protocol):
    async def send(self, replies: Sequence[Reply]) -> None: ...


@dataclass
class IngestStats(BatchStats):
    batches: int = 0
    failed_batches: int = 0
    dropped: int = 0  # messages given up after max_attempts (no reply: the gateway re-sends)
    replies_sent: int = 0
    replies_failed: int = 0
    reconnects: int = 0
    batch_readings_max: int = 0
    commit_s: float = 0.0  # time spent in commits
    # receipt → commit of each message (the balance reflects its readings from then on)
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))


@dataclass
class _Pending(Generic[ItemT]):
    inbound: ItemT
    attempts: int = 0


class GroupCommitter(Generic[ItemT]):
    """Collects messages, commits them in groups, then sends their replies."""

    def __init__(
        self,
        commit: CommitBatch[ItemT],
        sender: ReplySender,
        *,
        window_s: float = 0.05,
        max_batch_readings: int = 2000,
        max_attempts: int = 5,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        clock: Callable[[], float] = time.monotonic,
        run_sync: RunSync[ItemT] | None = None,
        name: str = "MQTT ingest",  # in the log lines
    ) -> None:
        self.name = name
        self._commit, self._sender, self._clock = commit, sender, clock
        self.window_s, self.max_batch_readings, self.max_attempts = (
            window_s,
            max_batch_readings,
            max_attempts,
        )
        self._backoff = backoff_s
        self._run_sync = run_sync or asyncio.to_thread
        self._pending: deque[_Pending[ItemT]] = deque()
        self._pending_readings = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._failures = 0
        self._sending: set[asyncio.Task[None]] = set()
        self.stats = IngestStats()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, inbound: ItemT) -> None:
        self._pending.append(_Pending(inbound))
        self._pending_readings += inbound.readings
        if len(self._pending) == 1 or self._pending_readings >= self.max_batch_readings:
            self._wake.set()

    async def run(self) -> None:
        """Commit batches until :meth:`stop`; then flush what is pending and wait for replies."""
        while batch := await self._next_batch():
            await self._commit_batch(batch)
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _next_batch(self) -> list[_Pending[ItemT]]:
        while not self._pending:
            if self._stopping:
                return []
            self._wake.clear()
            await self._wake.wait()
        while not self._stopping and self._pending_readings < self.max_batch_readings:
            remaining = self._pending[0].inbound.arrived + self.window_s - self._clock()
            if remaining <= 0:
                break
            self._wake.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)
        return self._take()

    def _take(self) -> list[_Pending[ItemT]]:
        """The oldest messages up to the reading limit; a message that failed before, alone."""
        batch = [self._pending.popleft()]
        readings = batch[0].inbound.readings
        if batch[0].attempts == 0:
            while self._pending and self._pending[0].attempts == 0:
                size = self._pending[0].inbound.readings
                if readings + size > self.max_batch_readings:
                    break
                batch.append(self._pending.popleft())
                readings += size
        self._pending_readings -= readings
        return batch

    async def _commit_batch(self, batch: list[_Pending[ItemT]]) -> None:
        inbound = [item.inbound for item in batch]
        started = self._clock()
        try:
            outcome = await self._run_sync(self._commit, inbound)
        except Exception:
            log.exception("%s: commit of %d message(s) failed", self.name, len(batch))
            await self._failed(batch)
            return
        done = self._clock()
        self._failures = 0
        self._record(outcome.stats, inbound, started, done)
        task = asyncio.create_task(self._send(outcome.replies))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def _record(self, stats: BatchStats, inbound: list[ItemT], started: float, done: float) -> None:
        self.stats.merge(stats)
        self.stats.batches += 1
        self.stats.commit_s += done - started
        self.stats.batch_readings_max = max(
            self.stats.batch_readings_max, sum(i.readings for i in inbound)
        )
        self.stats.latencies_s.extend(done - i.arrived for i in inbound)

    async def _failed(self, batch: list[_Pending[ItemT]]) -> None:
        self.stats.failed_batches += 1
        self._failures += 1
        for item in reversed(batch):
            item.attempts += 1
            if item.attempts >= self.max_attempts:
                self.stats.dropped += 1
                log.error(
                    "%s: giving up on %s after %d attempts; the gateway will re-send",
                    self.name,
                    item.inbound.topic,
                    item.attempts,
                )
                continue
            self._pending.appendleft(item)
            self._pending_readings += item.inbound.readings
        low, high = self._backoff
        await asyncio.sleep(min(high, low * 2 ** (self._failures - 1)))

    async def _send(self, replies: Sequence[Reply]) -> None:
        try:
            await self._sender.send(replies)
            self.stats.replies_sent += len(replies)
        except Exception:
            # Committed already; the gateway re-sends and gets the stored result again.
            self.stats.replies_failed += len(replies)
            log.warning("%s: %d replies not sent", self.name, len(replies), exc_info=True)
