"""The simulator's protocol responders without sockets: DL/T 645, CJ/T 188 and Modbus values."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from meterdesk.devices.codecs import cjt188 as cj
from meterdesk.devices.codecs import dlt645 as d
from meterdesk.devices.codecs.modbus_map import load_map
from meterdesk.simulator.cjt188_server import Cjt188Bus
from meterdesk.simulator.dlt645_server import Dlt645Bus
from meterdesk.simulator.meter import ElectricityMeter, ElectricitySpec, WaterMeter, WaterSpec
from meterdesk.simulator.modbus_server import ModbusMeter
from meterdesk.simulator.prepaid import PrepaidSettings
from meterdesk.simulator.tcp_bus import Answer

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=SHANGHAI)
BANDS = (Decimal("100.00"), Decimal("400.00"), Decimal("500.00"), Decimal("234.56"))
PASSWORD = d.Password(2, "000000")


def meter(address: int = 1, **changes: object) -> ElectricityMeter:
    values: dict[str, object] = {"address": address, "zone": SHANGHAI, "band_energy_kwh": BANDS}
    values.update(changes)
    return ElectricityMeter(ElectricitySpec(**values), now=NOW)  # type: ignore[arg-type]


def ask(bus: Dlt645Bus, hex_or_frame: str | d.Dlt645Frame, now: datetime = NOW) -> Answer | None:
    raw = (
        bytes.fromhex(hex_or_frame)
        if isinstance(hex_or_frame, str)
        else d.encode_frame(hex_or_frame)
    )
    frames = d.Dlt645Decoder().feed(raw)
    assert len(frames) == 1
    return bus.respond(frames[0], now)


def reply(answer: Answer | None) -> d.Dlt645Frame:
    assert answer is not None
    frames = d.Dlt645Decoder().feed(answer.wire)
    assert len(frames) == 1
    return frames[0]


# --- DL/T 645: the worked frames of PROTOCOLS.md --------------------------------------------


def test_reads_total_energy_exactly_as_the_worked_frame() -> None:
    answer = ask(
        Dlt645Bus([meter()]), "FE FE FE FE 68 01 00 00 00 00 00 68 11 04 33 33 33 33 B2 16"
    )
    assert answer is not None
    expected = "FE FE FE FE 68 01 00 00 00 00 00 68 91 08 33 33 33 33 89 67 45 33 9E 16"
    assert answer.wire == bytes.fromhex(expected)


def test_unknown_identifier_gets_the_worked_no_such_data_reply() -> None:
    answer = ask(Dlt645Bus([meter()]), d.read_request("000000000001", 0x0F0F0F0F))
    assert answer is not None
    assert answer.wire.lstrip(b"\xfe") == bytes.fromhex("68 01 00 00 00 00 00 68 D1 01 35 D8 16")


def test_relay_control_gets_the_worked_confirmation_and_shows_in_status_word_3() -> None:
    the_meter = meter()
    bus = Dlt645Bus([the_meter])
    request = d.relay_control_request(
        "000000000001", d.RelayAction.TRIP, deadline=NOW + timedelta(minutes=5), zone=SHANGHAI,
        password=PASSWORD, operator_code="00000000",
    )  # fmt: skip
    answer = ask(bus, request)
    assert answer is not None
    assert answer.wire.lstrip(b"\xfe") == bytes.fromhex("68 01 00 00 00 00 00 68 9C 00 6D 16")
    status = d.parse_read_reply(reply(ask(bus, d.read_request("000000000001", 0x04000503))))
    word = status.value()
    assert isinstance(word, d.StatusWord3) and word.relay_open and word.relay_commanded_open


def test_expired_relay_command_is_refused_on_the_meters_own_clock() -> None:
    bus = Dlt645Bus([meter()])
    request = d.relay_control_request(
        "000000000001", d.RelayAction.CLOSE_DIRECT, deadline=NOW - timedelta(seconds=1),
        zone=SHANGHAI, password=PASSWORD, operator_code="00000000",
    )  # fmt: skip
    refused = reply(ask(bus, request))
    assert refused.control == 0xDC and d.error_status(refused) & d.ErrorStatus.OTHER


def test_relay_control_with_a_wrong_password_is_unauthorised() -> None:
    request = d.relay_control_request(
        "000000000001", d.RelayAction.TRIP, deadline=NOW + timedelta(minutes=5), zone=SHANGHAI,
        password=d.Password(2, "999999"), operator_code="00000000",
    )  # fmt: skip
    refused = reply(ask(Dlt645Bus([meter()]), request))
    assert d.error_status(refused) == d.ErrorStatus.UNAUTHORISED


def test_block_read_carries_total_and_four_bands() -> None:
    block = d.parse_read_reply(
        reply(ask(Dlt645Bus([meter()]), d.read_request("000000000001", 0x0000FF00)))
    )
    assert block.value() == (Decimal("1234.56"), *BANDS)


def test_an_absent_address_gets_silence() -> None:
    assert ask(Dlt645Bus([meter()]), d.read_request("000000987654", 0)) is None


def test_read_address_answers_only_when_one_meter_is_on_the_line() -> None:
    one = reply(ask(Dlt645Bus([meter(7)]), d.read_address_request()))
    assert d.parse_read_address_reply(one) == "000000000007"
    assert ask(Dlt645Bus([meter(7), meter(8)]), d.read_address_request()) is None


def test_broadcast_time_sync_sets_every_clock_and_nobody_replies() -> None:
    meters = [meter(1), meter(2)]
    shown = NOW + timedelta(minutes=3)
    assert ask(Dlt645Bus(meters), d.time_sync_request(shown, SHANGHAI)) is None
    assert all(m.clock.read(NOW) == shown for m in meters)


def test_write_needs_the_password_and_keeps_alarm_1_above_alarm_2() -> None:
    the_meter = meter()
    bus = Dlt645Bus([the_meter])

    def write(di: int, value: Decimal, password: d.Password = PASSWORD) -> d.Dlt645Frame:
        request = d.write_value_request(
            "000000000001", di, value, password=password, operator_code="00000000"
        )
        return reply(ask(bus, request))

    assert (
        d.error_status(write(0x04001002, Decimal("5.00"), d.Password(2, "123456")))
        == d.ErrorStatus.UNAUTHORISED
    )
    assert write(0x04001002, Decimal("5.00")).control == 0x94
    assert the_meter.engine.settings.alarm_2 == Decimal("5.00")
    assert write(0x04001001, Decimal("1.00")).control == 0xD4  # below alarm 2
    assert write(0x04050103, Decimal("0.6500")).control == 0x94
    assert the_meter.engine.settings.prices[2] == Decimal("0.6500")
    assert d.error_status(write(0x00000000, Decimal(0))) == d.ErrorStatus.UNAUTHORISED


def test_money_reads_as_remaining_and_overdraft() -> None:
    settings = PrepaidSettings(overdraft_limit=Decimal(50), alarm_1=Decimal(0), alarm_2=Decimal(0))
    the_meter = meter(money=Decimal("-12.34"), settings=settings)
    bus = Dlt645Bus([the_meter])
    remaining = d.parse_read_reply(reply(ask(bus, d.read_request("000000000001", 0x00900200))))
    overdraft = d.parse_read_reply(reply(ask(bus, d.read_request("000000000001", 0x00900201))))
    assert remaining.value() == Decimal("0.00") and overdraft.value() == Decimal("12.34")


def test_phase_b_of_a_single_phase_meter_and_a_missing_settlement_are_no_such_data() -> None:
    bus = Dlt645Bus([meter()])
    for di in (0x02010200, 0x00000001):
        refused = reply(ask(bus, d.read_request("000000000001", di)))
        assert d.error_status(refused) == d.ErrorStatus.NO_SUCH_DATA


def test_every_table_identifier_answers_with_a_value_of_its_format() -> None:
    three_phase = meter(phases=3)
    bus = Dlt645Bus([three_phase])
    three_phase.advance(NOW + timedelta(days=40))  # 1 December frozen
    for di in d.DATA_ITEMS:
        frame = reply(ask(bus, d.read_request("000000000001", di), NOW + timedelta(days=40)))
        if frame.is_error:
            assert d.error_status(frame) == d.ErrorStatus.NO_SUCH_DATA, f"{di:08X}"
            assert di & 0xFF > 1, f"{di:08X} should be there"  # only older settlements missing
        else:
            d.parse_read_reply(frame).value()


# --- CJ/T 188 -------------------------------------------------------------------------------


def water(**changes: object) -> WaterMeter:
    values: dict[str, object] = {"address": 1, "zone": SHANGHAI, "volume_m3": Decimal("12.34")}
    values.update(changes)
    return WaterMeter(WaterSpec(**values), now=NOW)  # type: ignore[arg-type]


def ask_water(bus: Cjt188Bus, frame: cj.Cjt188Frame, now: datetime = NOW) -> cj.Cjt188Frame | None:
    answer = bus.respond(frame, now)
    if answer is None:
        return None
    frames = cj.Cjt188Decoder().feed(answer.wire)
    assert len(frames) == 1
    return frames[0]


def test_901f_read_gives_volume_clock_and_valve() -> None:
    got = ask_water(Cjt188Bus([water()]), cj.read_meter_request("00000000000001", seq=5))
    assert got is not None
    reading = cj.parse_read_meter_reply(got, zone=SHANGHAI)
    assert reading.volume_m3 == Decimal("12.34") and reading.clock == NOW
    assert reading.status.valve is cj.ValveState.OPEN and got.data[2] == 5


def test_a_request_in_the_other_di_order_is_an_unknown_di_to_the_meter() -> None:
    request = cj.read_meter_request("00000000000001", di_order=cj.DiOrder.LOW_FIRST)
    got = ask_water(Cjt188Bus([water()]), request)
    assert got is not None and got.is_error
    low_first = water(di_order=cj.DiOrder.LOW_FIRST)
    got = ask_water(Cjt188Bus([low_first]), request)
    assert got is not None and not got.is_error


def test_valve_close_is_acknowledged_at_once_and_shows_after_the_delay() -> None:
    bus = Cjt188Bus([water()])
    ack = ask_water(bus, cj.valve_control_request("00000000000001", cj.ValveCommand.CLOSE))
    assert ack is not None
    status = cj.parse_valve_control_reply(ack)
    assert status is not None and status.valve is cj.ValveState.OPEN

    def valve(at: datetime) -> cj.ValveState:
        got = ask_water(bus, cj.read_meter_request("00000000000001"), at)
        assert got is not None
        return cj.parse_read_meter_reply(got, zone=SHANGHAI).status.valve

    assert valve(NOW + timedelta(seconds=7)) is cj.ValveState.OPEN
    assert valve(NOW + timedelta(seconds=8)) is cj.ValveState.CLOSED


def test_another_meter_type_or_address_gets_silence() -> None:
    bus = Cjt188Bus([water()])
    hot = cj.read_meter_request("00000000000001", meter_type=cj.MeterType.HOT_WATER)
    assert ask_water(bus, hot) is None
    assert ask_water(bus, cj.read_meter_request("00000000000002")) is None


# --- Modbus ---------------------------------------------------------------------------------


def modbus(the_meter: ElectricityMeter) -> tuple[ModbusMeter, list[int]]:
    return ModbusMeter(the_meter, load_map("reference_prepaid"), lambda: NOW), [0] * 0x57


def test_modbus_registers_follow_the_meter() -> None:
    device, registers = modbus(meter())
    assert asyncio.run(device.action(3, 0, 0, 10, registers, None)) is None
    assert (registers[0] << 16 | registers[1]) == 123456
    assert registers[0x23] == 0 and registers[0x50] == 26


def test_modbus_recharge_needs_the_next_purchase_count_and_all_three_registers() -> None:
    the_meter = meter(money=Decimal("10.00"))
    device, registers = modbus(the_meter)
    assert asyncio.run(device.action(16, 0, 0x40, 3, registers, [0, 500, 1])) is None
    assert the_meter.engine.money == Decimal("15.00") and the_meter.engine.purchase_count == 1
    replay = asyncio.run(device.action(16, 0, 0x40, 3, registers, [0, 500, 1]))
    assert replay == 3
    assert asyncio.run(device.action(16, 0, 0x40, 2, registers, [0, 500])) == 3
    assert the_meter.engine.money == Decimal("15.00")


def test_modbus_relay_command_and_a_bad_code() -> None:
    the_meter = meter()
    device, registers = modbus(the_meter)
    assert asyncio.run(device.action(6, 0, 0x24, 1, registers, [0x1A])) is None
    assert the_meter.engine.relay_open and registers[0x23] == 1 and registers[0x25] & 0x10
    assert asyncio.run(device.action(6, 0, 0x24, 1, registers, [0x77])) == 3


def test_modbus_clock_write_sets_the_meter_clock() -> None:
    the_meter = meter()
    device, registers = modbus(the_meter)
    assert asyncio.run(device.action(16, 0, 0x53, 3, registers, [10, 30, 0])) is None
    assert the_meter.clock.read(NOW) == NOW.replace(hour=10, minute=30)
