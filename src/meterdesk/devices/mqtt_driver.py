"""A :class:`~meterdesk.devices.ports.MeterDriver` for meters reachable only through an MQTT-JSON
gateway (``docs/PROTOCOLS.md`` §4): commands go down as ``control`` and the gateway answers with
``control_reply`` on its up topic.

- :class:`ControlChannel` sends a ``control`` with a fresh msgid and waits for the reply with that
  msgid. Wire its :meth:`~ControlChannel.on_control_reply` into
  :class:`~meterdesk.devices.mqtt_ingest.MqttIngestService` (``on_control_reply=``) and its
  ``publish`` to the service's :meth:`~meterdesk.devices.mqtt_ingest.MqttIngestService.publish`,
  so commands share the ingest connection.
- :class:`MqttGatewayDriver` maps relay and valve actions to the contract's commands; ``res: 0``
  raises :class:`DeviceRefusedError` with the gateway's detail, no reply in time
  :class:`DeviceTimeoutError`. The gateway's ``product_key`` and ``gateway_sn`` come from
  :attr:`MeterAddress.options`.
- Such meters cannot be read on demand; :meth:`MqttGatewayDriver.read` returns what their latest
  report left in ``device_status`` (see :func:`device_status_snapshot`), which is what the
  command executor's read-back sees. Prices, limits, recharges and clock sync are not in the
  contract and are refused.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NoReturn

import aiomqtt
from sqlalchemy import select

from meterdesk.db.database import Database
from meterdesk.devices.ports import (
    DeviceError,
    DeviceRefusedError,
    DeviceTimeoutError,
    MeterAddress,
    RelayAction,
    Snapshot,
    ValveAction,
)
from meterdesk.devices.tables import device_status
from meterdesk.devices.uplink import (
    Control,
    ControlCommand,
    ControlReply,
    UplinkRejected,
    down_topic,
    to_payload,
)
from meterdesk.shared.time import Clock, system_clock

Publish = Callable[[str, bytes], Awaitable[None]]
SnapshotOf = Callable[[MeterAddress], Awaitable[Snapshot | None]]
RELAY_COMMANDS: Mapping[RelayAction, ControlCommand] = {
    RelayAction.TRIP: "trip",
    RelayAction.CLOSE_ALLOWED: "close_allowed",
    RelayAction.CLOSE: "close",
    RelayAction.PROTECT_ON: "protect_on",
    RelayAction.PROTECT_OFF: "protect_off",
    RelayAction.ALARM_ON: "alarm_on",
    RelayAction.ALARM_OFF: "alarm_off",
}
VALVE_COMMANDS: Mapping[ValveAction, ControlCommand] = {
    ValveAction.OPEN: "valve_open",
    ValveAction.CLOSE: "valve_close",
}


class ControlChannel:
    """Outstanding ``control`` messages by msgid, resolved by their ``control_reply``."""

    def __init__(self, publish: Publish, *, timeout_s: float = 30.0) -> None:
        self.publish, self.timeout_s = publish, timeout_s
        self._waiting: dict[str, asyncio.Future[ControlReply]] = {}

    def on_control_reply(self, sn: str, reply: ControlReply) -> None:
        waiting = self._waiting.get(reply.msgid)
        if waiting is not None and not waiting.done():
            waiting.set_result(reply)  # a late or unknown reply is ignored

    async def control(
        self, *, product_key: str, sn: str, addr: str, command: ControlCommand, deadline: datetime
    ) -> ControlReply:
        message = Control(
            msgid=f"ctl-{uuid.uuid4().hex[:20]}",
            addr=addr,
            command=command,
            deadline=int(deadline.timestamp() * 1000),
        )
        answer: asyncio.Future[ControlReply] = asyncio.get_running_loop().create_future()
        self._waiting[message.msgid] = answer
        try:
            await self.publish(down_topic(product_key, sn), to_payload(message))
            return await asyncio.wait_for(answer, self.timeout_s)
        except TimeoutError:
            raise DeviceTimeoutError(
                f"gateway {sn} did not answer {command} for {addr} within {self.timeout_s:g} s"
            ) from None
        except UplinkRejected as error:
            raise DeviceError(error.reason) from None
        except aiomqtt.MqttError as error:
            raise DeviceError(f"gateway {sn}: MQTT: {error}") from None
        finally:
            self._waiting.pop(message.msgid, None)


class MqttGatewayDriver:
    """Relay and valve commands through the meter's gateway; read-back from its reports."""

    def __init__(
        self,
        channel: ControlChannel,
        snapshot_of: SnapshotOf,
        *,
        clock: Clock = system_clock,
        validity: timedelta = timedelta(minutes=5),  # for valve commands, which carry none
    ) -> None:
        self.channel, self.snapshot_of = channel, snapshot_of
        self.clock, self.validity = clock, validity

    async def read(self, meter: MeterAddress) -> Snapshot:
        found = await self.snapshot_of(meter)
        if found is None:
            raise DeviceError(f"meter {meter.address} has not reported through its gateway yet")
        return found

    async def relay(self, meter: MeterAddress, action: RelayAction, deadline: datetime) -> None:
        await self._command(meter, RELAY_COMMANDS[action], deadline)

    async def valve(self, meter: MeterAddress, action: ValveAction) -> None:
        await self._command(meter, VALVE_COMMANDS[action], None)

    async def write_prices(self, meter: MeterAddress, prices: Mapping[str, Decimal]) -> None:
        _not_in_contract("writing prices")

    async def write_limits(self, meter: MeterAddress, limits: Mapping[str, Decimal]) -> None:
        _not_in_contract("writing limits")

    async def recharge(self, meter: MeterAddress, amount: Decimal, purchase_count: int) -> None:
        _not_in_contract("a recharge")

    async def take_back(self, meter: MeterAddress, amount: Decimal, take_back_count: int) -> None:
        _not_in_contract("a take-back")

    async def take_back_count(self, meter: MeterAddress) -> int:
        _not_in_contract("a take-back")

    async def sync_clock(self, meter: MeterAddress, now: datetime) -> None:
        _not_in_contract("a clock sync")

    async def _command(
        self, meter: MeterAddress, command: ControlCommand, deadline: datetime | None
    ) -> None:
        product_key, sn = meter.options.get("product_key"), meter.options.get("gateway_sn")
        if not product_key or not sn:
            raise DeviceError(f"meter {meter.address}: options need product_key and gateway_sn")
        when = deadline or self.clock() + self.validity
        answer = await self.channel.control(
            product_key=product_key, sn=sn, addr=meter.address, command=command, deadline=when
        )
        if answer.res != 1:
            raise DeviceRefusedError(
                f"gateway {sn} refused {command} for {meter.address}: {answer.detail or 'no detail'}"
            )


def _not_in_contract(what: str) -> NoReturn:
    raise DeviceRefusedError(f"{what} is not part of the MQTT-JSON gateway contract")


def device_status_snapshot(db: Database, meter_id: int) -> Snapshot | None:
    """What the meter's latest report left in ``device_status`` (relay, valve, money); None
    before the first report. Blocking: call it through ``asyncio.to_thread``."""
    with db.read() as conn:
        row = conn.execute(
            select(
                device_status.c.last_seen_at,
                device_status.c.relay,
                device_status.c.valve,
                device_status.c.remaining_money,
            ).where(device_status.c.meter_id == meter_id)
        ).one_or_none()
    if row is None or row.last_seen_at is None:
        return None
    return Snapshot(
        meter_id=meter_id,
        measured_at=row.last_seen_at,
        relay=row.relay,
        valve=row.valve,
        remaining_money=row.remaining_money,
    )
