"""HJ212-2017: the standard's sample, the CRC that is not MODBUS, CP parsing, fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterdesk.devices.codecs.hj212 import (
    Hj212Decoder,
    Hj212Error,
    Hj212Message,
    build_segment,
    crc16,
    decode_message,
    decode_packet,
    encode_message,
    encode_packet,
    parse_segment,
)

SAMPLE_SEGMENT = (
    "QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;"
    "CP=&&RtdInterval=30&&"
)
SAMPLE = b"##0101" + SAMPLE_SEGMENT.encode() + b"1C80\r\n"


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS, written independently, to pin the difference from HJ212's CRC."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def test_sample_crc_is_1c80_and_modbus_would_give_0759() -> None:
    assert crc16(SAMPLE_SEGMENT.encode()) == 0x1C80
    assert crc16_modbus(SAMPLE_SEGMENT.encode()) == 0x0759


def test_sample_packet_encodes_byte_exact_and_decodes() -> None:
    assert encode_packet(SAMPLE_SEGMENT) == SAMPLE
    assert decode_packet(SAMPLE) == SAMPLE_SEGMENT
    message = decode_message(SAMPLE)
    assert (message.qn, message.st, message.cn, message.pw) == (
        "20160801085857223",
        "32",
        "1062",
        "100000",
    )
    assert (message.mn, message.flag) == ("010000A8900016F000169DC0", "5")
    assert message.cp_values() == {"RtdInterval": "30"}
    assert encode_message(message) == SAMPLE


def test_lower_case_crc_is_accepted() -> None:
    assert decode_packet(SAMPLE.replace(b"1C80", b"1c80")) == SAMPLE_SEGMENT


def test_realtime_data_groups_parse_into_pollutants() -> None:
    segment = (
        "QN=20250101120000000;ST=32;CN=2011;PW=123456;MN=ABC123;Flag=5;"
        "CP=&&DataTime=20250101120000;w01018-Rtd=1.1,w01018-Flag=N;w00000-Rtd=-0.25,w00000-Flag=D&&"
    )
    message = parse_segment(segment)
    assert message.cp[0] == (("DataTime", "20250101120000"),)
    assert message.cp[1] == (("w01018-Rtd", "1.1"), ("w01018-Flag", "N"))
    assert message.pollutants() == {
        "w01018": {"Rtd": "1.1", "Flag": "N"},
        "w00000": {"Rtd": "-0.25", "Flag": "D"},
    }
    assert build_segment(message) == segment
    assert decode_message(encode_message(message)) == message


def test_empty_cp_and_missing_header_fields() -> None:
    message = parse_segment("ST=91;CN=9014;CP=&&&&")
    assert message.cp == () and message.qn is None and message.cn == "9014"
    assert build_segment(message) == "ST=91;CN=9014;CP=&&&&"


@pytest.mark.parametrize(
    "raw",
    [
        SAMPLE.replace(b"##0101", b"##0100"),  # length one short
        SAMPLE.replace(b"##0101", b"##01x1"),  # length not digits
        SAMPLE.replace(b"1C80", b"1C81"),  # CRC wrong
        SAMPLE.replace(b"1C80", b"1CZ0"),  # CRC not hex
        SAMPLE.replace(b"\r\n", b"\n"),  # no CR
        SAMPLE[1:],  # no ##
        SAMPLE.replace(b"ST=32", b"ST=3\xff"),  # not ASCII
    ],
)
def test_bad_packets_are_refused(raw: bytes) -> None:
    with pytest.raises(Hj212Error):
        decode_packet(raw)


@pytest.mark.parametrize(
    "segment",
    ["QN=1;ST=32", "QN=1;CP=&&a=1", "QN=1CP=&&a=1&&", "QN;CP=&&&&", "QN=1;CP=&&a=1=2&&", "CP=&&"],
)
def test_bad_segments_are_refused(segment: str) -> None:
    with pytest.raises(Hj212Error):
        parse_segment(segment)


def test_values_with_separators_cannot_be_built() -> None:
    with pytest.raises(Hj212Error):
        build_segment(Hj212Message((("QN", "1;2"),)))
    with pytest.raises(Hj212Error):
        build_segment(Hj212Message((), ((("", "1"),),)))
    with pytest.raises(Hj212Error):
        encode_packet("QN=中文;CP=&&&&")


# --- properties -------------------------------------------------------------------------------

tokens = st.text(st.characters(codec="ascii", exclude_characters=";,=&\r\n"), max_size=12)
keys = tokens.filter(bool)
pairs = st.lists(st.tuples(keys, tokens), max_size=4).map(tuple)
messages = st.builds(
    Hj212Message,
    pairs,
    st.lists(st.lists(st.tuples(keys, tokens), min_size=1, max_size=3).map(tuple), max_size=3).map(
        tuple
    ),
)


@given(messages)
def test_message_round_trip(message: Hj212Message) -> None:
    assert decode_message(encode_message(message)) == message


@given(st.binary(max_size=300))
def test_garbage_only_raises_hj212_errors(garbage: bytes) -> None:
    with contextlib.suppress(Hj212Error):
        decode_message(garbage)
    with contextlib.suppress(Hj212Error):
        parse_segment(garbage.decode("latin-1"))
    Hj212Decoder().feed(garbage)


@given(st.binary(max_size=300), messages)
def test_good_packet_after_garbage_is_found(garbage: bytes, message: Hj212Message) -> None:
    decoder = Hj212Decoder()
    received = decoder.feed(garbage) + decoder.feed(encode_message(message))
    assert received[-1] == message


def test_decoder_handles_split_packets_and_long_length_garbage() -> None:
    decoder = Hj212Decoder()
    assert decoder.feed(SAMPLE[:50]) == []
    assert decoder.feed(SAMPLE[50:] + b"##9999junk" + SAMPLE) == [decode_message(SAMPLE)] * 2
