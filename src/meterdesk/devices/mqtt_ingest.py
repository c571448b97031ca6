"""MQTT uplink ingestion (F-PROTO MQTT-JSON, ``docs/PROTOCOLS.md`` §4): gateway reports in,
readings billed, ``report_reply`` out — only after the report's batch committed.

Acknowledgement, at two levels:
- MQTT: aiomqtt (paho underneath) sends PUBACK for a QoS 1 message as soon as it is *received*,
  before the application has seen it; there is no manual-ack switch in aiomqtt. So a PUBACK says
  nothing about storage. The service connects with a fixed client id and a persistent session
  (``clean_session=False``): what the broker holds for it while it is away (restart, broker
  restart with persistence) is delivered when it reconnects.
- Application: the gateway keeps a report until it gets ``report_reply`` on its down topic and
  re-sends it otherwise. That reply is published only after the batch holding the report has
  committed. A crash between receipt and commit loses nothing: no reply went out, so the gateway
  re-sends; a re-send of a stored report is recognised by (gateway, msgid) and answered again.

Group commit: :class:`GroupCommitter` collects messages until the first one has waited
``window_s`` (50 ms) or ``max_batch_readings`` (2,000) readings are waiting, then hands them to
:meth:`UplinkStore.commit` in a worker thread (one at a time) while the event loop keeps
receiving. While a commit runs the next batch fills, so batches grow with the load. A failed
commit is retried with back-off; a message that has failed before is retried alone, so one bad
message cannot block the others; after ``max_attempts`` it is dropped unanswered (the gateway
re-sends it later). Several processes may share the load with an MQTT shared subscription
(``$share/<group>/data/up/+/+``); on PostgreSQL the meter cursors and the unique (gateway, msgid)
index keep them from billing anything twice.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Protocol

import aiomqtt

from meterdesk.db.database import Database
from meterdesk.devices.mqtt_rows import Inbound, Reply, receive
from meterdesk.devices.mqtt_store import BatchOutcome, BatchStats, UplinkStore
from meterdesk.devices.uplink import ControlReply, UplinkRejected, parse_control_reply, parse_topic
from meterdesk.shared.errors import ValidationError

log = logging.getLogger(__name__)

UP_FILTER = "data/up/+/+"


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "meterdesk-ingest"
    topic_filter: str = UP_FILTER
    share_group: str | None = None  # several ingest processes: one shared subscription
    persistent: bool = True  # keep the session (queued QoS 1 reports) across reconnects
    reply_qos: int = 1
    window_s: float = 0.05
    max_batch_readings: int = 2000
    max_attempts: int = 5
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    keepalive_s: int = 30
    max_inflight: int = 1000  # our QoS 1 replies in flight at once

    @property
    def subscription(self) -> str:
        if self.share_group:
            return f"$share/{self.share_group}/{self.topic_filter}"
        return self.topic_filter


def parse_broker(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``HOST``, port 1883)."""
    host, _, port = text.rpartition(":")
    if not host:
        return text, 1883
    if not port.isdigit():
        raise ValidationError(f"broker {text!r}: give HOST:PORT")
    return host, int(port)


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
class _Pending:
    inbound: Inbound
    attempts: int = 0


class GroupCommitter:
    """Collects messages, commits them in groups, then sends their replies."""

    def __init__(
        self,
        commit: Callable[[list[Inbound]], BatchOutcome],
        sender: ReplySender,
        *,
        window_s: float = 0.05,
        max_batch_readings: int = 2000,
        max_attempts: int = 5,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        clock: Callable[[], float] = time.monotonic,
        run_sync: Callable[
            [Callable[[list[Inbound]], BatchOutcome], list[Inbound]], Awaitable[BatchOutcome]
        ]
        | None = None,
    ) -> None:
        self._commit, self._sender, self._clock = commit, sender, clock
        self.window_s, self.max_batch_readings, self.max_attempts = (
            window_s,
            max_batch_readings,
            max_attempts,
        )
        self._backoff = backoff_s
        self._run_sync = run_sync or asyncio.to_thread
        self._pending: deque[_Pending] = deque()
        self._pending_readings = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._failures = 0
        self._sending: set[asyncio.Task[None]] = set()
        self.stats = IngestStats()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, inbound: Inbound) -> None:
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

    async def _next_batch(self) -> list[_Pending]:
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

    def _take(self) -> list[_Pending]:
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

    async def _commit_batch(self, batch: list[_Pending]) -> None:
        inbound = [item.inbound for item in batch]
        started = self._clock()
        try:
            outcome = await self._run_sync(self._commit, inbound)
        except Exception:
            log.exception("MQTT ingest: commit of %d message(s) failed", len(batch))
            await self._failed(batch)
            return
        done = self._clock()
        self._failures = 0
        self._record(outcome.stats, inbound, started, done)
        task = asyncio.create_task(self._send(outcome.replies))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def _record(
        self, stats: BatchStats, inbound: list[Inbound], started: float, done: float
    ) -> None:
        self.stats.merge(stats)
        self.stats.batches += 1
        self.stats.commit_s += done - started
        self.stats.batch_readings_max = max(
            self.stats.batch_readings_max, sum(i.readings for i in inbound)
        )
        self.stats.latencies_s.extend(done - i.arrived for i in inbound)

    async def _failed(self, batch: list[_Pending]) -> None:
        self.stats.failed_batches += 1
        self._failures += 1
        for item in reversed(batch):
            item.attempts += 1
            if item.attempts >= self.max_attempts:
                self.stats.dropped += 1
                log.error(
                    "MQTT ingest: giving up on %s after %d attempts; the gateway will re-send",
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
            log.warning("MQTT ingest: %d replies not sent", len(replies), exc_info=True)


class MqttReplySender:
    """Publishes replies on the current connection (none while reconnecting)."""

    def __init__(self, qos: int) -> None:
        self.qos = qos
        self.client: aiomqtt.Client | None = None

    async def send(self, replies: Sequence[Reply]) -> None:
        client = self.client
        if client is None:
            raise aiomqtt.MqttError("not connected")
        results = await asyncio.gather(
            *(client.publish(r.topic, r.payload, qos=self.qos) for r in replies),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise aiomqtt.MqttError(f"{len(failed)} of {len(replies)} replies failed: {failed[0]}")


ControlReplyHandler = Callable[[str, ControlReply], None]


class MqttIngestService:
    """Subscribes to gateway uplinks and feeds the group committer; reconnects with back-off."""

    def __init__(
        self,
        commit: Callable[[list[Inbound]], BatchOutcome],
        settings: MqttSettings,
        *,
        on_control_reply: ControlReplyHandler | None = None,
    ) -> None:
        self.settings = settings
        self.sender = MqttReplySender(settings.reply_qos)
        self.committer = GroupCommitter(
            commit,
            self.sender,
            window_s=settings.window_s,
            max_batch_readings=settings.max_batch_readings,
            max_attempts=settings.max_attempts,
            backoff_s=(settings.backoff_min_s, settings.backoff_max_s),
        )
        self.on_control_reply = on_control_reply
        self.ready = asyncio.Event()  # subscribed on a live connection
        self._committing: asyncio.Task[None] | None = None

    @property
    def stats(self) -> IngestStats:
        return self.committer.stats

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish on the service's connection (QoS 1), e.g. ``control`` commands."""
        client = self.sender.client
        if client is None:
            raise aiomqtt.MqttError("not connected to the broker")
        await client.publish(topic, payload, qos=1)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set; then stop reading, commit what arrived, reply, disconnect."""
        self._committing = asyncio.create_task(self.committer.run())
        try:
            await self._connections(stop)
        finally:
            self.committer.stop()
            await self._committing

    async def _connections(self, stop: asyncio.Event) -> None:
        delay = self.settings.backoff_min_s
        while not stop.is_set():
            try:
                await self._session(stop)
            except aiomqtt.MqttError as error:
                if self.ready.is_set():
                    delay = self.settings.backoff_min_s  # it had worked: start the back-off over
                self.ready.clear()
                self.stats.reconnects += 1
                log.warning("MQTT ingest: %s; reconnecting in %.1f s", error, delay)
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(self.settings.backoff_max_s, delay * 2)

    async def _session(self, stop: asyncio.Event) -> None:
        settings = self.settings
        client = aiomqtt.Client(
            settings.host,
            settings.port,
            identifier=settings.client_id,
            clean_session=not settings.persistent,
            keepalive=settings.keepalive_s,
            max_inflight_messages=settings.max_inflight,
        )
        client.pending_calls_threshold = 1_000_000  # thousands of replies in flight are normal
        async with client:
            await client.subscribe(settings.subscription, qos=1)
            self.sender.client = client
            self.ready.set()
            try:
                await self._receive_until(client, stop)
                # Stopping: what the client already took (and PUBACKed) is ours to commit and
                # answer while the connection is still up.
                await self._drain(client)
                self.committer.stop()
                assert self._committing is not None  # started by run()
                await self._committing
            finally:
                self.sender.client = None

    async def _receive_until(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        reader = asyncio.create_task(self._read(client))
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({reader, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            stopped.cancel()
        results = await asyncio.gather(reader, stopped, return_exceptions=True)
        if isinstance(results[0], Exception):
            raise results[0]  # MqttError: the connection dropped

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self._accept(message)
        raise aiomqtt.MqttError("message stream ended")

    async def _drain(self, client: aiomqtt.Client) -> None:
        messages = client.messages
        while len(messages):
            self._accept(await anext(messages))

    def _accept(self, message: aiomqtt.Message) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else b""
        inbound = receive(message.topic.value, payload, time.monotonic())
        if inbound.report is None and self._control_reply(inbound):
            return
        self.committer.add(inbound)

    def _control_reply(self, inbound: Inbound) -> bool:
        """A command's answer arrives on the up topic too: it is not a report, so it goes to
        the handler (or is ignored), never to the quarantine."""
        try:
            answer = parse_control_reply(inbound.payload)
            topic = parse_topic(inbound.topic)
        except UplinkRejected:
            return False
        if self.on_control_reply is not None:
            self.on_control_reply(topic.sn, answer)
        else:
            log.debug("MQTT ingest: control_reply %s from %s ignored", answer.msgid, topic.sn)
        return True


def serve(db: Database, settings: MqttSettings) -> IngestStats:
    """The ``meterdesk ingest-mqtt`` service: run until SIGINT or SIGTERM, then commit and
    acknowledge what was received, disconnect and return the counters."""
    return asyncio.run(_serve(db, settings))


async def _serve(db: Database, settings: MqttSettings) -> IngestStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    service = MqttIngestService(UplinkStore(db).commit, settings)
    await service.run(stop)
    return service.stats
