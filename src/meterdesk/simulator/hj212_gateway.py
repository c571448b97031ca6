"""A virtual HJ212-2017 gateway (数采仪) for simulated meters, on a real TCP connection.

Every ``interval_s`` of simulated time (aligned to the interval, plus the gateway's staggered
delay, as for the MQTT gateway) it reads its meters and queues one data upload (``CN`` 2051
minute data, or 2061 hour data) whose ``DataTime`` is the read time on the gateway's local
wall clock (the simulator's zone): the platform reads it in the site's zone (docs/hj212.md).
Items, as docs/hj212.md maps them: ``<addr>-Cou`` the total register and, for electricity,
``<addr>.<band>-Cou`` the four band registers. A meter that does not answer (``offline``
fault) is left out of the packet.

The connection: the gateway dials ``host:port``; every packet asks for an answer and stays in
the :class:`~.hj212_outbox.Hj212Outbox` until the ``9014`` with its ``QN`` arrives. When the
connection fails or the platform closes it, reads keep queueing; the gateway redials with a
backoff (``reconnect_s`` doubling up to ``reconnect_max_s``) and sends the history first.

Faults: :meth:`Hj212Gateway.set_uplink` (``uplink_down``) drops the connection and keeps it
down; :meth:`Hj212Gateway.set_garbage` (``garbage``) writes that many junk bytes (never ``#``,
so no false packet start) before every packet, for the platform's scanner to skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from meterdesk.devices.codecs.hj212 import Hj212Decoder, Pairs
from meterdesk.shared.tasks import cancel_and_wait, until_first_ends
from meterdesk.shared.time import Clock
from meterdesk.simulator.gateway import SimulatedMeter, meter_addr
from meterdesk.simulator.hj212_outbox import Hj212Outbox, register_text
from meterdesk.simulator.meter import WaterMeter

log = logging.getLogger(__name__)
BANDS = ("sharp", "peak", "flat", "valley")  # the order of ElectricityMeter.energy_registers
DEFAULT_PASSWORD = "123456"  # noqa: S105 - HJ212's customary factory PW, for demos only


@dataclass(frozen=True)
class Hj212GatewaySpec:
    mn: str
    host: str = "127.0.0.1"
    port: int = 9212
    password: str = DEFAULT_PASSWORD
    cn: str = "2051"  # 2051 minute data, 2061 hour data
    interval_s: float = 60.0  # simulated seconds between reads
    resend_after_s: float = 30.0  # real seconds before an unanswered packet is re-sent
    reconnect_s: float = 1.0  # real seconds before the first redial
    reconnect_max_s: float = 30.0  # the backoff's ceiling
    seed: int = 0

    @property
    def sn(self) -> str:  # the key gateways share in the simulation and its faults
        return self.mn

    @property
    def stagger_s(self) -> float:
        window = 10.0 if self.interval_s <= 300 else 60.0
        rng = random.Random(f"{self.seed}:{self.mn}:stagger")  # noqa: S311 - load spreading
        return rng.uniform(0.0, min(window, self.interval_s / 2))


def meter_items(meter: SimulatedMeter, now: datetime) -> Pairs:
    """What the gateway read from ``meter`` at ``now`` as HJ212 items (none when offline)."""
    if meter.faults.offline:
        return ()
    addr = meter_addr(meter)
    if isinstance(meter, WaterMeter):
        meter.advance(now)
        return ((f"{addr}-Cou", register_text(meter.volume_m3)),)
    meter.advance(now)
    total, *bands = meter.energy_registers()
    items = [(f"{addr}-Cou", register_text(total))]
    items += [
        (f"{addr}.{band}-Cou", register_text(v)) for band, v in zip(BANDS, bands, strict=True)
    ]
    return tuple(items)


def data_time(now: datetime, zone: tzinfo) -> str:
    return now.astimezone(zone).strftime("%Y%m%d%H%M%S")


class Hj212Gateway:
    """One HJ212 gateway and its meters; ``await run()`` until cancelled."""

    def __init__(
        self,
        spec: Hj212GatewaySpec,
        meters: Sequence[SimulatedMeter],
        *,
        clock: Clock,
        zone: tzinfo,
        speed: float = 1.0,
    ) -> None:
        self.spec, self.clock, self.zone, self.speed = spec, clock, zone, speed
        self.meters = {meter_addr(meter): meter for meter in meters}
        self.outbox = Hj212Outbox(
            spec.mn, spec.password, cn=spec.cn, resend_after_s=spec.resend_after_s
        )
        self.connected = asyncio.Event()  # set while a connection is up
        self.garbage_bytes = 0
        self._rng = random.Random(f"{spec.seed}:{spec.mn}:garbage")  # noqa: S311 - junk bytes
        self._uplink_wanted = asyncio.Event()
        self._uplink_wanted.set()
        self._uplink_cut = asyncio.Event()
        self._wake = asyncio.Event()

    def set_uplink(self, up: bool) -> None:
        """Fault injection: ``False`` drops the connection (reads are kept), ``True`` heals."""
        if up:
            self._uplink_cut.clear()
            self._uplink_wanted.set()
        else:
            self._uplink_wanted.clear()
            self._uplink_cut.set()

    def set_garbage(self, count: int) -> None:
        """Fault injection: junk bytes written before every packet (0 ends it)."""
        self.garbage_bytes = max(count, 0)

    async def run(self) -> None:
        reader = asyncio.create_task(self._read_loop())
        try:
            await self._uplink_loop()
        finally:
            await cancel_and_wait([reader])

    def read_meters(self) -> str:
        """Read every meter now and queue the packet; its ``QN``."""
        now = self.clock()
        return self._queue(now, self._read(now))

    def _read(self, now: datetime) -> Pairs:
        return tuple(item for meter in self.meters.values() for item in meter_items(meter, now))

    def _queue(self, now: datetime, items: Pairs) -> str:
        qn = self.outbox.add(data_time(now, self.zone), items)
        self._wake.set()
        return qn

    async def _read_loop(self) -> None:
        interval = self.spec.interval_s
        while True:
            now_s = self.clock().timestamp()
            boundary = math.floor(now_s / interval + 1) * interval
            await asyncio.sleep((boundary - now_s) / self.speed)
            now = self.clock()
            items = self._read(now)
            await asyncio.sleep(self.spec.stagger_s / self.speed)
            self._queue(now, items)

    async def _uplink_loop(self) -> None:
        spec, delay = self.spec, self.spec.reconnect_s
        while True:
            await self._uplink_wanted.wait()
            try:
                async with asyncio.timeout(10):
                    reader, writer = await asyncio.open_connection(spec.host, spec.port)
            except (OSError, TimeoutError) as error:
                log.warning("HJ212 gateway %s: cannot connect (%s); buffering", spec.mn, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, spec.reconnect_max_s)
                continue
            delay = spec.reconnect_s
            try:
                await self._session(reader, writer)
            except (OSError, ConnectionError) as error:
                log.warning("HJ212 gateway %s: connection lost (%s); buffering", spec.mn, error)
            finally:
                self.connected.clear()
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            await asyncio.sleep(delay)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.outbox.reconnected()
        self.connected.set()
        tasks = [
            asyncio.create_task(self._send_loop(writer)),
            asyncio.create_task(self._receive_loop(reader)),
            asyncio.create_task(self._uplink_cut.wait()),
        ]
        await until_first_ends(tasks)

    async def _send_loop(self, writer: asyncio.StreamWriter) -> None:
        while True:
            for data in self.outbox.due(time.monotonic()):
                writer.write(self._garbage() + data)
                await writer.drain()
            self._wake.clear()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wake.wait()

    def _garbage(self) -> bytes:
        junk = (self._rng.randrange(256) for _ in range(self.garbage_bytes))
        return bytes(0 if byte == ord("#") else byte for byte in junk)

    async def _receive_loop(self, reader: asyncio.StreamReader) -> None:
        decoder = Hj212Decoder()
        while data := await reader.read(4096):
            for message in decoder.feed(data):
                if self.outbox.answer(message):
                    self._wake.set()
        raise ConnectionError("closed by the platform")
