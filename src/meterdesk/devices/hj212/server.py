"""The HJ212-2017 uplink server: gateways connect over TCP and push packets; each packet is
answered (when its Flag asks for it) only after the batch holding it has committed.

- One asyncio task per connection reads whatever arrives and feeds the codec's
  :class:`~meterdesk.devices.codecs.hj212.Hj212Decoder`: packets split across reads or several in
  one read are found, and garbage or a packet with a bad CRC is skipped byte by byte (counted in
  ``skipped_bytes``). The decoder holds at most one packet's worth of bytes (≤ 10,011) plus one
  read, so a connection's memory is bounded.
- A connection that delivers no valid packet for ``idle_timeout_s`` (silence, or only garbage)
  is closed; the gateway reconnects when it has something to say.
- Packets go to the MQTT uplink's :class:`~meterdesk.devices.mqtt_commit.GroupCommitter` (window
  or size, one transaction per batch in a worker thread, answers after the commit, retries);
  an answer's ``topic`` names the connection it goes back on.
- Wrong passwords are limited per MN and per remote address
  (:mod:`~meterdesk.devices.hj212.limit`): the store refuses a locked-out packet unverified,
  and the limiter asks the server to close its connection, as the one that began the lock-out.
- :func:`serve` runs the gateway watchdog beside the server: an HJ212 gateway silent past
  ``gateway_silence_s`` while this process listens is marked lost and announced.
- Stopping (SIGINT/SIGTERM, or ``stop``): no new connections, no more reading; what was received
  is committed and answered; then the connections are closed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta

from meterdesk.db.database import Database
from meterdesk.devices import gateway_watchdog
from meterdesk.devices.codecs.hj212 import Hj212Decoder
from meterdesk.devices.hj212.gateways import HJ212
from meterdesk.devices.hj212.limit import LockoutStats, PasswordLimiter
from meterdesk.devices.hj212.store import Hj212Store, Packet
from meterdesk.devices.mqtt_commit import CommitBatch, GroupCommitter, IngestStats
from meterdesk.devices.mqtt_rows import Reply
from meterdesk.shared.errors import ValidationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hj212Settings:
    host: str = "127.0.0.1"
    port: int = 9212  # 0: any free port (tests); the bound one is Hj212Server.port
    idle_timeout_s: float = 600.0  # no valid packet for this long: the connection is closed
    read_size: int = 4096
    window_s: float = 0.05
    max_batch_readings: int = 2000
    max_attempts: int = 5
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    # wrong passwords (docs/hj212.md): this many within the window lock the MN / the address out
    wrong_pw_per_mn: int = 5
    wrong_pw_per_address: int = 20  # higher: several gateways may share one address (NAT)
    wrong_pw_window_s: float = 600.0
    lockout_min_s: float = 60.0  # doubles with each lock-out in a row
    lockout_max_s: float = 3600.0
    lockout_tracked_max: int = 10_000  # MNs, and addresses, remembered at most


@dataclass
class ConnectionStats:
    connections: int = 0
    idle_closed: int = 0  # closed for silence or garbage only
    skipped_bytes: int = 0  # garbage, bad CRC, bad framing: skipped by the decoder
    packets: int = 0
    answers_lost: int = 0  # the connection was gone when its answer was ready
    lockouts: LockoutStats = field(default_factory=LockoutStats)  # wrong passwords


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValidationError(f"listen {text!r}: give HOST:PORT")
    return host.strip("[]"), int(port)


class ConnectionSender:
    """Writes answers on the connection each came from."""

    def __init__(self, stats: ConnectionStats) -> None:
        self.stats = stats
        self.writers: dict[str, asyncio.StreamWriter] = {}

    async def send(self, replies: Sequence[Reply]) -> None:
        used: dict[str, asyncio.StreamWriter] = {}
        for reply in replies:
            writer = self.writers.get(reply.topic)
            if writer is None or writer.is_closing():
                self.stats.answers_lost += 1  # it re-sends the packet on its next connection
                continue
            writer.write(reply.payload)
            used[reply.topic] = writer
        await asyncio.gather(*(w.drain() for w in used.values()), return_exceptions=True)


def password_limiter(
    settings: Hj212Settings, clock: Callable[[], float] = time.monotonic
) -> PasswordLimiter:
    return PasswordLimiter(
        per_mn=settings.wrong_pw_per_mn,
        per_address=settings.wrong_pw_per_address,
        window_s=settings.wrong_pw_window_s,
        lockout_s=(settings.lockout_min_s, settings.lockout_max_s),
        max_entries=settings.lockout_tracked_max,
        clock=clock,
    )


def make_server(
    db: Database, settings: Hj212Settings, *, clock: Callable[[], float] = time.monotonic
) -> Hj212Server:
    """The server with its store, sharing the wrong-password limiter."""
    store = Hj212Store(db, limiter=password_limiter(settings, clock))
    return Hj212Server(store.commit, settings, limiter=store.limiter)


class Hj212Server:
    def __init__(
        self,
        commit: CommitBatch[Packet],
        settings: Hj212Settings,
        *,
        limiter: PasswordLimiter | None = None,  # the store's: closes the connections it refuses
    ) -> None:
        self.settings = settings
        self.connection_stats = ConnectionStats()
        self.limiter = limiter
        if limiter is not None:
            self.connection_stats.lockouts = limiter.stats
        self.sender = ConnectionSender(self.connection_stats)
        self.committer = GroupCommitter[Packet](
            commit,
            self.sender,
            window_s=settings.window_s,
            max_batch_readings=settings.max_batch_readings,
            max_attempts=settings.max_attempts,
            backoff_s=(settings.backoff_min_s, settings.backoff_max_s),
            name="HJ212 ingest",
        )
        self.ready = asyncio.Event()  # listening
        self.port: int | None = None
        self._ids = itertools.count(1)
        self._readers: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def stats(self) -> IngestStats:
        return self.committer.stats

    async def run(self, stop: asyncio.Event) -> None:
        committing = asyncio.create_task(self.committer.run())
        try:
            server = await asyncio.start_server(
                self._connection, self.settings.host, self.settings.port
            )
        except BaseException:
            self.committer.stop()
            await committing
            raise
        self.port = int(server.sockets[0].getsockname()[1])
        if self.limiter is not None:
            loop = asyncio.get_running_loop()

            def close_soon(key: str) -> None:  # from the commit worker thread
                with suppress(RuntimeError):  # the loop has gone: so has the connection
                    loop.call_soon_threadsafe(self._close, key)

            self.limiter.on_refused = close_soon
        self.ready.set()
        try:
            await stop.wait()
        finally:
            self._stopping = True
            if self.limiter is not None:
                self.limiter.on_refused = None
            server.close()
            for task in list(self._readers):
                task.cancel()
            await asyncio.gather(*self._readers, return_exceptions=True)
            self.committer.stop()
            await committing  # commits what arrived and sends its answers
            for writer in self.sender.writers.values():
                writer.close()
            self.sender.writers.clear()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._readers.add(task)
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else "?"
        key = f"hj212:{address}:{peer[1] if peer else '?'}#{next(self._ids)}"
        self.sender.writers[key] = writer
        self.connection_stats.connections += 1
        try:
            await self._read(key, address, reader)
        except (ConnectionError, OSError) as error:
            log.info("HJ212: %s dropped: %s", key, error)
        finally:
            self._readers.discard(task)
            if not self._stopping:  # when stopping, the answers still go out on it
                self.sender.writers.pop(key, None)
                writer.close()
                with suppress(ConnectionError, OSError):
                    await writer.wait_closed()

    def _close(self, key: str) -> None:
        """A wrong-password lock-out: its reader sees the end and cleans up."""
        writer = self.sender.writers.get(key)
        if writer is not None and not self._stopping:
            writer.close()

    async def _read(self, key: str, address: str, reader: asyncio.StreamReader) -> None:
        decoder = Hj212Decoder()
        stats = self.connection_stats
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.idle_timeout_s
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(self.settings.read_size)
            except TimeoutError:
                stats.idle_closed += 1
                log.info("HJ212: %s closed: no valid packet for a while", key)
                return
            if not data:
                return
            skipped = decoder.discarded_byte_count
            for message in decoder.feed(data):
                deadline = loop.time() + self.settings.idle_timeout_s
                stats.packets += 1
                self.committer.add(Packet(key, message, time.monotonic(), address))
            stats.skipped_bytes += decoder.discarded_byte_count - skipped


def serve(
    db: Database, settings: Hj212Settings, *, gateway_silence_s: float = 900.0
) -> tuple[IngestStats, ConnectionStats]:
    """The ``meterdesk ingest-hj212`` service: until SIGINT or SIGTERM; then commit and answer
    what was received, close the connections and return the counters. The gateway watchdog
    watches the HJ212 gateways beside it (:mod:`meterdesk.devices.gateway_watchdog`)."""
    return asyncio.run(serve_until(db, settings, gateway_silence_s=gateway_silence_s))


async def serve_until(
    db: Database,
    settings: Hj212Settings,
    stop: asyncio.Event | None = None,
    *,
    gateway_silence_s: float = 900.0,
    gateway_check_s: float = 60.0,
    server: Hj212Server | None = None,
) -> tuple[IngestStats, ConnectionStats]:
    """``stop`` and ``server`` (tests): stop when it is set, as on a signal; use that server."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    server = server or make_server(db, settings)
    # This process listens, so it is the one that can tell a gateway's silence from its own.
    watchdog = asyncio.create_task(
        gateway_watchdog.watch(
            db,
            listening=server.ready,
            stop=stop,
            clock=db.clock,
            check_s=gateway_check_s,
            silence=timedelta(seconds=gateway_silence_s),
            uplink=HJ212,
        )
    )
    try:
        await server.run(stop)
    finally:
        stop.set()
        await watchdog
    return server.stats, server.connection_stats
