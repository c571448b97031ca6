"""Transports: the exchange rules on a fake line, a real loopback socket and a pseudo-terminal."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

import pytest

from meterdesk.devices.codecs import dlt645 as c
from meterdesk.devices.ports import DeviceError, DeviceTimeoutError
from meterdesk.devices.transports import (
    DeviceConnectionError,
    FakeTransport,
    SerialTransport,
    TcpTransport,
    split_endpoint,
)

METER_1, METER_2 = "000000000001", "000000000002"


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


def request(address: str = METER_1) -> bytes:
    return c.encode_frame(c.read_request(address, 0x00000000))


def reply(address: str = METER_1, kwh: str = "1234.56") -> bytes:
    return c.encode_frame(c.read_value_reply(address, 0x00000000, Decimal(kwh)))


def addressed(address: str) -> Callable[[c.Dlt645Frame], bool]:
    return lambda frame: frame.is_reply and frame.address == address


def answering(delay_s: float = 0.0) -> Callable[[bytes], list[tuple[float, bytes]]]:
    """A line where every meter answers its read after ``delay_s``."""

    def respond(raw: bytes) -> list[tuple[float, bytes]]:
        (frame,) = c.Dlt645Decoder().feed(raw)
        return [(delay_s, reply(frame.address))]

    return respond


async def ask(transport: Any, address: str = METER_1, timeout_s: float = 0.5) -> c.Dlt645Frame:
    frame: c.Dlt645Frame = await transport.exchange(
        request(address), c.Dlt645Decoder(), accept=addressed(address), timeout_s=timeout_s
    )
    return frame


def test_exchange_returns_the_reply_of_the_addressed_meter() -> None:
    line = FakeTransport(answering())
    frame = run(ask(line))
    assert c.parse_read_reply(frame).value() == Decimal("1234.56")
    assert line.written == [request()]
    assert line.stats.requests == 1 and line.stats.timeouts == 0


def test_garbage_and_split_bytes_before_the_frame_are_skipped() -> None:
    raw = reply()
    line = FakeTransport(
        lambda _: [(0.0, b"\x00\x68\xff\x16garbage"), (0.01, raw[:7]), (0.02, raw[7:])]
    )
    frame = run(ask(line))
    assert c.parse_read_reply(frame).value() == Decimal("1234.56")


def test_silence_is_a_timeout_error_after_the_timeout() -> None:
    line = FakeTransport(lambda _: None)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(DeviceTimeoutError):
            await ask(line, timeout_s=0.05)
        return loop.time() - started

    assert 0.04 <= run(scenario()) < 0.5
    assert line.stats.timeouts == 1


def test_a_late_reply_to_a_timed_out_request_is_discarded() -> None:
    """Meter 1 answers after its request timed out: those bytes are dropped before the next
    request is written, and a late frame arriving during the next exchange is skipped."""
    delays = {METER_1: [0.08, 0.1], METER_2: [0.2]}

    def respond(raw: bytes) -> list[tuple[float, bytes]]:
        (frame,) = c.Dlt645Decoder().feed(raw)
        return [(delays[frame.address].pop(0), reply(frame.address, "1.00"))]

    async def scenario() -> tuple[c.Dlt645Frame, c.Dlt645Frame]:
        line.responder = respond
        with pytest.raises(DeviceTimeoutError):
            await ask(line, METER_1, timeout_s=0.02)
        await asyncio.sleep(0.1)  # meter 1's late answer arrives while nobody is asking
        with pytest.raises(DeviceTimeoutError):  # second try: times out again …
            await ask(line, METER_1, timeout_s=0.02)
        other = await ask(line, METER_2, timeout_s=0.5)  # … and its answer lands in here
        await asyncio.sleep(0.1)
        line.responder = answering()
        return other, await ask(line, METER_1)

    line = FakeTransport(answering())
    other, fresh = run(scenario())
    assert other.address == METER_2
    assert fresh.address == METER_1 and c.parse_read_reply(fresh).value() == Decimal("1234.56")
    assert line.stats.stale_bytes > 0 and line.stats.skipped_frames >= 1


def test_one_request_in_flight_per_transport_under_concurrency() -> None:
    line = FakeTransport(answering(delay_s=0.005))

    async def scenario() -> list[c.Dlt645Frame]:
        addresses = [f"{n:012d}" for n in range(1, 11)]
        return list(await asyncio.gather(*(ask(line, address) for address in addresses)))

    frames = run(scenario())
    assert [frame.address for frame in frames] == [f"{n:012d}" for n in range(1, 11)]
    assert line.max_outstanding == 1  # observed on the line, not in our counters
    assert line.stats.max_in_flight == 1 and line.stats.requests == 10


def test_connect_failure_is_a_connection_error() -> None:
    line = FakeTransport(answering(), connect_error="connection refused")
    with pytest.raises(DeviceConnectionError, match="refused"):
        run(ask(line))
    assert isinstance(DeviceConnectionError("x"), DeviceError)


def test_a_dropped_connection_fails_the_exchange_and_the_next_one_reconnects() -> None:
    async def scenario() -> c.Dlt645Frame:
        line.responder = lambda _: None
        pending = asyncio.ensure_future(ask(line))
        await asyncio.sleep(0.01)
        line.drop()
        with pytest.raises(DeviceConnectionError, match="closed"):
            await pending
        line.responder = answering()
        return await ask(line)

    line = FakeTransport(answering())
    assert run(scenario()).address == METER_1
    assert line.stats.connects == 2


def test_tcp_transport_against_a_loopback_meter() -> None:
    async def meter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = c.Dlt645Decoder()
        try:
            while data := await reader.read(256):
                for frame in decoder.feed(data):
                    writer.write(b"\xfe\xfe" + reply(frame.address))
        finally:
            writer.close()

    async def scenario() -> list[c.Dlt645Frame]:
        server = await asyncio.start_server(meter, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = TcpTransport("127.0.0.1", port)
        try:
            return [await ask(transport, METER_1), await ask(transport, METER_2)]
        finally:
            await transport.close()
            server.close()
            await server.wait_closed()

    first, second = run(scenario())
    assert (first.address, second.address) == (METER_1, METER_2)


def test_tcp_transport_to_a_closed_port_is_a_connection_error() -> None:
    async def scenario() -> None:
        server = await asyncio.start_server(lambda _, writer: writer.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(DeviceConnectionError):
            await ask(TcpTransport("127.0.0.1", port))

    run(scenario())


def test_serial_transport_on_a_pseudo_terminal() -> None:
    """A pty stands in for the RS485 adapter (it accepts 8N1 only; real adapters take 8E1)."""
    master, slave = os.openpty()

    async def scenario() -> c.Dlt645Frame:
        loop = asyncio.get_running_loop()
        decoder = c.Dlt645Decoder()

        def on_readable() -> None:
            for frame in decoder.feed(os.read(master, 1024)):
                os.write(master, reply(frame.address))

        loop.add_reader(master, on_readable)
        transport = SerialTransport(os.ttyname(slave), 2400, "N")
        try:
            return await ask(transport)
        finally:
            await transport.close()
            loop.remove_reader(master)

    try:
        assert run(scenario()).address == METER_1
    finally:
        os.close(master)
        os.close(slave)


def test_serial_errors_become_connection_errors() -> None:
    with pytest.raises(DeviceConnectionError):
        run(ask(SerialTransport("/dev/meterdesk-no-such-port", 2400, "E")))
    with pytest.raises(DeviceError, match="parity"):
        SerialTransport("/dev/ttyUSB0", 2400, "X")


def test_split_endpoint() -> None:
    assert split_endpoint("10.0.0.5:502") == ("10.0.0.5", 502)
    assert split_endpoint("[::1]:4001") == ("::1", 4001)
    for bad in ("host", "host:0", "host:x", ":502"):
        with pytest.raises(DeviceError):
            split_endpoint(bad)
