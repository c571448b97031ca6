"""A transparent DTU on TCP: raw bus frames in, the addressed meter's reply out.

Several meters share one socket as they share one RS485 / M-Bus line. The protocol lives in a
pure *responder* (frame, now → :class:`Answer` or ``None`` for silence); this module only does
the I/O and the comm faults of the meter that answers: offline (silence), slow replies (a real
delay), garbage bytes before the reply. An optional ``baud`` adds the time the bytes would take
on the line (11 bits per byte: start, 8 data, parity, stop).

Invariants:
- One request at a time per bus, across all connections (a line is half-duplex): a second
  master waits for the first one's reply, as behind a real DTU.
- A responder error never kills the connection: it is logged and the request gets no reply
  (what a master sees when a meter does not understand a frame).

``observer`` (optional) sees every request frame the moment it is decoded off the socket, before
it waits for the line: benchmarks use it to time when a command reached the meter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from meterdesk.devices.codecs.stream import FrameScanner
from meterdesk.shared.time import Clock
from meterdesk.simulator.meter import CommFaults

log = logging.getLogger(__name__)
FrameT = TypeVar("FrameT")
BITS_PER_BYTE = 11
READ_CHUNK = 4096


@dataclass(frozen=True, slots=True)
class Answer:
    """Reply bytes and the faults of the meter that sends them."""

    wire: bytes
    faults: CommFaults


Responder = Callable[[FrameT, datetime], "Answer | None"]


class BusServer(Generic[FrameT]):
    def __init__(
        self,
        *,
        name: str,
        host: str,
        port: int,
        decoder: Callable[[], FrameScanner[FrameT]],
        respond: Responder[FrameT],
        clock: Clock,
        baud: int = 0,
        seed: int = 0,
    ) -> None:
        self.name, self.host, self.port = name, host, port
        self._decoder, self._respond, self._clock = decoder, respond, clock
        self._baud = baud
        self._noise = random.Random(f"{seed}:{name}:garbage")  # noqa: S311 - line noise
        self._line = asyncio.Lock()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.observer: Callable[[FrameT], None] | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        decoder = self._decoder()
        try:
            while data := await reader.read(READ_CHUNK):
                for frame in decoder.feed(data):
                    self._observe(frame)
                    await self._answer(frame, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _observe(self, frame: FrameT) -> None:
        if self.observer is None:
            return
        try:
            self.observer(frame)
        except Exception:  # an observer's bug must not cost the master its reply
            log.exception("%s: observer failed on %r", self.name, frame)

    async def _answer(self, frame: FrameT, writer: asyncio.StreamWriter) -> None:
        async with self._line:
            try:
                answer = self._respond(frame, self._clock())
            except Exception:  # a simulator bug must not drop the master's connection
                log.exception("%s: no reply to %r", self.name, frame)
                return
            if answer is None or answer.faults.offline:
                return
            wire = self._garbage(answer.faults.garbage_bytes) + answer.wire
            delay = answer.faults.reply_delay_s
            if self._baud:
                delay += len(wire) * BITS_PER_BYTE / self._baud
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(wire)
            await writer.drain()

    def _garbage(self, count: int) -> bytes:
        return bytes(self._noise.randrange(256) for _ in range(count))
