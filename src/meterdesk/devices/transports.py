"""Transports: how request bytes reach a bus and reply frames come back.

Two ports, each with real implementations and a fake:

- :class:`ByteTransport` carries raw DL/T 645 / CJ/T 188 bytes: :class:`TcpTransport` for a
  transparent DTU (RS485 ↔ TCP), :class:`SerialTransport` for a local RS485/M-Bus adapter and
  :class:`FakeTransport`, an in-memory line driven by a responder function, for tests.
  ``exchange`` writes a request and feeds whatever arrives to the caller's streaming decoder
  until a frame the caller accepts (right address, function, DI) comes back.
- :class:`ModbusPort` carries Modbus register reads and writes. Its real implementation,
  ``drivers.modbus.PymodbusPort``, lives beside the Modbus driver so that pymodbus is imported
  in one module only; :class:`FakeModbusPort` keeps registers in a dict.

Invariants:
- **One request in flight per bus**: every exchange holds the transport's ``asyncio.Lock``
  from write to reply, so commands and polls on the same line queue behind each other.
- Nothing but :class:`~meterdesk.devices.ports.DeviceError` subclasses leaves this module:
  OS errors and pymodbus exceptions are converted, and the connection is dropped after any
  error that may leave the line in an unknown state, so the next request reconnects.
- Bytes already waiting when a request is written belong to an earlier, timed-out request and
  are discarded; frames that arrive afterwards but are not accepted (another meter's late
  reply, garbage) are skipped. A late reply from the *same* meter to the *same* question can
  not be told apart from the fresh one; it carries the same kind of data, so that is harmless.
- :class:`TransportStats` counts requests, timeouts and the most requests seen in flight at
  once (for Modbus from pymodbus' own PDU trace, independently of our lock; the P6 bench
  reports it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from meterdesk.devices.ports import DeviceError, DeviceRefusedError, DeviceTimeoutError

FrameT = TypeVar("FrameT")

MODBUS_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge (busy, retry later)",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target did not respond",
}


class DeviceConnectionError(DeviceError):
    """The bus itself could not be reached (connect refused, connection dropped, port busy)."""


class ModbusRefusedError(DeviceRefusedError):
    """A Modbus exception response; ``code`` is the exception code (3 = illegal data value)."""

    def __init__(self, code: int, what: str) -> None:
        self.code = code
        reason = MODBUS_EXCEPTIONS.get(code, "unknown exception")
        super().__init__(f"{what}: meter answered exception {code:02X} ({reason})")


class FrameDecoder(Protocol[FrameT]):
    """A streaming decoder (the codecs' ``Dlt645Decoder`` / ``Cjt188Decoder``)."""

    def feed(self, data: bytes) -> list[FrameT]: ...


@dataclass
class TransportStats:
    requests: int = 0
    timeouts: int = 0
    errors: int = 0
    connects: int = 0
    stale_bytes: int = 0  # discarded before a request: left over from an earlier one
    skipped_frames: int = 0  # decoded but not accepted (other meter, other DI)
    in_flight: int = 0
    max_in_flight: int = 0

    def sent(self) -> None:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def answered(self) -> None:
        self.in_flight = max(self.in_flight - 1, 0)


class ByteTransport(Protocol):
    stats: TransportStats

    async def exchange(
        self,
        request: bytes,
        decoder: FrameDecoder[FrameT],
        *,
        accept: Callable[[FrameT], bool],
        timeout_s: float,
    ) -> FrameT: ...

    async def send(self, request: bytes) -> None: ...

    async def close(self) -> None: ...


class _Receiver(asyncio.Protocol):
    """Collects received bytes; ``arrived`` is set whenever there is something to look at."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.arrived = asyncio.Event()
        self.closed = False
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer.extend(data)
        self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.arrived.set()

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        self.arrived.clear()
        return data


class _StreamTransport:
    """Shared exchange logic; subclasses say how to open the byte stream."""

    def __init__(self, name: str, *, connect_timeout_s: float = 5.0) -> None:
        self.name = name
        self.stats = TransportStats()
        self.connect_timeout_s = connect_timeout_s
        self._lock = asyncio.Lock()
        self._receiver: _Receiver | None = None
        self._writer: asyncio.WriteTransport | None = None

    async def _open(self, receiver: _Receiver) -> asyncio.WriteTransport:
        raise NotImplementedError

    async def exchange(
        self,
        request: bytes,
        decoder: FrameDecoder[FrameT],
        *,
        accept: Callable[[FrameT], bool],
        timeout_s: float,
    ) -> FrameT:
        async with self._lock:
            receiver = await self._write(request)
            self.stats.sent()
            try:
                return await self._await_frame(receiver, decoder, accept, timeout_s)
            finally:
                self.stats.answered()

    async def send(self, request: bytes) -> None:
        """Write without waiting for a reply (DL/T 645 broadcasts: nobody answers)."""
        async with self._lock:
            await self._write(request)
            self.stats.requests += 1

    async def close(self) -> None:
        async with self._lock:
            self._drop()

    async def _write(self, request: bytes) -> _Receiver:
        receiver = await self._connected()
        stale = receiver.take()
        self.stats.stale_bytes += len(stale)
        assert self._writer is not None
        try:
            self._writer.write(request)
        except (OSError, RuntimeError) as error:
            self._fail()
            raise DeviceConnectionError(f"{self.name}: write failed: {error}") from None
        return receiver

    async def _await_frame(
        self,
        receiver: _Receiver,
        decoder: FrameDecoder[FrameT],
        accept: Callable[[FrameT], bool],
        timeout_s: float,
    ) -> FrameT:
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    await receiver.arrived.wait()
                    data = receiver.take()
                    for frame in decoder.feed(data):
                        if accept(frame):
                            return frame
                        self.stats.skipped_frames += 1
                    if receiver.closed:
                        self._fail()
                        raise DeviceConnectionError(f"{self.name}: connection closed by peer")
        except TimeoutError:
            self.stats.timeouts += 1
            raise DeviceTimeoutError(f"{self.name}: no answer within {timeout_s:g} s") from None

    async def _connected(self) -> _Receiver:
        if self._receiver is not None and not self._receiver.closed:
            return self._receiver
        self._drop()
        receiver = _Receiver()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                self._writer = await self._open(receiver)
        except TimeoutError:
            self.stats.errors += 1
            raise DeviceConnectionError(f"{self.name}: connect timed out") from None
        except (OSError, ValueError) as error:  # pyserial's SerialException is an OSError
            self.stats.errors += 1
            raise DeviceConnectionError(f"{self.name}: cannot connect: {error}") from None
        self.stats.connects += 1
        self._receiver = receiver
        return receiver

    def _fail(self) -> None:
        self.stats.errors += 1
        self._drop()

    def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._receiver = None


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); anything else is a DeviceError."""
    host, separator, port_text = endpoint.rpartition(":")
    if not separator or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise DeviceError(f"endpoint {endpoint!r} is not host:port")
    return host.strip("[]"), int(port_text)


class TcpTransport(_StreamTransport):
    """A transparent DTU: raw bus bytes over one TCP connection (reconnected after errors)."""

    def __init__(self, host: str, port: int, *, connect_timeout_s: float = 5.0) -> None:
        super().__init__(f"tcp://{host}:{port}", connect_timeout_s=connect_timeout_s)
        self.host, self.port = host, port

    async def _open(self, receiver: _Receiver) -> asyncio.WriteTransport:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(lambda: receiver, self.host, self.port)
        return transport


class SerialTransport(_StreamTransport):
    """A local RS485 / M-Bus adapter (``/dev/ttyUSB0``; any pyserial URL, e.g. ``loop://``)."""

    def __init__(
        self,
        port: str,
        baud: int,
        parity: str = "E",
        *,
        bytesize: int = 8,
        stopbits: int = 1,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if parity not in ("N", "E", "O"):
            raise DeviceError(f"parity must be N, E or O, got {parity!r}")
        super().__init__(f"serial:{port}@{baud}{parity}", connect_timeout_s=connect_timeout_s)
        self.port, self.baud, self.parity = port, baud, parity
        self.bytesize, self.stopbits = bytesize, stopbits

    async def _open(self, receiver: _Receiver) -> asyncio.WriteTransport:
        import serial_asyncio_fast  # imported here: only serial buses need it

        loop = asyncio.get_running_loop()
        try:
            transport, _ = await serial_asyncio_fast.create_serial_connection(
                loop,
                lambda: receiver,
                self.port,
                baudrate=self.baud,
                parity=self.parity,
                bytesize=self.bytesize,
                stopbits=self.stopbits,
            )
        except Exception as error:  # SerialException, termios.error (not an OSError), …
            self.stats.errors += 1
            raise DeviceConnectionError(f"{self.name}: cannot open: {error}") from None
        return transport


Responder = Callable[[bytes], Iterable[tuple[float, bytes]] | bytes | None]


class _FakeWire(asyncio.WriteTransport):
    """The fake line: a write goes to the responder, whose chunks arrive after their delays."""

    def __init__(self, owner: FakeTransport, receiver: _Receiver) -> None:
        super().__init__()
        self._owner, self._receiver, self._closed = owner, receiver, False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise OSError("fake line closed")
        owner = self._owner
        owner.written.append(bytes(data))
        answer = owner.responder(bytes(data))
        chunks = [(0.0, answer)] if isinstance(answer, bytes) else list(answer or ())
        if chunks:  # a request on the line whose answer is still to come
            owner.outstanding += 1
            owner.max_outstanding = max(owner.max_outstanding, owner.outstanding)
        last = max(range(len(chunks)), key=lambda i: chunks[i][0], default=-1)
        loop = asyncio.get_running_loop()
        for index, (delay_s, chunk) in enumerate(chunks):
            if delay_s > 0:
                loop.call_later(delay_s, self._deliver, chunk, index == last)
            else:  # in order, right after this write
                loop.call_soon(self._deliver, chunk, index == last)

    def _deliver(self, chunk: bytes, last: bool) -> None:
        if last:
            self._owner.outstanding -= 1
        if not self._closed:
            self._receiver.data_received(chunk)

    def close(self) -> None:
        self._closed = True

    def is_closing(self) -> bool:
        return self._closed


class FakeTransport(_StreamTransport):
    """An in-memory line for tests, running the real exchange logic.

    ``responder(request)`` returns reply bytes (delivered at once), a list of
    ``(delay_s, bytes)`` chunks (late replies, garbage, split frames) or ``None`` (silence).
    ``connect_error`` makes connecting fail; :meth:`drop` closes the line as a peer would.
    """

    def __init__(self, responder: Responder, *, connect_error: str | None = None) -> None:
        super().__init__("fake")
        self.responder = responder
        self.connect_error = connect_error
        self.written: list[bytes] = []
        self.outstanding = 0  # requests written whose answer has not fully arrived yet
        self.max_outstanding = 0  # seen on the line itself: > 1 means two requests overlapped

    async def _open(self, receiver: _Receiver) -> asyncio.WriteTransport:
        if self.connect_error is not None:
            raise OSError(self.connect_error)
        await asyncio.sleep(0)
        wire = _FakeWire(self, receiver)
        receiver.connection_made(wire)
        return wire

    def drop(self) -> None:
        if self._receiver is not None:
            self._receiver.connection_lost(None)


# --- Modbus ---------------------------------------------------------------------------------


class ModbusPort(Protocol):
    stats: TransportStats

    async def read_registers(
        self, unit: int, address: int, count: int, *, timeout_s: float
    ) -> list[int]: ...

    async def write_register(
        self, unit: int, address: int, value: int, *, timeout_s: float
    ) -> None: ...

    async def write_registers(
        self, unit: int, address: int, values: Sequence[int], *, timeout_s: float
    ) -> None: ...

    async def close(self) -> None: ...


class FakeModbusPort:
    """Registers per unit in a dict, for driver and poller tests.

    ``registers[unit][address] = word``; reading an address nobody set is exception 02, like a
    meter. ``on_write(unit, address, values)`` may raise :class:`ModbusRefusedError` or change
    registers (a relay command moving the relay state). ``fail_next`` raises the given errors
    one per request before anything else happens.
    """

    def __init__(self, registers: dict[int, dict[int, int]] | None = None) -> None:
        self.stats = TransportStats()
        self.registers: dict[int, dict[int, int]] = registers or {}
        self.on_write: Callable[[int, int, list[int]], None] | None = None
        self.fail_next: list[DeviceError] = []
        self.requests: list[tuple[str, int, int, int]] = []  # kind, unit, address, count
        self._lock = asyncio.Lock()

    async def _begin(self, kind: str, unit: int, address: int, count: int) -> None:
        self.requests.append((kind, unit, address, count))
        self.stats.sent()
        await asyncio.sleep(0)  # let other tasks run, as a real request would
        if self.fail_next:
            self.stats.answered()
            raise self.fail_next.pop(0)

    async def read_registers(
        self, unit: int, address: int, count: int, *, timeout_s: float
    ) -> list[int]:
        async with self._lock:
            await self._begin("read", unit, address, count)
            self.stats.answered()
            memory = self.registers.get(unit, {})
            if any(a not in memory for a in range(address, address + count)):
                raise ModbusRefusedError(2, f"read {count} at {address:04X}H")
            return [memory[a] for a in range(address, address + count)]

    async def write_register(
        self, unit: int, address: int, value: int, *, timeout_s: float
    ) -> None:
        await self.write_registers(unit, address, [value], timeout_s=timeout_s)

    async def write_registers(
        self, unit: int, address: int, values: Sequence[int], *, timeout_s: float
    ) -> None:
        async with self._lock:
            await self._begin("write", unit, address, len(values))
            self.stats.answered()
            if self.on_write is not None:
                self.on_write(unit, address, list(values))
            else:
                memory = self.registers.setdefault(unit, {})
                memory.update({address + i: word for i, word in enumerate(values)})

    async def close(self) -> None:
        return None
