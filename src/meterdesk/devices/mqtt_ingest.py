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

Group commit (:mod:`meterdesk.devices.mqtt_commit`): messages are collected for up to 50 ms or
2,000 readings and stored in one transaction (:mod:`meterdesk.devices.mqtt_store`) in a worker
thread while the event loop keeps receiving. Several processes may share the load with an MQTT
shared subscription (``$share/<group>/data/up/+/+``; each process needs its own stable client
id); on PostgreSQL the meter cursors and the unique (gateway, msgid) index keep them from
billing anything twice.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta

import aiomqtt

from meterdesk.db.database import Database
from meterdesk.devices import gateway_watchdog
from meterdesk.devices.mqtt_commit import CommitBatch, GroupCommitter, IngestStats
from meterdesk.devices.mqtt_rows import Inbound, Reply, receive
from meterdesk.devices.mqtt_store import UplinkStore
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
        commit: CommitBatch[Inbound],
        settings: MqttSettings,
        *,
        on_control_reply: ControlReplyHandler | None = None,
    ) -> None:
        self.settings = settings
        self.sender = MqttReplySender(settings.reply_qos)
        self.committer = GroupCommitter[Inbound](
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


def serve(db: Database, settings: MqttSettings, *, gateway_silence_s: float = 900.0) -> IngestStats:
    """The ``meterdesk ingest-mqtt`` service: run until SIGINT or SIGTERM, then commit and
    acknowledge what was received, disconnect and return the counters. The gateway watchdog runs
    beside it (:mod:`meterdesk.devices.gateway_watchdog`)."""
    return asyncio.run(_serve(db, settings, gateway_silence_s))


async def _serve(
    db: Database,
    settings: MqttSettings,
    gateway_silence_s: float,
    *,
    gateway_check_s: float = 60.0,
    stop: asyncio.Event | None = None,
) -> IngestStats:
    """``stop`` (tests): stop when it is set, as on a signal."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    service = MqttIngestService(UplinkStore(db).commit, settings)
    # This process listens, so it is the one that can tell a gateway's silence from its own.
    watchdog = asyncio.create_task(
        gateway_watchdog.watch(
            db,
            listening=service.ready,
            stop=stop,
            clock=db.clock,
            check_s=gateway_check_s,
            silence=timedelta(seconds=gateway_silence_s),
        )
    )
    try:
        await service.run(stop)
    finally:
        stop.set()
        await watchdog
    return service.stats
