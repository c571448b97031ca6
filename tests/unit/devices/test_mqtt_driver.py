"""Commands to meters behind an MQTT-JSON gateway: control down, control_reply back, without a
broker (a fake publish plays the gateway)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import aiomqtt
import pytest

from meterdesk.devices.mqtt_driver import ControlChannel, MqttGatewayDriver
from meterdesk.devices.ports import (
    DeviceError,
    DeviceRefusedError,
    DeviceTimeoutError,
    MeterAddress,
    RelayAction,
    Snapshot,
    ValveAction,
)
from meterdesk.devices.uplink import ControlReply, parse_control

NOW = datetime(2026, 11, 2, tzinfo=UTC)
METER = MeterAddress(7, "mqtt_json", "000000000001", {"product_key": "pk", "gateway_sn": "GW1"})


class FakeGateway:
    """Answers every control it is sent with ``res`` (or stays silent)."""

    def __init__(self, res: int | None = 1, detail: str | None = None) -> None:
        self.res, self.detail = res, detail
        self.sent: list[tuple[str, dict[str, object]]] = []
        self.channel = ControlChannel(self.publish, timeout_s=0.2)

    async def publish(self, topic: str, payload: bytes) -> None:
        control = parse_control(payload)
        self.sent.append((topic, json.loads(payload)))
        if self.res is not None:
            reply = ControlReply(
                msgid=control.msgid, addr=control.addr, res=self.res, detail=self.detail
            )
            asyncio.get_running_loop().call_soon(self.channel.on_control_reply, "GW1", reply)


async def no_snapshot(meter: MeterAddress) -> Snapshot | None:
    return None


def driver(gateway: FakeGateway) -> MqttGatewayDriver:
    return MqttGatewayDriver(gateway.channel, no_snapshot, clock=lambda: NOW)


def test_a_trip_goes_down_as_control_with_its_deadline_and_returns_on_res_1() -> None:
    gateway = FakeGateway()
    asyncio.run(driver(gateway).relay(METER, RelayAction.TRIP, NOW + timedelta(minutes=2)))
    topic, sent = gateway.sent[0]
    assert topic == "data/down/pk/GW1"
    assert (sent["method"], sent["addr"], sent["command"]) == ("control", "000000000001", "trip")
    assert sent["deadline"] == int((NOW + timedelta(minutes=2)).timestamp() * 1000)


def test_a_valve_command_gets_the_default_validity_window() -> None:
    gateway = FakeGateway()
    asyncio.run(driver(gateway).valve(METER, ValveAction.CLOSE))
    _, sent = gateway.sent[0]
    assert sent["command"] == "valve_close"
    assert sent["deadline"] == int((NOW + timedelta(minutes=5)).timestamp() * 1000)


def test_res_0_is_a_refusal_with_the_gateways_detail() -> None:
    gateway = FakeGateway(res=0, detail="meter offline")
    with pytest.raises(DeviceRefusedError, match="meter offline"):
        asyncio.run(driver(gateway).relay(METER, RelayAction.CLOSE, NOW))


def test_no_reply_in_time_is_a_timeout_and_a_late_reply_is_ignored() -> None:
    gateway = FakeGateway(res=None)
    with pytest.raises(DeviceTimeoutError, match="did not answer trip"):
        asyncio.run(driver(gateway).relay(METER, RelayAction.TRIP, NOW))
    msgid = str(gateway.sent[0][1]["msgid"])
    gateway.channel.on_control_reply("GW1", ControlReply(msgid=msgid, addr="1", res=1))


def test_broker_errors_do_not_leak_and_unsupported_operations_are_refused() -> None:
    async def broken(topic: str, payload: bytes) -> None:
        raise aiomqtt.MqttError("not connected")

    offline = MqttGatewayDriver(ControlChannel(broken), no_snapshot)
    with pytest.raises(DeviceError, match="not connected"):
        asyncio.run(offline.relay(METER, RelayAction.TRIP, NOW))
    with pytest.raises(DeviceRefusedError, match="not part of the MQTT-JSON"):
        asyncio.run(offline.sync_clock(METER, NOW))
    with pytest.raises(DeviceError, match="has not reported"):
        asyncio.run(offline.read(METER))
    bare = MeterAddress(7, "mqtt_json", "000000000001")
    with pytest.raises(DeviceError, match="product_key and gateway_sn"):
        asyncio.run(offline.relay(bare, RelayAction.TRIP, NOW))
