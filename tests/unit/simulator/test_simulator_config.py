"""The simulator's TOML config and the ``--meters N`` site."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from meterdesk.shared.errors import ValidationError
from meterdesk.simulator.cli import build_config, default_document
from meterdesk.simulator.config import FaultKind, Protocol, load_config, parse_config
from meterdesk.simulator.meter import ElectricitySpec, WaterSpec
from meterdesk.simulator.prepaid import BillingMode

BUILDING = """
[simulator]
seed = 7
zone = "Asia/Shanghai"
start = "2026-11-02T08:00:00+08:00"

[[bus]]
name = "A-485"
protocol = "dlt645"
listen = "127.0.0.1:7001"

[[bus]]
name = "A-water"
protocol = "cjt188"

[[gateway]]
sn = "GW-A"
interval_s = 900

[[meters]]
first_address = 101
count = 4
profile = "shop"
bus = "A-485"
gateway = "GW-A"
billing = "platform"
money = "12.50"
prices = ["1.5", "1.1", "0.8", "0.3"]

[[meters]]
first_address = 101
count = 4
kind = "water"
bus = "A-water"
gateway = "GW-A"
valve_delay_s = 3

[[fault]]
kind = "offline"
at_s = 60
duration_s = 120
bus = "A-485"
address = 102

[[fault]]
kind = "uplink_down"
at_s = 300
gateway = "GW-A"
"""


def parsed(text: str = BUILDING, **changes: Any) -> dict[str, Any]:
    document = tomllib.loads(text)
    for key, value in changes.items():
        table, _, field = key.partition("__")
        if isinstance(document[table], list):
            document[table][0][field] = value
        else:
            document[table][field] = value
    return document


def test_a_building_config_expands_to_one_meter_per_address() -> None:
    config = parse_config(parsed())
    assert config.seed == 7 and config.zone == ZoneInfo("Asia/Shanghai")
    assert [bus.protocol for bus in config.buses] == [Protocol.DLT645, Protocol.CJT188]
    assert config.buses[0].port == 7001 and config.buses[1].port is None
    electricity = [m.spec for m in config.meters if isinstance(m.spec, ElectricitySpec)]
    water = [m.spec for m in config.meters if isinstance(m.spec, WaterSpec)]
    assert [spec.address for spec in electricity] == [101, 102, 103, 104] and len(water) == 4
    assert electricity[0].billing is BillingMode.PLATFORM and electricity[0].money == Decimal(
        "12.50"
    )
    assert electricity[0].settings.prices[0] == Decimal("1.5")
    assert water[0].valve_delay_s == 3.0
    assert [fault.kind for fault in config.faults] == [FaultKind.OFFLINE, FaultKind.UPLINK_DOWN]


def test_initial_values_follow_the_seed() -> None:
    first = parse_config(parsed(), seed=1).meters[4].spec
    again = parse_config(parsed(), seed=1).meters[4].spec
    other = parse_config(parsed(), seed=2).meters[4].spec
    assert first == again != other


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"meters__money": 12.5}, "decimal string"),
        ({"meters__colour": "red"}, "unknown keys"),
        ({"meters__bus": "A-water"}, "cannot be on a cjt188 bus"),
        ({"meters__bus": "nowhere"}, "no bus named"),
        ({"bus__protocol": "mbus"}, "protocol must be one of"),
        ({"bus__listen": "7001"}, "HOST:PORT"),
        ({"simulator__zone": "Mars/Olympus"}, "unknown time zone"),
        ({"fault__kind": "meteor"}, "kind must be one of"),
        ({"meters__prices": ["1"]}, "four decimal strings"),
        ({"meters__alarm_1": "1.00"}, "alarm 1"),
    ],
)
def test_mistakes_are_refused_with_a_clear_message(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_config(parsed(**changes))


def test_an_address_is_used_once_per_bus() -> None:
    document = parsed()
    document["meters"].append({"first_address": 104, "bus": "A-485"})
    with pytest.raises(ValidationError, match="used twice"):
        parse_config(document)


def test_modbus_unit_ids_stop_at_247() -> None:
    document = {
        "bus": [{"name": "m", "protocol": "modbus"}],
        "meters": [{"first_address": 248, "bus": "m"}],
    }
    with pytest.raises(ValidationError, match="does not fit modbus"):
        parse_config(document)


def test_meters_n_builds_one_line_per_socket_and_a_gateway_for_dlt645_and_water() -> None:
    document = default_document(
        meters=3, dlt645_tcp="127.0.0.1:1", modbus_tcp="127.0.0.1:2", mqtt_broker="127.0.0.1:1883"
    )
    config = parse_config(document)
    assert [bus.name for bus in config.buses] == ["dlt645", "modbus", "cjt188"]
    assert config.buses[2].host is None  # water meters exist for the gateway only
    reported = [m for m in config.meters if m.gateway == "GW0001"]
    assert len(config.meters) == 9 and len(reported) == 6


def test_nothing_to_simulate_is_an_error() -> None:
    with pytest.raises(ValidationError, match="nothing to simulate"):
        default_document(meters=3)


def test_config_file_and_socket_flags_do_not_mix(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(BUILDING, encoding="utf-8")
    assert len(load_config(path).meters) == 8
    with pytest.raises(ValidationError, match="config file names the sockets"):
        build_config(config=path, meters=3, speed=None, seed=None, endpoints={"dlt645_tcp": "x:1"})


def test_the_documented_example_is_a_valid_config() -> None:
    docs = Path(__file__).parents[3] / "docs" / "simulator.md"
    text = docs.read_text(encoding="utf-8")
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    assert parse_config(tomllib.loads(example)).meters
