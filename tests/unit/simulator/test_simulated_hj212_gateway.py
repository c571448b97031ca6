"""The HJ212 gateway's packets (read back with the platform's own codec and mapping), its
pending/re-send/buffer rules, and its configuration (file and ``--hj212-server``)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from meterdesk.devices.codecs.hj212 import Hj212Message, decode_message
from meterdesk.devices.hj212.model import data_answer, meter_values, wants_answer
from meterdesk.shared.errors import ValidationError
from meterdesk.simulator.cli import default_document
from meterdesk.simulator.config import FaultConfig, FaultKind, parse_config
from meterdesk.simulator.faults import apply_fault, revert_fault
from meterdesk.simulator.hj212_gateway import (
    Hj212Gateway,
    Hj212GatewaySpec,
    data_time,
    meter_items,
)
from meterdesk.simulator.hj212_outbox import Hj212Outbox, register_text
from meterdesk.simulator.meter import ElectricityMeter, ElectricitySpec, WaterMeter, WaterSpec
from meterdesk.simulator.runtime import Simulation

BANDS = (Decimal("0.5"), Decimal("300"), Decimal("434"), Decimal("500"))
NOW = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
SHANGHAI = ZoneInfo("Asia/Shanghai")
SECRET = "s3cret"  # noqa: S105 - a simulated gateway's PW


def answer_to(data: bytes) -> Hj212Message:
    """What the platform answers (its own data_answer)."""
    return data_answer(decode_message(data))


def test_a_packet_reads_back_through_the_platforms_mapping() -> None:
    electricity = ElectricityMeter(ElectricitySpec(address=7, band_energy_kwh=BANDS), now=NOW)
    water = WaterMeter(WaterSpec(address=9, volume_m3=Decimal("3.21")), now=NOW)
    items = meter_items(electricity, NOW) + meter_items(water, NOW)
    outbox = Hj212Outbox("MN1", "pw1", cn="2061")
    outbox.add(data_time(NOW, SHANGHAI), items)
    (data,) = outbox.due(0.0)
    message = decode_message(data)
    assert (message.cn, message.pw, message.mn, message.flag) == ("2061", "pw1", "MN1", "5")
    assert wants_answer(message)
    assert message.cp_values()["DataTime"] == "20261102090000"  # Shanghai wall clock
    tap, power = meter_values(message, SHANGHAI)  # in address order
    assert power.address == "000000000007" and power.measured_at == NOW
    assert power.total == Decimal("1234.5")  # the sum of the bands
    assert set(power.bands) == {"sharp", "peak", "flat", "valley"}
    assert sum(power.bands.values()) == power.total
    assert (tap.address, tap.total, tap.bands) == ("00000000000009", Decimal("3.21"), {})


def test_an_offline_meter_is_left_out() -> None:
    meter = ElectricityMeter(ElectricitySpec(address=1), now=NOW)
    meter.faults.offline = True
    assert meter_items(meter, NOW) == ()


def test_registers_are_plain_decimals_with_at_most_four_places() -> None:
    assert register_text(Decimal("1E+3")) == "1000"
    assert register_text(Decimal("1.234567")) == "1.2346"
    assert register_text(Decimal("0.10")) == "0.10"


def test_a_packet_stays_pending_and_is_resent_byte_for_byte_until_its_answer() -> None:
    outbox = Hj212Outbox("MN1", "pw", resend_after_s=30)
    qn = outbox.add("20261102090000", (("000000000001-Cou", "1.5"),))
    (first,) = outbox.due(0.0)
    assert outbox.due(10.0) == []
    assert outbox.due(30.0) == [first]
    stranger = Hj212Message(
        (("QN", qn), ("ST", "91"), ("CN", "9014"), ("MN", "MN2"), ("Flag", "4"))
    )
    assert not outbox.answer(stranger)  # another gateway's answer
    assert not outbox.answer(decode_message(first))  # the upload itself is no answer
    assert outbox.answer(answer_to(first))
    assert not outbox.is_pending(qn) and outbox.answered_count == 1
    assert not outbox.answer(answer_to(first))  # a repeated answer changes nothing
    assert outbox.due(100.0) == []


def test_what_waited_through_an_outage_goes_out_at_once_oldest_first() -> None:
    outbox = Hj212Outbox("MN1", "pw", resend_after_s=30)
    outbox.add("20261102090000", ())
    (sent,) = outbox.due(0.0)  # sent, the connection died before the answer
    later = [outbox.add(f"2026110209{minute:02d}00", ()) for minute in (1, 2, 3)]
    outbox.reconnected()
    due = outbox.due(1.0)
    assert due[0] == sent  # the same packet again: its QN is what the answer names
    assert [decode_message(data).qn for data in due[1:]] == later


def test_the_buffer_and_bursts_are_bounded() -> None:
    outbox = Hj212Outbox("MN1", "pw", max_pending=3)
    qns = [outbox.add(f"2026110209{minute:02d}00", ()) for minute in range(5)]
    assert outbox.pending_count == 3 and not outbox.is_pending(qns[0])
    assert len(outbox.due(0.0, limit=2)) == 2


def test_qns_are_unique_even_for_the_same_data_time() -> None:
    outbox = Hj212Outbox("MN1", "pw")
    assert len({outbox.add("20261102090000", ()) for _ in range(5)}) == 5


def test_only_data_upload_cns() -> None:
    with pytest.raises(ValueError, match="2051"):
        Hj212Outbox("MN1", "pw", cn="9014")


def hj212_site(**gateway: Any) -> dict[str, Any]:
    table = {"sn": "HJ1", "uplink": "hj212"} | gateway
    return {
        "bus": [{"name": "dlt", "protocol": "dlt645"}],
        "gateway": [table],
        "meters": [{"first_address": 1, "bus": "dlt", "gateway": "HJ1"}],
    }


def test_the_config_file_declares_an_hj212_gateway() -> None:
    config = parse_config(
        hj212_site(server="10.0.0.5:9300", password=SECRET, cn="2061", interval_s=3600)
    )
    (spec,) = config.gateways
    assert spec == Hj212GatewaySpec(
        mn="HJ1",
        host="10.0.0.5",
        port=9300,
        password=SECRET,
        cn="2061",
        interval_s=3600,
        seed=config.seed,
    )


@pytest.mark.parametrize(
    ("gateway", "message"),
    [
        ({"cn": "2011"}, "cn must be one of"),
        ({"password": "a;b"}, "password must be printable ASCII"),
        ({"broker": "127.0.0.1:1883"}, "unknown keys"),
        ({"uplink": "lora"}, "uplink must be mqtt or hj212"),
        ({"interval_s": 0}, "must be positive"),
    ],
)
def test_a_bad_hj212_gateway_table_is_refused(gateway: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_config(hj212_site(**gateway))


def test_garbage_goes_to_hj212_gateways_only() -> None:
    fault = {"kind": "garbage", "gateway": "HJ1", "at_s": 5, "value": 20}
    parse_config(hj212_site() | {"fault": [fault]})
    mqtt = hj212_site()
    mqtt["gateway"] = [{"sn": "HJ1"}]
    with pytest.raises(ValidationError, match="not an HJ212 gateway"):
        parse_config(mqtt | {"fault": [fault]})


def test_the_hj212_server_flag_puts_the_meters_on_gateway_hj0001() -> None:
    document = default_document(meters=2, hj212_server="127.0.0.1:9212", hj212_password=SECRET)
    assert document["gateway"] == [
        {
            "sn": "HJ0001",
            "uplink": "hj212",
            "server": "127.0.0.1:9212",
            "password": SECRET,
            "interval_s": 60,
        }
    ]
    assert {group["gateway"] for group in document["meters"]} == {"HJ0001"}
    config = parse_config(document)
    assert {entry.gateway for entry in config.meters} == {"HJ0001"}
    with pytest.raises(ValidationError, match="give one of them"):
        default_document(meters=2, hj212_server="127.0.0.1:9212", mqtt_broker="127.0.0.1:1883")
    with pytest.raises(ValidationError, match="needs --hj212-server"):
        default_document(meters=2, hj212_password=SECRET)


def test_gateway_faults_cut_the_uplink_and_put_junk_between_packets() -> None:
    simulation = Simulation(parse_config(hj212_site()))
    gateway = simulation.gateways["HJ1"]
    assert isinstance(gateway, Hj212Gateway)
    garbage = FaultConfig(FaultKind.GARBAGE, at_s=0, value=300, gateway="HJ1")
    apply_fault(garbage, gateway, NOW)
    junk = gateway._garbage()
    assert len(junk) == 300 and b"#" not in junk  # never a false packet start
    revert_fault(garbage, gateway, NOW)
    assert gateway._garbage() == b""
    down = FaultConfig(FaultKind.UPLINK_DOWN, at_s=0, gateway="HJ1")
    apply_fault(down, gateway, NOW)
    assert not gateway._uplink_wanted.is_set()
    revert_fault(down, gateway, NOW)
    assert gateway._uplink_wanted.is_set()
    with pytest.raises(ValidationError, match="meter fault"):
        apply_fault(FaultConfig(FaultKind.SLOW, at_s=0, gateway="HJ1"), gateway, NOW)
