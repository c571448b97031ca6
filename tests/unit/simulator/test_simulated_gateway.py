"""The virtual gateway without a broker: store-and-forward, history resend, controls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from meterdesk.devices.uplink import Control, MeterReport, parse_report
from meterdesk.simulator.gateway import GatewaySpec, apply_control, epoch_ms, meter_report
from meterdesk.simulator.gateway_outbox import Outbox
from meterdesk.simulator.meter import ElectricityMeter, ElectricitySpec, WaterMeter, WaterSpec
from meterdesk.simulator.prepaid import RelayCommand

NOW = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)


def entry(minute: int) -> MeterReport:
    return MeterReport(addr="000000000001", time=epoch_ms(NOW) + minute * 60_000, state="ONLINE")


def test_a_report_stays_pending_and_is_resent_with_the_same_msgid_until_acknowledged() -> None:
    outbox = Outbox("GW1", "r1", resend_after_s=30)
    report = outbox.realtime([entry(0)], epoch_ms(NOW))
    assert outbox.due(100.0) == [report]
    assert outbox.due(110.0) == []
    assert outbox.due(131.0) == [report]
    outbox.acknowledge(report.msgid, ok=True)
    assert outbox.due(500.0) == [] and outbox.pending_count == 0


def test_a_refused_report_is_resent_at_once() -> None:
    outbox = Outbox("GW1", "r1")
    report = outbox.realtime([entry(0)], epoch_ms(NOW))
    outbox.due(1.0)
    outbox.acknowledge(report.msgid, ok=False)
    assert outbox.due(2.0) == [report]


def test_after_an_outage_backlog_and_unacknowledged_reports_come_back_as_history() -> None:
    outbox = Outbox("GW1", "r1", history_chunk=2)
    unacknowledged = outbox.realtime([entry(0)], epoch_ms(NOW))
    outbox.due(1.0)
    outbox.buffer([entry(1)])
    outbox.buffer([entry(2)])
    history = outbox.reconnected(epoch_ms(NOW))
    assert [report.reported.source for report in history] == ["HISTORY", "HISTORY"]
    times = [meter.time for report in history for meter in report.reported.meters]
    assert times == [entry(minute).time for minute in (0, 1, 2)]  # overlaps what was sent
    assert unacknowledged.msgid not in {report.msgid for report in history}
    assert outbox.backlog_count == 0 and outbox.due(2.0) == history


def test_pending_reports_and_bursts_are_bounded() -> None:
    outbox = Outbox("GW1", "r1", max_pending=5)
    reports = [outbox.realtime([entry(k)], epoch_ms(NOW)) for k in range(8)]
    assert outbox.pending_count == 5 and not outbox.is_pending(reports[0].msgid)
    assert outbox.due(1.0, limit=3) == reports[3:6]
    assert outbox.due(1.0, limit=3) == reports[6:8]


def test_msgids_are_unique_and_name_the_gateway_and_the_run() -> None:
    outbox = Outbox("GW1", "abc")
    ids = {outbox.realtime([entry(0)], epoch_ms(NOW)).msgid for _ in range(100)}
    assert len(ids) == 100 and all(msgid.startswith("GW1-abc-") for msgid in ids)


def test_the_stagger_is_fixed_per_gateway_and_short_for_short_intervals() -> None:
    spec = GatewaySpec(sn="GW1", interval_s=60, seed=4)
    assert spec.stagger_s == GatewaySpec(sn="GW1", interval_s=60, seed=4).stagger_s
    assert 0 <= spec.stagger_s <= 10
    assert 0 <= GatewaySpec(sn="GW1", interval_s=3600).stagger_s <= 60


def test_meter_reports_follow_the_contract() -> None:
    electricity = ElectricityMeter(ElectricitySpec(address=1), now=NOW)
    water = WaterMeter(WaterSpec(address=1, volume_m3=Decimal("3.21")), now=NOW)
    outbox = Outbox("GW1", "r")
    report = outbox.realtime([meter_report(electricity, NOW), meter_report(water, NOW)], 1)
    parsed = parse_report(report.model_dump_json(exclude_none=True).encode())
    first, second = parsed.reported.meters
    assert first.addr == "000000000001" and first.relay == "closed" and first.energy_kwh == 0
    assert second.addr == "00000000000001" and second.volume_m3 == Decimal("3.21")
    electricity.faults.offline = True
    offline = meter_report(electricity, NOW)
    assert offline.state == "OFFLINE" and offline.energy_kwh is None


def control(command: str, deadline: datetime, addr: str = "000000000001") -> Control:
    return Control.model_validate(
        {"msgid": "c1", "addr": addr, "command": command, "deadline": epoch_ms(deadline)}
    )


def test_controls_are_applied_and_answered() -> None:
    meter = ElectricityMeter(ElectricitySpec(address=1), now=NOW)
    answer = apply_control(meter, control("trip", NOW + timedelta(minutes=1)), NOW)
    assert answer.res == 1 and meter.engine.relay_open
    late = apply_control(meter, control("close", NOW - timedelta(seconds=1)), NOW)
    assert late.res == 0 and meter.engine.relay_open and late.detail == "deadline passed"
    meter.engine.command(RelayCommand.PROTECT_ON)
    refused = apply_control(meter, control("trip", NOW + timedelta(minutes=1)), NOW)
    assert refused.res == 0 and refused.detail is not None and "protected" in refused.detail


def test_valve_controls_go_to_water_meters_only() -> None:
    water = WaterMeter(WaterSpec(address=1), now=NOW)
    addr = "00000000000001"
    later = NOW + timedelta(minutes=1)
    assert apply_control(water, control("valve_close", later, addr), NOW).res == 1
    assert water.valve.moving
    assert apply_control(water, control("trip", later, addr), NOW).res == 0
    assert apply_control(None, control("trip", later, addr), NOW).res == 0
