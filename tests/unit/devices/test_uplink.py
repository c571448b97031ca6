"""MQTT-JSON uplink contract: the documented report, refusals with reasons, replies, topics."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterdesk.devices.uplink import (
    Control,
    ControlReply,
    MeterReport,
    Report,
    Reported,
    Topic,
    UplinkRejected,
    down_topic,
    parse_control,
    parse_control_reply,
    parse_report,
    parse_report_reply,
    parse_topic,
    reply_for,
    to_payload,
    up_topic,
)
from meterdesk.shared.errors import MeterdeskError

DOCUMENTED = b"""{"msgid": "m-0001", "method": "report", "sn": "GW0001", "timestamp": 1764028800000,
 "reported": {"source": "REALTIME",
   "meters": [{"addr": "000000000001", "time": 1764028800000, "state": "ONLINE",
               "energy_kwh": "1234.56", "energy_sharp_kwh": "100.00", "energy_peak_kwh": "400.00",
               "energy_flat_kwh": "500.00", "energy_valley_kwh": "234.56",
               "voltage_v": "220.1", "current_a": "1.234", "power_kw": "0.2716", "pf": "0.998",
               "frequency_hz": "50.00", "remaining_money": "12.34", "relay": "closed"}]}}"""


def documented() -> dict[str, Any]:
    return dict(json.loads(DOCUMENTED))


def with_change(path: list[str | int], value: object) -> bytes:
    """The documented report with one field replaced (``...`` removes it)."""
    document = documented()
    target: Any = document
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(document).encode()


def test_documented_report_parses_to_exact_decimals() -> None:
    report = parse_report(DOCUMENTED)
    meter = report.reported.meters[0]
    assert (report.msgid, report.sn, report.reported.source) == ("m-0001", "GW0001", "REALTIME")
    assert meter.energy_kwh == Decimal("1234.56") and str(meter.power_kw) == "0.2716"
    assert meter.relay == "closed" and meter.volume_m3 is None
    assert meter.measured_at == datetime(2025, 11, 25, tzinfo=UTC)
    assert report.sent_at == meter.measured_at


def test_report_round_trips_with_decimal_strings() -> None:
    report = parse_report(DOCUMENTED)
    payload = to_payload(report)
    assert parse_report(payload) == report
    meter = json.loads(payload)["reported"]["meters"][0]
    assert meter["energy_kwh"] == "1234.56" and meter["frequency_hz"] == "50.00"
    assert "volume_m3" not in meter


def test_water_meter_report_and_history_source() -> None:
    water = {"addr": "00000000000001", "time": 1764028860123, "state": "ONLINE"}
    water |= {"volume_m3": "12.34", "valve": "closed"}
    report = parse_report(with_change(["reported", "meters"], [water]))
    assert report.reported.meters[0].volume_m3 == Decimal("12.34")
    assert report.reported.meters[0].measured_at.microsecond == 123000
    assert parse_report(with_change(["reported", "source"], "HISTORY")).reported.source == "HISTORY"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (with_change(["reported", "meters", 0, "energy_kwh"], 1234.56), "decimal string"),
        (with_change(["reported", "meters", 0, "voltage_v"], 220), "decimal string"),
        (with_change(["reported", "meters", 0, "pf"], "0.99e0"), "plain decimal string"),
        (with_change(["reported", "meters", 0, "current_a"], "NaN"), "plain decimal string"),
        (with_change(["sn"], ...), "missing field sn"),
        (
            with_change(["reported", "meters", 0, "time"], ...),
            "missing field reported.meters.0.time",
        ),
        (with_change(["reported", "source"], "LIVE"), "reported.source"),
        (with_change(["timestamp"], -1), "negative"),
        (with_change(["timestamp"], "2025-11-25T08:00:00+08:00"), "epoch (UTC)"),
        (with_change(["reported", "meters", 0, "time"], 1764028800000.5), "epoch (UTC)"),
        (with_change(["timestamp"], True), "epoch (UTC)"),
        (with_change(["method"], "reboot"), "method: 'reboot'"),
        (with_change(["method"], "report_reply"), "method"),
        (with_change(["extra"], 1), "unknown field extra"),
        (with_change(["reported", "meters", 0, "relais"], "open"), "unknown field"),
        (with_change(["reported", "meters", 0, "relay"], "half"), "relay"),
        (with_change(["reported", "meters"], []), "reported.meters"),
        (with_change(["msgid"], ""), "msgid"),
    ],
)
def test_bad_reports_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(UplinkRejected) as caught:
        parse_report(payload)
    assert reason in caught.value.reason
    assert isinstance(caught.value, MeterdeskError)


def test_reply_for_acknowledges_with_the_same_msgid() -> None:
    report = parse_report(DOCUMENTED)
    assert json.loads(to_payload(reply_for(report, ok=True))) == {
        "msgid": "m-0001",
        "method": "report_reply",
        "res": 1,
    }
    assert reply_for(report, ok=False).res == 0
    assert parse_report_reply(to_payload(reply_for(report, ok=True))) == reply_for(report, ok=True)


def test_control_and_control_reply_round_trip() -> None:
    control = Control(msgid="c-1", addr="000000000001", command="trip", deadline=1764029400000)
    assert json.loads(to_payload(control)) == {
        "msgid": "c-1",
        "method": "control",
        "addr": "000000000001",
        "command": "trip",
        "deadline": 1764029400000,
    }
    assert parse_control(to_payload(control)) == control
    reply = ControlReply(msgid="c-1", addr="000000000001", res=0, detail="deadline passed")
    assert parse_control_reply(to_payload(reply)) == reply
    with pytest.raises(UplinkRejected):
        parse_control(to_payload(control).replace(b'"trip"', b'"explode"'))
    with pytest.raises(UplinkRejected):
        parse_control_reply(
            b'{"msgid": "c-1", "method": "control_reply", "addr": "1", "res": true}'
        )


def test_topics() -> None:
    assert up_topic("pk1", "GW0001") == "data/up/pk1/GW0001"
    assert down_topic("pk1", "GW0001") == "data/down/pk1/GW0001"
    assert parse_topic("data/up/pk1/GW0001") == Topic("up", "pk1", "GW0001")
    assert parse_topic(down_topic("pk1", "GW0001")).direction == "down"
    for bad in (
        "data/up/pk1",
        "data/sideways/pk/sn",
        "other/up/pk/sn",
        "data/up/pk/sn/x",
        "data/up//sn",
    ):
        with pytest.raises(UplinkRejected):
            parse_topic(bad)
    for product_key, sn in (("p/k", "sn"), ("pk", "#"), ("pk", "+"), ("", "sn")):
        with pytest.raises(UplinkRejected):
            up_topic(product_key, sn)


# --- properties -------------------------------------------------------------------------------

decimal_strings = st.decimals(
    allow_nan=False, allow_infinity=False, places=3, min_value=-(10**6), max_value=10**6
)
epoch_ms = st.integers(0, 4_102_444_800_000)
meters = st.builds(
    MeterReport,
    addr=st.from_regex(r"[0-9]{12}", fullmatch=True),
    time=epoch_ms,
    state=st.sampled_from(["ONLINE", "OFFLINE"]),
    energy_kwh=st.none() | decimal_strings,
    power_kw=st.none() | decimal_strings,
    remaining_money=st.none() | decimal_strings,
    relay=st.none() | st.sampled_from(["open", "closed"]),
    volume_m3=st.none() | decimal_strings,
    valve=st.none() | st.sampled_from(["open", "closed", "abnormal"]),
)
reports = st.builds(
    Report,
    # any text a gateway may use: control characters (Cc) are refused by the contract
    msgid=st.text(
        st.characters(codec="utf-8", exclude_categories=("Cc",)), min_size=1, max_size=20
    ),
    sn=st.from_regex(r"GW[0-9]{4}", fullmatch=True),
    timestamp=epoch_ms,
    reported=st.builds(
        Reported,
        source=st.sampled_from(["REALTIME", "HISTORY"]),
        meters=st.lists(meters, min_size=1, max_size=3),
    ),
)


@given(reports)
def test_report_round_trip(report: Report) -> None:
    assert parse_report(to_payload(report)) == report


@given(st.binary(max_size=200))
def test_random_bytes_only_raise_uplink_rejected(payload: bytes) -> None:
    with contextlib.suppress(UplinkRejected):
        parse_report(payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.sampled_from(["msgid", "method", "sn", "timestamp", "reported", "source", "meters"]),
    json_values,
)
def test_random_field_values_only_raise_uplink_rejected(field: str, value: object) -> None:
    document = documented()
    if field in ("source", "meters"):
        document["reported"][field] = value
    else:
        document[field] = value
    with contextlib.suppress(UplinkRejected):
        parse_report(json.dumps(document).encode())
