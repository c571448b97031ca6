"""DL/T 645-2007 codec: worked frames, the independent master's frames, properties and fuzzing."""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterdesk.devices.codecs import dlt645 as d
from meterdesk.devices.codecs.dlt645 import (
    BROADCAST_ADDRESS,
    WILDCARD_ADDRESS,
    BaudRate,
    Dlt645DataError,
    Dlt645Decoder,
    Dlt645Error,
    Dlt645Frame,
    Dlt645FrameError,
    ErrorStatus,
    MeterRefusedError,
    Password,
    RelayAction,
    StatusWord3,
    decode_frame,
    decode_value,
    encode_frame,
    encode_value,
)
from meterdesk.shared.errors import MeterdeskError

SHANGHAI = ZoneInfo("Asia/Shanghai")
METER_1 = "000000000001"
SUPERVISOR = Password(level=2, code="000000")
OPERATOR = "00000000"


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- independent encoder/decoder copied from /work/shared/checks/dlt645_peer.py -------------


def peer_bcd_addr(n: int) -> bytes:
    digits = f"{n:012d}"
    pairs = [digits[i : i + 2] for i in range(0, 12, 2)]
    return bytes(int(p, 16) for p in reversed(pairs))


def peer_frame(addr: bytes, code: int, data: bytes = b"") -> bytes:
    body = bytes([0x68]) + addr + bytes([0x68, code, len(data)])
    body += bytes((b + 0x33) & 0xFF for b in data)
    return b"\xfe" * 4 + body + bytes([sum(body) & 0xFF, 0x16])


def peer_di(word: int) -> bytes:
    return word.to_bytes(4, "little")


def peer_deadline_bytes(t: datetime) -> bytes:
    fields = (t.second, t.minute, t.hour, t.day, t.month, t.year % 100)
    return bytes(int(f"{v:02d}", 16) for v in fields)


def peer_relay(addr: bytes, n1: int, until: datetime) -> bytes:
    payload = bytes([0x02, 0, 0, 0]) + bytes(4) + bytes([n1, 0]) + peer_deadline_bytes(until)
    return peer_frame(addr, 0x1C, payload)


def peer_parse(buf: bytes) -> tuple[bytes, int, bytes] | None:
    i = buf.find(b"\x68")
    while i != -1 and i + 12 <= len(buf):
        if buf[i + 7] == 0x68:
            n = buf[i + 9]
            end = i + 10 + n
            if end + 2 <= len(buf):
                body = buf[i:end]
                if (sum(body) & 0xFF) == buf[end] and buf[end + 1] == 0x16:
                    data = bytes((b - 0x33) & 0xFF for b in buf[i + 10 : end])
                    return buf[i + 1 : i + 7], buf[i + 8], data
        i = buf.find(b"\x68", i + 1)
    return None


def peer_bcd_to_int(bs: bytes) -> int:
    return int("".join(f"{b:02x}" for b in reversed(bs)))


# --- worked frames from PROTOCOLS.md ----------------------------------------------------------

WORKED = [
    (
        "FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16",
        d.read_address_request(),
        4,
    ),
    (
        "FE FE FE FE 68 01 00 00 00 00 00 68 11 04 33 33 33 33 B2 16",
        d.read_request(METER_1, 0x00000000),
        4,
    ),
    (
        "68 01 00 00 00 00 00 68 91 08 33 33 33 33 89 67 45 33 9E 16",
        d.read_value_reply(METER_1, 0x00000000, Decimal("1234.56")),
        0,
    ),
    (
        "68 01 00 00 00 00 00 68 D1 01 35 D8 16",
        d.error_reply(METER_1, d.Function.READ, ErrorStatus.NO_SUCH_DATA),
        0,
    ),
    (
        "68 01 00 00 00 00 00 68 91 06 33 34 34 35 34 55 C1 16",
        d.read_value_reply(METER_1, 0x02010100, Decimal("220.1")),
        0,
    ),
    (
        "68 01 00 00 00 00 00 68 9C 00 6D 16",
        d.normal_reply(METER_1, d.Function.RELAY_CONTROL),
        0,
    ),
]


@pytest.mark.parametrize(("wire", "frame", "preamble"), WORKED)
def test_worked_frames_encode_byte_exact(wire: str, frame: Dlt645Frame, preamble: int) -> None:
    assert encode_frame(frame, preamble=preamble) == h(wire)


@pytest.mark.parametrize(("wire", "frame", "preamble"), WORKED)
def test_worked_frames_decode_to_the_same_frame(
    wire: str, frame: Dlt645Frame, preamble: int
) -> None:
    assert decode_frame(h(wire)) == frame
    assert Dlt645Decoder().feed(h(wire)) == [frame]


def test_worked_reply_values_decode_to_exact_decimals() -> None:
    energy = d.parse_read_reply(decode_frame(h(WORKED[2][0])))
    voltage = d.parse_read_reply(decode_frame(h(WORKED[4][0])))
    assert (energy.di, energy.value()) == (0x00000000, Decimal("1234.56"))
    assert (voltage.di, voltage.value()) == (0x02010100, Decimal("220.1"))
    assert str(energy.value()) == "1234.56"


def test_worked_error_reply_raises_with_no_such_data() -> None:
    with pytest.raises(MeterRefusedError) as caught:
        d.parse_read_reply(decode_frame(h(WORKED[3][0])))
    assert caught.value.status == ErrorStatus.NO_SUCH_DATA
    assert "NO_SUCH_DATA" in str(caught.value)


def test_relay_confirmation_is_a_reply_without_data() -> None:
    frame = decode_frame(h(WORKED[5][0]))
    assert frame.is_reply and not frame.is_error and frame.data == b""
    assert frame.function == d.Function.RELAY_CONTROL


# --- frames built by the independent master ---------------------------------------------------


@pytest.mark.parametrize("word", [0x00000000, 0x0000FF00, 0x02010100, 0x04000503, 0x00900200])
def test_master_read_requests_decode(word: int) -> None:
    frames = Dlt645Decoder().feed(peer_frame(peer_bcd_addr(2), 0x11, peer_di(word)))
    assert len(frames) == 1
    assert frames[0].address == "000000000002"
    assert d.parse_read_request(frames[0]) == (word, b"")
    assert encode_frame(d.read_request("000000000002", word)) == peer_frame(
        peer_bcd_addr(2), 0x11, peer_di(word)
    )


def test_master_relay_command_decodes_with_its_deadline() -> None:
    until = datetime(2025, 11, 25, 10, 30, 45)  # noqa: DTZ001 - the master sends local wall time
    raw = peer_relay(peer_bcd_addr(2), 0x1A, until)
    command = d.parse_relay_control_request(decode_frame(raw), SHANGHAI)
    assert command.action is RelayAction.TRIP
    assert command.deadline == until.replace(tzinfo=SHANGHAI)
    assert command.password == SUPERVISOR and command.operator_code == OPERATOR
    ours = d.relay_control_request(
        "000000000002",
        RelayAction.TRIP,
        deadline=until.replace(tzinfo=SHANGHAI),
        zone=SHANGHAI,
        password=SUPERVISOR,
        operator_code=OPERATOR,
    )
    assert encode_frame(ours) == raw


def test_master_reads_our_block_and_status_replies() -> None:
    block = tuple(Decimal(text) for text in ("1000.00", "100.00", "400.00", "300.00", "200.00"))
    raw = encode_frame(d.read_value_reply("000000000002", 0x0000FF00, block))
    address, code, data = peer_parse(raw) or (b"", 0, b"")
    assert (address, code, len(data)) == (peer_bcd_addr(2), 0x91, 24)
    values = [peer_bcd_to_int(data[4 + 4 * k : 8 + 4 * k]) for k in range(5)]
    assert values == [100000, 10000, 40000, 30000, 20000]
    status = StatusWord3.build(relay_open=True)
    raw = encode_frame(d.read_value_reply("000000000002", 0x04000503, status))
    _, _, data = peer_parse(raw) or (b"", 0, b"")
    assert int.from_bytes(data[4:6], "little") & 0x10


def test_master_sees_unknown_di_error_bit() -> None:
    raw = encode_frame(d.error_reply("000000000002", d.Function.READ, ErrorStatus.NO_SUCH_DATA))
    _, code, data = peer_parse(raw) or (b"", 0, b"")
    assert code == 0xD1 and data[0] & 0x02


# --- control codes and builders ---------------------------------------------------------------


def test_control_code_bits() -> None:
    assert d.control_code(0x11) == 0x11
    assert d.control_code(0x11, reply=True) == 0x91
    assert d.control_code(0x11, more=True) == 0xB1
    assert d.control_code(0x11, error=True) == 0xD1
    assert d.is_reply(0x91) and not d.is_reply(0x11)
    assert d.is_error_reply(0xD1) and not d.is_error_reply(0x91)
    assert d.has_more_frames(0xB2) and not d.has_more_frames(0x92)
    assert d.function_of(0xDC) == 0x1C
    with pytest.raises(Dlt645Error):
        d.control_code(0x20)


def test_follow_up_request_and_reply_carry_seq_and_more_bit() -> None:
    request = d.read_follow_up_request(METER_1, 0x0000FF00, 3)
    assert request.control == 0x12 and request.data == h("00 FF 00 00 03")
    reply = d.follow_up_reply(METER_1, 0x0000FF00, b"\x01\x02", 3, more=True)
    assert reply.control == 0xB2
    parsed = d.parse_read_reply(decode_frame(encode_frame(reply)))
    assert (parsed.di, parsed.raw, parsed.seq, parsed.more) == (0x0000FF00, b"\x01\x02", 3, True)
    first = d.read_reply(METER_1, 0x0000FF00, b"\x09", more=True)
    assert first.control == 0xB1 and d.parse_read_reply(first).more


def test_write_request_carries_password_operator_and_value() -> None:
    password = Password(level=4, code="123456")
    frame = d.write_value_request(
        METER_1, 0x04001001, Decimal("20.00"), password=password, operator_code="12345678"
    )
    assert frame.control == 0x14
    assert frame.data == h("01 10 00 04") + h("04 56 34 12") + h("78 56 34 12") + h("00 20 00 00")
    parsed = d.parse_write_request(frame)
    assert (parsed.di, parsed.password, parsed.operator_code) == (0x04001001, password, "12345678")
    assert decode_value(parsed.di, parsed.value) == Decimal("20.00")
    assert d.normal_reply(METER_1, d.Function.WRITE).control == 0x94


def test_read_and_write_address() -> None:
    assert d.read_address_request().address == WILDCARD_ADDRESS
    reply = d.read_address_reply("123456789012")
    assert reply.control == 0x93 and reply.data == h("12 90 78 56 34 12")
    assert d.parse_read_address_reply(reply) == "123456789012"
    write = d.write_address_request("123456789012")
    assert (write.address, write.control, write.data) == (WILDCARD_ADDRESS, 0x15, reply.data)


def test_time_sync_is_broadcast_seconds_first_in_meter_zone() -> None:
    moment = datetime(2025, 11, 25, 2, 30, 15, tzinfo=UTC)  # 10:30:15 in Shanghai
    frame = d.time_sync_request(moment, SHANGHAI)
    assert frame.address == BROADCAST_ADDRESS and frame.control == 0x08
    assert frame.data == h("15 30 10 25 11 25")
    assert d.parse_time_sync_request(frame, SHANGHAI) == moment


def test_freeze_uses_99_wildcards_minute_first() -> None:
    assert d.freeze_request().data == h("99 99 99 99")
    monthly = d.freeze_request(day=1, hour=0, minute=0)
    assert monthly.data == h("00 00 01 99") and monthly.address == BROADCAST_ADDRESS
    parsed = d.parse_freeze_request(monthly)
    assert (parsed.month, parsed.day, parsed.hour, parsed.minute) == (None, 1, 0, 0)


def test_baud_change_password_and_clear_commands() -> None:
    assert d.change_baud_request(METER_1, BaudRate.BAUD_9600).data == b"\x20"
    assert d.parse_change_baud_request(d.change_baud_request(METER_1, BaudRate.BAUD_1200)) == 0x04
    old, new = Password(2, "000000"), Password(4, "654321")
    change = d.change_password_request(METER_1, old=old, new=new)
    assert change.control == 0x18
    assert change.data == h("05 0C 00 04") + h("02 00 00 00") + h("04 21 43 65")
    assert d.change_password_reply(METER_1, new).data == h("04 21 43 65")
    authorised = h("02 00 00 00 78 56 34 12")
    for builder, code in ((d.clear_demand_request, 0x19), (d.clear_meter_request, 0x1A)):
        frame = builder(METER_1, password=SUPERVISOR, operator_code="12345678")
        assert (frame.control, frame.data) == (code, authorised)
    events = d.clear_events_request(METER_1, password=SUPERVISOR, operator_code="12345678")
    assert (events.control, events.data) == (0x1B, authorised + h("FF FF FF FF"))


@pytest.mark.parametrize("action", list(RelayAction))
def test_relay_control_payload_is_16_bytes_with_deadline(action: RelayAction) -> None:
    deadline = datetime(2025, 11, 25, 10, 35, 0, tzinfo=SHANGHAI)
    frame = d.relay_control_request(
        METER_1,
        action,
        deadline=deadline,
        zone=SHANGHAI,
        password=SUPERVISOR,
        operator_code=OPERATOR,
    )
    assert len(frame.data) == 16 and frame.data[8:10] == bytes([action, 0])
    assert frame.data[10:] == h("00 35 10 25 11 25")
    assert d.parse_relay_control_request(frame, SHANGHAI).deadline == deadline


def test_deadline_is_converted_to_the_meter_zone_and_naive_is_refused() -> None:
    utc_deadline = datetime(2025, 12, 31, 16, 0, 0, tzinfo=UTC)  # 2026-01-01 00:00 Shanghai
    assert d.encode_wall_clock(utc_deadline, SHANGHAI) == h("00 00 00 01 01 26")
    with pytest.raises(Dlt645DataError):
        d.encode_wall_clock(datetime(2025, 1, 1), SHANGHAI)  # noqa: DTZ001 - the point of the test
    with pytest.raises(Dlt645DataError):
        d.encode_wall_clock(datetime(2100, 1, 1, tzinfo=SHANGHAI), SHANGHAI)
    with pytest.raises(Dlt645DataError):
        d.decode_wall_clock(h("00 00 00 31 02 25"), SHANGHAI)  # 31 February


def test_expired_deadline_matches_the_master_encoding() -> None:
    past = datetime(2025, 11, 25, 10, 20, 0, tzinfo=SHANGHAI) - timedelta(minutes=10)
    assert d.encode_wall_clock(past, SHANGHAI) == peer_deadline_bytes(past)


# --- data identifiers -------------------------------------------------------------------------


def test_every_documented_identifier_is_in_the_table() -> None:
    documented = [0x00000000, 0x00000100, 0x00000200, 0x00000300, 0x00000400, 0x0000FF00]
    documented += [0x00010000, 0x00020000, 0x02010100, 0x02010200, 0x02010300, 0x02020100]
    documented += [0x02030000, 0x02040000, 0x02050000, 0x02060000, 0x02800002, 0x04000101]
    documented += [0x04000102, 0x04000401, 0x04000503, 0x00900200, 0x00900201, 0x04001001]
    documented += [0x04001002, 0x04001003, 0x04001004, 0x04001005]
    documented += [0x04050101, 0x04050102, 0x04050103, 0x04050104]
    for di in documented:
        assert d.data_item(di).di == di
    assert d.data_item(0x00000100).name == "combined_active_energy_sharp"
    assert d.data_item(0x00010401).name == "forward_active_energy_valley_settlement_1"
    with pytest.raises(d.UnknownDataIdentifierError):
        d.data_item(0x0F0F0F0F)


@pytest.mark.parametrize(
    ("di", "value", "wire"),
    [
        (0x02030000, Decimal("-0.0123"), "23 01 80"),
        (0x02030000, Decimal("0.0000"), "00 00 00"),
        (0x02030000, Decimal("79.9999"), "99 99 79"),
        (0x02020100, Decimal("-5.000"), "00 50 80"),
        (0x02060000, Decimal("-0.998"), "98 89"),
        (0x04050101, Decimal("0.5283"), "83 52 00 00"),
        (0x00900200, Decimal("12.34"), "34 12 00 00"),
        (0x02800002, Decimal("50.00"), "00 50"),
        (0x04000102, time(10, 30, 45), "45 30 10"),
        (0x04000101, date(2025, 11, 23), "00 23 11 25"),  # a Sunday: weekday 00
        (0x04000101, date(2025, 11, 25), "02 25 11 25"),
        (0x04000401, "000000000001", "01 00 00 00 00 00"),
    ],
)
def test_value_vectors(di: int, value: d.DataValue, wire: str) -> None:
    assert encode_value(di, value) == h(wire)
    assert decode_value(di, h(wire)) == value


def test_signed_negative_zero_decodes_as_plain_zero() -> None:
    value = decode_value(0x02030000, h("00 00 80"))
    assert value == 0 and not value.is_signed()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("di", "value"),
    [
        (0x02030000, Decimal("80.0000")),  # top digit would collide with the sign bit
        (0x02030000, Decimal("0.00001")),  # more places than the format
        (0x00900200, Decimal("-1.00")),  # unsigned
        (0x00000000, Decimal("1000000.00")),  # too many digits
        (0x00000000, 1.5),
        (0x04000101, datetime(2025, 1, 1, tzinfo=UTC)),
        (0x04000503, StatusWord3(0x10000)),
    ],
)
def test_values_that_do_not_fit_are_refused(di: int, value: object) -> None:
    with pytest.raises(Dlt645DataError):
        encode_value(di, value)  # type: ignore[arg-type]


def test_status_word_3_named_bits() -> None:
    word = decode_value(0x04000503, h("D0 10"))
    assert isinstance(word, StatusWord3)
    assert word.relay_open and word.relay_commanded_open and word.pre_trip_alarm and word.protected
    assert StatusWord3.build(relay_open=True, protected=True).word == 0x1010
    assert not StatusWord3(0).relay_open


def test_wrong_length_and_bad_bcd_are_data_errors() -> None:
    with pytest.raises(Dlt645DataError):
        decode_value(0x00000000, h("00 00 00"))
    with pytest.raises(Dlt645DataError):
        decode_value(0x00000000, h("0A 00 00 00"))
    with pytest.raises(Dlt645DataError):
        decode_value(0x04000101, h("00 32 13 25"))  # month 13


# --- properties -------------------------------------------------------------------------------

addresses = st.lists(
    st.one_of(st.integers(0, 99).map(lambda n: f"{n:02d}"), st.just("AA")), min_size=6, max_size=6
).map("".join)
frames = st.builds(Dlt645Frame, addresses, st.integers(0, 255), st.binary(max_size=255))


def _chunks(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(raw) + 1) for cut in cuts})
    return [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]


@given(frames, st.integers(0, 6))
def test_frame_round_trip(frame: Dlt645Frame, preamble: int) -> None:
    assert decode_frame(encode_frame(frame, preamble=preamble)) == frame


@given(st.lists(frames, min_size=1, max_size=4), st.lists(st.integers(0, 2000), max_size=8))
def test_decoder_finds_every_frame_however_the_stream_is_cut(
    sent: list[Dlt645Frame], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(frame) for frame in sent)
    decoder = Dlt645Decoder()
    received = [frame for chunk in _chunks(stream, cuts) for frame in decoder.feed(chunk)]
    assert received == sent
    assert decoder.discarded_byte_count == 0


@given(st.binary(max_size=600))
def test_garbage_never_raises_outside_the_codec(garbage: bytes) -> None:
    decoder = Dlt645Decoder()
    for frame in decoder.feed(garbage):
        for parse in (d.parse_read_reply, d.parse_read_request, d.parse_freeze_request):
            with contextlib.suppress(Dlt645Error):
                parse(frame)
    with contextlib.suppress(Dlt645FrameError):
        decode_frame(garbage)


@given(st.binary(max_size=300), frames)
def test_good_frame_after_garbage_is_found(garbage: bytes, frame: Dlt645Frame) -> None:
    decoder = Dlt645Decoder()
    received = decoder.feed(garbage) + decoder.feed(encode_frame(frame))
    assert received[-1] == frame


def test_garbage_header_with_long_length_does_not_swallow_the_reply() -> None:
    garbage = h("68 11 11 11 11 11 11 68 91 FF 00")  # promises 255 data bytes
    good = encode_frame(d.read_value_reply(METER_1, 0, Decimal("1.00")))
    decoder = Dlt645Decoder()
    assert decoder.feed(garbage + good)[0].address == METER_1
    assert decoder.discarded_byte_count == len(garbage)


def test_bad_checksum_is_skipped_and_next_frame_kept() -> None:
    good = encode_frame(d.read_request(METER_1, 0), preamble=0)
    broken = good[:-2] + bytes([good[-2] ^ 0xFF]) + good[-1:]
    assert Dlt645Decoder().feed(broken + good) == [d.read_request(METER_1, 0)]
    with pytest.raises(Dlt645FrameError):
        decode_frame(broken)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "FE FE",
        "68 01 00",
        "68 01 00 00 00 00 00 68 11 04 33",
        "68 0A 00 00 00 00 00 68 13 00 D9 16",
    ],
)
def test_decode_frame_rejects_malformed_input(raw: str) -> None:
    with pytest.raises(Dlt645FrameError):
        decode_frame(h(raw))


def test_decode_frame_rejects_trailing_bytes_and_bad_frames_are_meterdesk_errors() -> None:
    with pytest.raises(MeterdeskError):
        decode_frame(encode_frame(d.read_request(METER_1, 0)) + b"\x00")
    with pytest.raises(Dlt645FrameError):
        Dlt645Frame("12345", 0x11)


def _value_for(item: d.DataItem) -> st.SearchStrategy[d.DataValue]:
    if item.kind is d.ValueKind.DECIMAL:
        limit = (
            8 * 10 ** (2 * item.byte_count - 1) if item.signed else 10 ** (2 * item.byte_count)
        ) - 1
        low = -limit if item.signed else 0
        return st.integers(low, limit).map(lambda n: Decimal(n).scaleb(-item.decimals))
    if item.kind is d.ValueKind.BLOCK:
        part = st.integers(0, 10**8 - 1).map(lambda n: Decimal(n).scaleb(-2))
        return st.tuples(part, part, part, part, part)
    if item.kind is d.ValueKind.DATE:
        return st.dates(date(2000, 1, 1), date(2099, 12, 31))
    if item.kind is d.ValueKind.TIME:
        return st.times().map(lambda t: t.replace(microsecond=0))
    if item.kind is d.ValueKind.ADDRESS:
        return st.integers(0, 10**12 - 1).map(lambda n: f"{n:012d}")
    return st.integers(0, 0xFFFF).map(StatusWord3)


@given(
    st.sampled_from(sorted(d.DATA_ITEMS)).flatmap(
        lambda di: st.tuples(st.just(di), _value_for(d.DATA_ITEMS[di]))
    )
)
def test_every_identifier_round_trips_its_values(case: tuple[int, d.DataValue]) -> None:
    di, value = case
    raw = encode_value(di, value)
    assert len(raw) == d.DATA_ITEMS[di].byte_count
    assert decode_value(di, raw) == value
    reply = d.parse_read_reply(decode_frame(encode_frame(d.read_value_reply(METER_1, di, value))))
    assert reply.value() == value


@given(st.sampled_from(sorted(d.DATA_ITEMS)), st.binary(max_size=24))
def test_random_value_bytes_only_raise_data_errors(di: int, raw: bytes) -> None:
    with contextlib.suppress(Dlt645DataError):
        decode_value(di, raw)


# hypothesis takes naive bounds and attaches the zone itself
NAIVE_FIRST, NAIVE_LAST = datetime(2000, 1, 2), datetime(2099, 12, 30)  # noqa: DTZ001


@given(st.datetimes(NAIVE_FIRST, NAIVE_LAST, timezones=st.just(SHANGHAI)))
def test_deadline_round_trip(moment: datetime) -> None:
    moment = moment.replace(microsecond=0)
    frame = d.relay_control_request(
        METER_1,
        RelayAction.CLOSE_DIRECT,
        deadline=moment,
        zone=SHANGHAI,
        password=SUPERVISOR,
        operator_code=OPERATOR,
    )
    assert (
        d.parse_relay_control_request(decode_frame(encode_frame(frame)), SHANGHAI).deadline
        == moment
    )


def _bad_builder_calls() -> list[object]:
    deadline = datetime(2025, 11, 25, 10, 35, 0, tzinfo=SHANGHAI)
    return [
        lambda: d.freeze_request(minute=60),
        lambda: d.freeze_request(month=13),
        lambda: d.read_follow_up_request(METER_1, 0, 256),
        lambda: d.read_request(METER_1, 1 << 32),
        lambda: d.change_baud_request(METER_1, 0x03),  # type: ignore[arg-type]
        lambda: Password(level=10),
        lambda: Password(level=1, code="12345"),
        lambda: d.clear_meter_request(METER_1, password=SUPERVISOR, operator_code="xyz"),
        lambda: d.relay_control_request(
            METER_1,
            0x99,  # type: ignore[arg-type]
            deadline=deadline,
            zone=SHANGHAI,
            password=SUPERVISOR,
            operator_code=OPERATOR,
        ),
        lambda: d.write_address_request("12345678901"),
        lambda: d.read_request("12345678901A", 0),
        lambda: d.parse_relay_control_request(d.read_request(METER_1, 0), SHANGHAI),
        lambda: d.parse_read_reply(Dlt645Frame(METER_1, 0x91, b"\x00")),
        lambda: d.parse_read_reply(Dlt645Frame(METER_1, 0x92, b"\x00\x00\x00\x00")),
        lambda: d.error_status(Dlt645Frame(METER_1, 0xD1, b"")),
        lambda: d.parse_freeze_request(Dlt645Frame(METER_1, 0x16, h("AB 00 00 00"))),
        lambda: d.parse_change_baud_request(Dlt645Frame(METER_1, 0x17, h("05"))),
        lambda: d.parse_read_address_reply(Dlt645Frame(METER_1, 0x93, h("0F 00 00 00 00 00"))),
    ]


@pytest.mark.parametrize("call", _bad_builder_calls())
def test_bad_builder_input_raises_codec_errors_only(call: object) -> None:
    assert callable(call)
    with pytest.raises(Dlt645Error):
        call()
