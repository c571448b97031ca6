"""The virtual gateway against the real Mosquitto on 127.0.0.1:1883: reports with QoS 1,
acknowledgements and resends, controls, and the history resend after an uplink outage."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import pytest

from meterdesk.devices.uplink import (
    Report,
    parse_control_reply,
    parse_report,
    to_payload,
)
from meterdesk.simulator.config import parse_config
from meterdesk.simulator.gateway import VirtualGateway, epoch_ms
from meterdesk.simulator.meter import ElectricityMeter
from meterdesk.simulator.runtime import Simulation
from support.broker import BROKER, broker_unavailable

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _need_broker() -> None:
    reason = broker_unavailable()
    if reason:
        pytest.skip(reason)


def site(sn: str) -> dict[str, Any]:
    return {
        "simulator": {"seed": 2},
        "bus": [{"name": "dlt", "protocol": "dlt645"}, {"name": "w", "protocol": "cjt188"}],
        "gateway": [{"sn": sn, "interval_s": 1, "resend_after_s": 1, "broker": "127.0.0.1:1883"}],
        "meters": [
            {"first_address": 1, "count": 2, "bus": "dlt", "gateway": sn},
            {"first_address": 1, "kind": "water", "bus": "w", "gateway": sn},
        ],
    }


class Platform:
    """The platform's side of the topic pair, as a test sees it."""

    def __init__(self, client: aiomqtt.Client, sn: str) -> None:
        self.client, self.up, self.down = (
            client,
            f"data/up/meterdesk/{sn}",
            f"data/down/meterdesk/{sn}",
        )

    async def next(self, method: str, timeout_s: float = 8.0) -> Any:
        async with asyncio.timeout(timeout_s):
            async for message in self.client.messages:
                payload = message.payload
                assert isinstance(payload, bytes)
                if f'"method":"{method}"' in payload.decode():
                    return (
                        parse_report(payload)
                        if method == "report"
                        else parse_control_reply(payload)
                    )
        raise AssertionError("the message stream ended")

    async def report(self, source: str = "REALTIME") -> Report:
        while True:
            report = await self.next("report")
            assert isinstance(report, Report)
            if report.reported.source == source:
                return report

    async def acknowledge(self, report: Report) -> None:
        reply = {"msgid": report.msgid, "method": "report_reply", "res": 1}
        await self.client.publish(self.down, json.dumps(reply), qos=1)


@asynccontextmanager
async def gateway_and_platform() -> AsyncIterator[tuple[Simulation, VirtualGateway, Platform]]:
    sn = f"GW-{uuid.uuid4().hex[:8]}"
    simulation = Simulation(parse_config(site(sn)))
    async with aiomqtt.Client(*BROKER, identifier=f"platform-{sn}") as client:
        platform = Platform(client, sn)
        await client.subscribe(platform.up, qos=1)
        await simulation.start()
        gateway = simulation.gateways[sn]
        try:
            await asyncio.wait_for(gateway.connected.wait(), 5)
            yield simulation, gateway, platform
        finally:
            await simulation.stop()


def test_reports_arrive_with_every_meter_and_are_resent_until_acknowledged() -> None:
    async def scenario() -> None:
        async with gateway_and_platform() as (_, gateway, platform):
            first = await platform.report()
            addrs = {meter.addr for meter in first.reported.meters}
            assert addrs == {"000000000001", "000000000002", "00000000000001"}
            again = await platform.report()
            while again.msgid != first.msgid:  # newer reports may come first
                again = await platform.report()
            await platform.acknowledge(first)
            await asyncio.sleep(0.5)
            assert not gateway.outbox.is_pending(first.msgid)

    asyncio.run(scenario())


def test_on_publish_sees_each_report_before_it_is_published() -> None:
    async def scenario() -> None:
        async with gateway_and_platform() as (_, gateway, platform):
            announced: list[str] = []
            gateway.on_publish = lambda report: announced.append(report.msgid)
            report = await platform.report()
            while report.msgid not in announced:  # one published before the hook was set
                report = await platform.report()
            assert announced[0] == report.msgid

    asyncio.run(scenario())


def test_a_control_is_applied_answered_and_visible_in_the_next_report() -> None:
    async def scenario() -> None:
        async with gateway_and_platform() as (simulation, _, platform):
            deadline = epoch_ms(datetime.now(UTC) + timedelta(minutes=1))
            control: dict[str, object] = {"msgid": "ctl-1", "method": "control"}
            control |= {"addr": "000000000002", "command": "trip", "deadline": deadline}
            await platform.client.publish(platform.down, json.dumps(control), qos=1)
            reply = await platform.next("control_reply")
            assert reply.msgid == "ctl-1" and reply.res == 1
            meter = simulation.meter(2, bus="dlt")
            assert isinstance(meter, ElectricityMeter) and meter.engine.relay_open
            while True:
                report = await platform.report()
                entry = next(m for m in report.reported.meters if m.addr == "000000000002")
                if entry.time > deadline - 60_000 and entry.relay == "open":
                    break

    asyncio.run(scenario())


def test_readings_taken_during_an_uplink_outage_come_back_as_history() -> None:
    async def scenario() -> None:
        async with gateway_and_platform() as (_, gateway, platform):
            await platform.report()
            cut_at = epoch_ms(datetime.now(UTC))
            gateway.set_uplink(False)
            await asyncio.sleep(2.5)
            assert gateway.outbox.backlog_count >= 3
            gateway.set_uplink(True)
            history = await platform.report("HISTORY")
            times = [meter.time for meter in history.reported.meters]
            assert any(time >= cut_at for time in times)

    asyncio.run(scenario())


def test_payloads_are_the_documented_contract() -> None:
    async def scenario() -> None:
        async with gateway_and_platform() as (_, _, platform):
            report = await platform.report()
            assert parse_report(to_payload(report)) == report
            electricity = next(m for m in report.reported.meters if m.addr == "000000000001")
            assert electricity.energy_kwh is not None and electricity.remaining_money is not None

    asyncio.run(scenario())
