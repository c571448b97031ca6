"""Register maps: the documented tables, CT/PT scaling, read planning, writes, recharge."""

from __future__ import annotations

import ast
import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client.mixin import ModbusClientMixin

from meterdesk.devices.codecs import modbus_map
from meterdesk.devices.codecs.modbus_map import (
    MAX_READ_REGISTERS,
    ModbusMapError,
    RegisterMap,
    RegisterType,
    load_map,
    parse_map,
)

REFERENCE = load_map("reference_prepaid")
PUBLIC = load_map("acrel_ddsy1352_public")
ONE = Decimal(1)

# (address, type, scale) straight from the two tables in PROTOCOLS.md §2
PUBLIC_TABLE = {
    "energy_kwh": (0x0000, "UINT32", "0.01"),
    "energy_sharp_kwh": (0x0002, "UINT32", "0.01"),
    "energy_peak_kwh": (0x0004, "UINT32", "0.01"),
    "energy_flat_kwh": (0x0006, "UINT32", "0.01"),
    "energy_valley_kwh": (0x0008, "UINT32", "0.01"),
    "voltage_v": (0x000B, "UINT16", "0.1"),
    "current_a": (0x000C, "UINT16", "0.01"),
    "power_kw": (0x000D, "INT16", "0.001"),
    "apparent_power_kva": (0x000F, "UINT16", "0.001"),
    "power_factor": (0x0010, "INT16", "0.001"),
}
PREPAID_TABLE = {
    "frequency_hz": (0x0011, "UINT16", "0.01"),
    "reactive_power_kvar": (0x0012, "INT16", "0.001"),
    "remaining_money_cny": (0x0020, "INT32", "0.01"),
    "purchase_count": (0x0022, "UINT16", None),
    "relay_state": (0x0023, "UINT16", None),
    "relay_command": (0x0024, "UINT16", None),
    "status_bits": (0x0025, "UINT16", None),
    "alarm_1_cny": (0x0026, "UINT32", "0.01"),
    "alarm_2_cny": (0x0028, "UINT32", "0.01"),
    "overdraft_limit_cny": (0x002A, "UINT32", "0.01"),
    "price_tariff_1_per_kwh": (0x0030, "UINT32", "0.0001"),
    "price_tariff_2_per_kwh": (0x0032, "UINT32", "0.0001"),
    "price_tariff_3_per_kwh": (0x0034, "UINT32", "0.0001"),
    "price_tariff_4_per_kwh": (0x0036, "UINT32", "0.0001"),
    "recharge_amount_cny": (0x0040, "UINT32", "0.01"),
    "recharge_purchase_count": (0x0042, "UINT16", None),
    # meterdesk's own extension (退电), not in PROTOCOLS.md: docs/commands.md "the take-back
    # block of the reference map"
    "take_back_amount_cny": (0x0044, "UINT32", "0.01"),
    "take_back_request_count": (0x0046, "UINT16", None),
    "take_back_count": (0x0047, "UINT16", None),
    **{
        f"clock_{part}": (0x0050 + i, "UINT16", None)
        for i, part in enumerate(("year", "month", "day", "hour", "minute", "second"))
    },
}


def _words(value: int, data_type: ModbusClientMixin.DATATYPE) -> list[int]:
    """pymodbus's own conversion, as an independent check of word order."""
    return list(ModbusClientMixin.convert_to_registers(value, data_type))


@pytest.mark.parametrize(
    ("map_", "table"), [(PUBLIC, PUBLIC_TABLE), (REFERENCE, PUBLIC_TABLE | PREPAID_TABLE)]
)
def test_maps_hold_exactly_the_documented_registers(
    map_: RegisterMap, table: dict[str, tuple[int, str, str | None]]
) -> None:
    assert {register.name for register in map_.registers} == set(table)
    for name, (address, kind, scale) in table.items():
        register = map_.register(name)
        assert (register.address, register.type.value) == (address, kind)
        assert register.scale == (None if scale is None else Decimal(scale))
        assert register.meaning and isinstance(register.writable, bool)


def test_writable_flags() -> None:
    writable = {register.name for register in REFERENCE.registers if register.writable}
    assert {"relay_command", "recharge_amount_cny", "recharge_purchase_count"} <= writable
    assert not {"energy_kwh", "remaining_money_cny", "purchase_count", "relay_state"} & writable
    assert not any(register.writable for register in PUBLIC.registers)


def test_decode_applies_ct_and_pt_where_they_belong() -> None:
    registers = [0] * 0x13
    registers[0:2] = _words(123456, ModbusClientMixin.DATATYPE.UINT32)
    registers[0x0B] = 2201
    registers[0x0C] = 123
    registers[0x0D] = 0x10000 - 50  # -0.050 kW
    registers[0x0F] = 250
    registers[0x10] = 998
    registers[0x11] = 5000
    registers[0x12] = 0x10000 - 7
    values = REFERENCE.decode(0, registers, ct=Decimal(40), pt=Decimal(10))
    assert values["energy_kwh"] == Decimal("1234.56") * 400
    assert values["voltage_v"] == Decimal("220.1") * 10
    assert values["current_a"] == Decimal("1.23") * 40
    assert values["power_kw"] == Decimal("-0.050") * 400
    assert values["apparent_power_kva"] == Decimal("0.250") * 400
    assert values["reactive_power_kvar"] == Decimal("-0.007") * 400
    assert values["power_factor"] == Decimal("0.998")
    assert values["frequency_hz"] == Decimal("50.00")
    assert all(isinstance(value, Decimal) for value in values.values())


def test_decode_without_transformers_is_the_raw_scaled_value() -> None:
    values = PUBLIC.decode(0, _words(123456, ModbusClientMixin.DATATYPE.UINT32), ONE, ONE)
    assert values == {"energy_kwh": Decimal("1234.56")}
    assert str(values["energy_kwh"]) == "1234.56"


def test_money_is_signed_high_word_first_and_counters_are_ints() -> None:
    registers = [*_words(-1234, ModbusClientMixin.DATATYPE.INT32), 7, 1]
    values = REFERENCE.decode(0x0020, registers, ct=Decimal(100), pt=Decimal(100))
    assert values == {
        "remaining_money_cny": Decimal("-12.34"),
        "purchase_count": 7,
        "relay_state": 1,
    }
    assert isinstance(values["purchase_count"], int)


def test_decode_skips_values_cut_by_the_window_and_write_only_registers() -> None:
    assert REFERENCE.decode(0x0001, [0, 5], ONE, ONE) == {}
    assert REFERENCE.decode(0x0040, [0, 1, 2], ONE, ONE) == {}
    with pytest.raises(ModbusMapError):
        REFERENCE.decode(0, [70000], ONE, ONE)
    with pytest.raises(ModbusMapError):
        REFERENCE.decode(0, [1], Decimal(0), ONE)


def test_plan_merges_contiguous_registers() -> None:
    names = [
        "energy_kwh",
        "energy_sharp_kwh",
        "energy_peak_kwh",
        "energy_flat_kwh",
        "energy_valley_kwh",
    ]
    assert REFERENCE.plan_reads(names) == [(0x0000, 10)]
    assert REFERENCE.plan_reads(["voltage_v", "current_a", "power_kw"]) == [(0x000B, 3)]
    assert REFERENCE.plan_reads(["remaining_money_cny", "purchase_count", "relay_state"]) == [
        (0x0020, 4)
    ]


def test_plan_bridges_only_readable_mapped_gaps() -> None:
    # 0002–0009 are mapped energy registers: one read; 000A is unmapped: a second read.
    assert REFERENCE.plan_reads(["energy_kwh", "energy_valley_kwh"]) == [(0x0000, 10)]
    assert REFERENCE.plan_reads(["energy_kwh", "voltage_v"]) == [(0x0000, 2), (0x000B, 1)]
    # 0024 (relay command) is write-only: never read through it.
    assert REFERENCE.plan_reads(["relay_state", "status_bits"]) == [(0x0023, 1), (0x0025, 1)]
    assert REFERENCE.plan_reads([]) == []


def test_plan_refuses_write_only_and_unknown_names() -> None:
    with pytest.raises(ModbusMapError):
        REFERENCE.plan_reads(["relay_command"])
    with pytest.raises(ModbusMapError):
        REFERENCE.plan_reads(["no_such_register"])


def _wide_map(count: int) -> RegisterMap:
    entries = [
        {
            "name": f"r{i}",
            "address": f"0x{i:04X}",
            "type": "UINT16",
            "scale": None,
            "unit": "",
            "meaning": "x",
        }
        for i in range(count)
    ]
    return parse_map(json.dumps({"name": "wide", "registers": entries}))


def test_plan_never_exceeds_125_registers_per_read() -> None:
    wide = _wide_map(300)
    plan = wide.plan_reads([f"r{i}" for i in range(300)])
    assert plan == [(0, 125), (125, 125), (250, 50)]


@given(st.sets(st.sampled_from([r.name for r in REFERENCE.registers if r.readable]), min_size=1))
def test_plan_covers_every_wanted_register_without_splitting(names: set[str]) -> None:
    plan = REFERENCE.plan_reads(sorted(names))
    for name in names:
        register = REFERENCE.register(name)
        assert any(
            start <= register.address and register.end <= start + count for start, count in plan
        )
    assert all(0 < count <= MAX_READ_REGISTERS for _, count in plan)


def test_encode_write_scales_exactly() -> None:
    assert REFERENCE.encode_write("relay_command", 0x1A) == (0x0024, [0x1A])
    assert REFERENCE.encode_write("price_tariff_1_per_kwh", Decimal("0.5283")) == (
        0x0030,
        [0, 5283],
    )
    assert REFERENCE.encode_write("alarm_1_cny", Decimal("1000.00")) == (
        0x0026,
        _words(100000, ModbusClientMixin.DATATYPE.UINT32),
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("energy_kwh", Decimal(1)),  # not writable
        ("price_tariff_1_per_kwh", Decimal("0.52835")),  # finer than the scale
        ("alarm_1_cny", Decimal("-1.00")),  # unsigned
        ("relay_command", 0x10000),  # out of range
        ("alarm_1_cny", 1.5),  # float
    ],
)
def test_encode_write_refuses(name: str, value: object) -> None:
    with pytest.raises(ModbusMapError):
        REFERENCE.encode_write(name, value)  # type: ignore[arg-type]


def test_recharge_write_is_what_the_master_sends() -> None:
    # modbus_peer.py: write_registers(0x0040, [0, amount, count0 + 1]) with amount 1000 = 10.00 CNY
    assert REFERENCE.encode_recharge(Decimal("10.00"), 6) == (0x0040, [0, 1000, 6])
    address, words = REFERENCE.encode_recharge(Decimal("1000.00"), 65535)
    assert (address, words) == (0x0040, [*_words(100000, ModbusClientMixin.DATATYPE.UINT32), 65535])
    for amount, count in ((Decimal(0), 1), (Decimal("0.001"), 1), (Decimal(1), 65536)):
        with pytest.raises(ModbusMapError):
            REFERENCE.encode_recharge(amount, count)
    with pytest.raises(ModbusMapError):
        PUBLIC.encode_recharge(Decimal(1), 1)


@given(
    st.sampled_from([r for r in REFERENCE.registers if r.writable and r.readable]),
    st.integers(-(2**31), 2**32 - 1),
)
def test_written_values_read_back_unchanged(register: modbus_map.Register, raw: int) -> None:
    low, high = register.type.bounds
    raw = min(max(raw, low), high)
    value = raw if register.scale is None else Decimal(raw) * register.scale
    address, words = REFERENCE.encode_write(register.name, value)
    assert REFERENCE.decode(address, words, ONE, ONE)[register.name] == value


@given(st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2))
def test_32_bit_decoding_agrees_with_pymodbus(words: list[int]) -> None:
    expected = ModbusClientMixin.convert_from_registers(words, ModbusClientMixin.DATATYPE.INT32)
    assert isinstance(expected, int)
    money = REFERENCE.decode(0x0020, words, ONE, ONE)["remaining_money_cny"]
    assert money == Decimal(expected) / 100


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        json.dumps({"name": "x"}),
        json.dumps({"name": "x", "registers": [{"name": "a", "address": "12", "type": "UINT16"}]}),
        json.dumps(
            {"name": "x", "registers": [{"name": "a", "address": "0x0001", "type": "FLOAT"}]}
        ),
        json.dumps(
            {
                "name": "x",
                "registers": [{"name": "a", "address": "0x0001", "type": "UINT16", "factor": "CT"}],
            }
        ),
        json.dumps(
            {
                "name": "x",
                "registers": [
                    {"name": "a", "address": "0x0000", "type": "UINT32"},
                    {"name": "b", "address": "0x0001", "type": "UINT16"},
                ],
            }
        ),
        json.dumps(
            {"name": "x", "registers": [{"name": "a", "address": "0xFFFF", "type": "UINT32"}]}
        ),
    ],
)
def test_bad_map_files_are_refused(text: str) -> None:
    with pytest.raises(ModbusMapError):
        parse_map(text)


def test_unknown_map_names_are_refused() -> None:
    for name in ("no_such_map", "../maps/reference_prepaid", "Reference"):
        with pytest.raises(ModbusMapError):
            load_map(name)
    assert RegisterType.INT32.bounds == (-(2**31), 2**31 - 1)


def test_the_codec_does_not_import_pymodbus() -> None:
    tree = ast.parse(Path(modbus_map.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name.startswith("pymodbus") for name in imported)


def test_take_back_write_is_one_block_of_amount_and_count() -> None:
    assert REFERENCE.encode_take_back(Decimal("30.00"), 2) == (0x0044, [0, 3000, 2])
    for amount, count in ((Decimal(0), 1), (Decimal("0.001"), 1), (Decimal(1), 65536)):
        with pytest.raises(ModbusMapError):
            REFERENCE.encode_take_back(amount, count)
    with pytest.raises(ModbusMapError, match="take_back_amount_cny"):
        PUBLIC.encode_take_back(Decimal(1), 1)  # a map without the block cannot take back
