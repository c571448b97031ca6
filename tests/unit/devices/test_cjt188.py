"""CJ/T 188-2004 codec: the independent master's frames, DI order, valve, errors, fuzzing."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterdesk.devices.codecs import cjt188 as c
from meterdesk.devices.codecs.cjt188 import (
    Cjt188DataError,
    Cjt188Decoder,
    Cjt188Error,
    Cjt188Frame,
    Cjt188FrameError,
    Cjt188RefusedError,
    DiOrder,
    MeterReading,
    MeterStatus,
    ValveCommand,
    ValveState,
    decode_frame,
    encode_frame,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
METER_1 = "00000000000001"


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- independent encoder/decoder copied from /work/shared/checks/cjt188_peer.py -------------


def peer_addr(n: int) -> bytes:
    digits = f"{n:014d}"
    pairs = [digits[i : i + 2] for i in range(0, 14, 2)]
    return bytes(int(p, 16) for p in reversed(pairs))


def peer_frame(a: bytes, code: int, data: bytes) -> bytes:
    body = bytes([0x68, 0x10]) + a + bytes([code, len(data)]) + data
    return b"\xfe\xfe" + body + bytes([sum(body) & 0xFF, 0x16])


def peer_parse(buf: bytes) -> tuple[int, bytes] | None:
    i = buf.find(b"\x68")
    while i != -1 and i + 11 <= len(buf):
        n = buf[i + 10]
        end = i + 11 + n
        if end + 2 <= len(buf) and (sum(buf[i:end]) & 0xFF) == buf[end] and buf[end + 1] == 0x16:
            return buf[i + 9], buf[i + 11 : end]
        i = buf.find(b"\x68", i + 1)
    return None


def peer_valve_bits(data: bytes) -> int:
    return data[-2] & 0x03


READING = MeterReading(
    volume_m3=Decimal("1234.56"),
    settlement_volume_m3=Decimal("1200.00"),
    clock=datetime(2025, 11, 25, 10, 30, 45, tzinfo=SHANGHAI),
    status=MeterStatus(ValveState.CLOSED, battery_low=True),
)


# --- the master's frames ----------------------------------------------------------------------


def test_read_request_high_first_is_what_the_master_tries_first() -> None:
    ours = c.read_meter_request(METER_1, seq=1)
    assert encode_frame(ours) == peer_frame(peer_addr(1), 0x01, b"\x90\x1f\x01")
    assert encode_frame(ours) == h("FE FE 68 10 01 00 00 00 00 00 00 01 03 90 1F 01 2D 16")
    frame = Cjt188Decoder().feed(peer_frame(peer_addr(1), 0x01, b"\x90\x1f\x01"))[0]
    assert c.parse_request_di(frame) == (c.DI_READ_METER, 1)


def test_read_request_low_first_for_models_that_want_it() -> None:
    ours = c.read_meter_request(METER_1, seq=1, di_order=DiOrder.LOW_FIRST)
    assert encode_frame(ours) == peer_frame(peer_addr(1), 0x01, b"\x1f\x90\x01")
    assert c.parse_request_di(ours, di_order=DiOrder.LOW_FIRST) == (0x901F, 1)
    assert c.parse_request_di(ours, di_order=DiOrder.HIGH_FIRST) == (0x1F90, 1)


@pytest.mark.parametrize(("command", "seq"), [(ValveCommand.CLOSE, 2), (ValveCommand.OPEN, 3)])
def test_valve_commands_match_the_master(command: ValveCommand, seq: int) -> None:
    raw = peer_frame(peer_addr(1), 0x04, b"\xa0\x17" + bytes([seq, command]))
    assert encode_frame(c.valve_control_request(METER_1, command, seq=seq)) == raw
    assert c.parse_valve_control_request(decode_frame(raw)) is command
    low = peer_frame(peer_addr(1), 0x04, b"\x17\xa0" + bytes([seq, command]))
    assert c.parse_valve_control_request(decode_frame(low), di_order=DiOrder.LOW_FIRST) is command


def test_master_reads_our_901f_reply() -> None:
    raw = encode_frame(c.read_meter_reply(METER_1, READING, zone=SHANGHAI, seq=1))
    code, data = peer_parse(raw) or (0, b"")
    assert code == 0x81 and len(data) >= 22 and data[7] == 0x2C
    assert data[:3] == h("90 1F 01")
    assert data[3:8] == h("56 34 12 00 2C") and data[8:13] == h("00 00 12 00 2C")
    assert data[13:20] == h("45 30 10 25 11 25 20")
    assert peer_valve_bits(data) == 0x01
    assert data[20] & 0x04  # battery low


def test_901f_reply_parses_back() -> None:
    frame = decode_frame(encode_frame(c.read_meter_reply(METER_1, READING, zone=SHANGHAI)))
    assert c.parse_read_meter_reply(frame, zone=SHANGHAI) == READING


def test_master_sees_valve_state_after_close_and_open() -> None:
    for state, bits in ((ValveState.OPEN, 0), (ValveState.CLOSED, 1), (ValveState.ABNORMAL, 3)):
        reading = MeterReading(Decimal("1.00"), Decimal("0.00"), READING.clock, MeterStatus(state))
        _, data = peer_parse(encode_frame(c.read_meter_reply(METER_1, reading, zone=SHANGHAI))) or (
            0,
            b"",
        )
        assert peer_valve_bits(data) == bits
    reply = encode_frame(c.valve_control_reply(METER_1, MeterStatus(ValveState.CLOSED), seq=2))
    code, data = peer_parse(reply) or (0, b"")
    assert code == 0x84 and data == h("A0 17 02 01 00")
    status = c.parse_valve_control_reply(decode_frame(reply))
    assert status == MeterStatus(ValveState.CLOSED)


def test_reply_without_status_is_accepted() -> None:
    frame = Cjt188Frame(0x10, METER_1, 0x84, h("A0 17 02"))
    assert c.parse_valve_control_reply(frame) is None


@pytest.mark.parametrize("function", [c.Function.READ, c.Function.WRITE])
def test_error_replies_raise_with_status(function: c.Function) -> None:
    status = MeterStatus(ValveState.ABNORMAL)
    frame = c.error_reply(METER_1, function, status, seq=5)
    assert frame.control == (0xC1 if function is c.Function.READ else 0xC4)
    assert frame.data == h("05 03 00")
    decoded = decode_frame(encode_frame(frame))
    parse = c.parse_valve_control_reply if function is c.Function.WRITE else _parse_reading
    with pytest.raises(Cjt188RefusedError) as caught:
        parse(decoded)
    assert caught.value.status == status


def _parse_reading(frame: Cjt188Frame) -> object:
    return c.parse_read_meter_reply(frame, zone=SHANGHAI)


def test_wrong_di_order_is_a_data_error_not_a_wrong_reading() -> None:
    frame = c.read_meter_reply(METER_1, READING, zone=SHANGHAI, di_order=DiOrder.LOW_FIRST)
    with pytest.raises(Cjt188DataError):
        c.parse_read_meter_reply(frame, zone=SHANGHAI, di_order=DiOrder.HIGH_FIRST)
    parsed = c.parse_read_meter_reply(frame, zone=SHANGHAI, di_order=DiOrder.LOW_FIRST)
    assert parsed == READING


def test_litres_are_converted_to_cubic_metres_exactly() -> None:
    raw = bytearray(c.read_meter_reply(METER_1, READING, zone=SHANGHAI).data)
    raw[7] = c.UNIT_LITRE
    frame = Cjt188Frame(0x10, METER_1, 0x81, bytes(raw))
    assert c.parse_read_meter_reply(frame, zone=SHANGHAI).volume_m3 == Decimal("1.23456")
    raw[7] = 0x35
    with pytest.raises(Cjt188DataError):
        c.parse_read_meter_reply(Cjt188Frame(0x10, METER_1, 0x81, bytes(raw)), zone=SHANGHAI)


def test_clock_is_the_meter_wall_clock() -> None:
    utc = datetime(2025, 12, 31, 16, 0, 5, tzinfo=UTC)
    assert c.clock_to_wire(utc, SHANGHAI) == h("05 00 00 01 01 26 20")
    assert c.clock_from_wire(h("05 00 00 01 01 26 20"), SHANGHAI) == utc
    with pytest.raises(Cjt188DataError):
        c.clock_to_wire(datetime(2025, 1, 1), SHANGHAI)  # noqa: DTZ001 - the point of the test
    with pytest.raises(Cjt188DataError):
        c.clock_from_wire(h("00 00 00 30 02 25 20"), SHANGHAI)


def test_status_keeps_bits_it_does_not_name() -> None:
    status = MeterStatus.from_wire(h("0D 80"))
    assert status.valve is ValveState.CLOSED and status.battery_low
    assert status.to_wire() == h("0D 80")
    with pytest.raises(Cjt188DataError):
        MeterStatus(other_bits=0x01).to_wire()


def test_meter_type_and_wildcard_address() -> None:
    frame = c.read_meter_request(c.WILDCARD_ADDRESS, meter_type=c.MeterType.HOT_WATER)
    assert encode_frame(frame, preamble=0)[:9] == h("68 11 AA AA AA AA AA AA AA")


@pytest.mark.parametrize(
    "raw", ["", "FE FE", "68 10 01", "68 10 01 00 00 00 00 00 00 01 03 90 1F 01 00 16"]
)
def test_decode_frame_rejects_malformed_input(raw: str) -> None:
    with pytest.raises(Cjt188FrameError):
        decode_frame(h(raw))


def test_refuses_bad_values() -> None:
    with pytest.raises(Cjt188Error):
        c.read_meter_request("123")
    with pytest.raises(Cjt188Error):
        c.read_meter_request(METER_1, seq=256)
    bad = MeterReading(Decimal("0.001"), Decimal(0), READING.clock, MeterStatus())
    with pytest.raises(Cjt188Error):
        c.read_meter_reply(METER_1, bad, zone=SHANGHAI)
    with pytest.raises(Cjt188DataError):
        c.parse_valve_control_request(Cjt188Frame(0x10, METER_1, 0x04, h("A0 17 00 77")))


# --- properties -------------------------------------------------------------------------------

addresses = st.lists(
    st.one_of(st.integers(0, 99).map(lambda n: f"{n:02d}"), st.just("AA")), min_size=7, max_size=7
).map("".join)
frames = st.builds(
    Cjt188Frame, st.integers(0, 255), addresses, st.integers(0, 255), st.binary(max_size=255)
)
volumes = st.integers(0, 10**8 - 1).map(lambda n: Decimal(n).scaleb(-2))
# hypothesis takes naive bounds and attaches the zone itself
NAIVE_FIRST, NAIVE_LAST = datetime(2000, 1, 2), datetime(2099, 12, 30)  # noqa: DTZ001
clocks = st.datetimes(NAIVE_FIRST, NAIVE_LAST, timezones=st.just(SHANGHAI)).map(
    lambda moment: moment.replace(microsecond=0)
)
statuses = st.builds(
    MeterStatus,
    st.sampled_from(ValveState),
    st.booleans(),
    st.integers(0, 0xFFFF).map(lambda bits: bits & ~0x07),
)
readings = st.builds(MeterReading, volumes, volumes, clocks, statuses)


@given(frames, st.integers(0, 4))
def test_frame_round_trip(frame: Cjt188Frame, preamble: int) -> None:
    assert decode_frame(encode_frame(frame, preamble=preamble)) == frame


@given(readings, st.integers(0, 255), st.sampled_from(DiOrder))
def test_reading_round_trip(reading: MeterReading, seq: int, order: DiOrder) -> None:
    raw = encode_frame(c.read_meter_reply(METER_1, reading, zone=SHANGHAI, seq=seq, di_order=order))
    frame = Cjt188Decoder().feed(raw)[0]
    assert c.parse_read_meter_reply(frame, zone=SHANGHAI, di_order=order) == reading


@given(st.lists(frames, min_size=1, max_size=4), st.binary(max_size=2))
def test_decoder_splits_a_stream_into_frames(sent: list[Cjt188Frame], split: bytes) -> None:
    stream = b"".join(encode_frame(frame) for frame in sent)
    cut = split[0] % (len(stream) + 1) if split else len(stream) // 2
    decoder = Cjt188Decoder()
    assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == sent


@given(st.binary(max_size=600))
def test_garbage_never_raises_outside_the_codec(garbage: bytes) -> None:
    for frame in Cjt188Decoder().feed(garbage):
        with contextlib.suppress(Cjt188Error):
            c.parse_read_meter_reply(frame, zone=SHANGHAI)
        with contextlib.suppress(Cjt188Error):
            c.parse_valve_control_reply(frame)
        with contextlib.suppress(Cjt188Error):
            c.parse_valve_control_request(frame)
    with contextlib.suppress(Cjt188FrameError):
        decode_frame(garbage)


@given(st.binary(max_size=300), frames)
def test_good_frame_after_garbage_is_found(garbage: bytes, frame: Cjt188Frame) -> None:
    decoder = Cjt188Decoder()
    assert (decoder.feed(garbage) + decoder.feed(encode_frame(frame)))[-1] == frame


@given(st.binary(min_size=19, max_size=19))
def test_random_reading_payloads_only_raise_codec_errors(payload: bytes) -> None:
    frame = Cjt188Frame(0x10, METER_1, 0x81, h("90 1F 00") + payload)
    with contextlib.suppress(Cjt188Error):
        c.parse_read_meter_reply(frame, zone=SHANGHAI)
