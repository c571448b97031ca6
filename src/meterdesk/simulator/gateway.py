"""A virtual MQTT gateway (communication manager) for simulated meters (``PROTOCOLS.md`` §4).

Every ``interval_s`` of simulated time (aligned to the interval, e.g. :00 :15 :30 :45) the
gateway reads its meters, waits its staggered delay (fixed per gateway from the seed: within
10 s for intervals up to 5 minutes, within a minute for longer ones) and publishes one
``REALTIME`` report with QoS 1 on ``data/up/{product_key}/{sn}``. It subscribes to
``data/down/{product_key}/{sn}``: ``report_reply`` acknowledges a report (the
:class:`~meterdesk.simulator.gateway_outbox.Outbox` resends the unacknowledged), ``control``
is applied to the addressed meter (deadline checked against simulated time) and answered with
``control_reply`` on the up topic.

``on_publish`` (optional) sees every report just before it is published (first sends and
resends): benchmarks use it to time when a reading left the gateway.

The uplink fault (:meth:`VirtualGateway.set_uplink`) disconnects from the broker; readings are
buffered and on reconnect resent as ``HISTORY`` (a lost broker connection does the same).
Meter addresses: electricity meters by their 12-digit DL/T 645 address, water meters by their
14-digit CJ/T 188 address; an offline meter is reported as ``OFFLINE`` without values.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import aiomqtt

from meterdesk.devices.uplink import (
    Control,
    ControlReply,
    MeterReport,
    Report,
    UplinkRejected,
    down_topic,
    parse_control,
    parse_report_reply,
    to_payload,
    up_topic,
)
from meterdesk.shared.tasks import cancel_and_wait, until_first_ends
from meterdesk.shared.time import Clock
from meterdesk.simulator.cjt188_server import cjt188_address
from meterdesk.simulator.dlt645_server import dlt645_address
from meterdesk.simulator.gateway_outbox import Outbox
from meterdesk.simulator.meter import ElectricityMeter, WaterMeter
from meterdesk.simulator.prepaid import CommandRefused, RelayCommand

log = logging.getLogger(__name__)
SimulatedMeter = ElectricityMeter | WaterMeter
RELAY_COMMANDS = {
    "trip": RelayCommand.TRIP,
    "close_allowed": RelayCommand.CLOSE_ALLOWED,
    "close": RelayCommand.CLOSE,
    "alarm_on": RelayCommand.ALARM_ON,
    "alarm_off": RelayCommand.ALARM_OFF,
    "protect_on": RelayCommand.PROTECT_ON,
    "protect_off": RelayCommand.PROTECT_OFF,
}


@dataclass(frozen=True)
class GatewaySpec:
    sn: str
    product_key: str = "meterdesk"
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    interval_s: float = 300.0  # simulated seconds between reads
    resend_after_s: float = 30.0  # real seconds before an unacknowledged report is resent
    reconnect_s: float = 2.0  # real seconds between connection attempts
    seed: int = 0

    @property
    def stagger_s(self) -> float:
        window = 10.0 if self.interval_s <= 300 else 60.0
        rng = random.Random(f"{self.seed}:{self.sn}:stagger")  # noqa: S311 - load spreading
        return rng.uniform(0.0, min(window, self.interval_s / 2))


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def meter_addr(meter: SimulatedMeter) -> str:
    if isinstance(meter, WaterMeter):
        return cjt188_address(meter.address)
    return dlt645_address(meter.address)


def meter_report(meter: SimulatedMeter, now: datetime) -> MeterReport:
    """What the gateway read from ``meter`` at ``now`` (OFFLINE when it did not answer)."""
    addr, at = meter_addr(meter), epoch_ms(now)
    if meter.faults.offline:
        return MeterReport(addr=addr, time=at, state="OFFLINE")
    if isinstance(meter, WaterMeter):
        valve = meter.valve_position(now).value
        return MeterReport.model_validate(
            {
                "addr": addr,
                "time": at,
                "state": "ONLINE",
                "volume_m3": meter.volume_m3,
                "valve": valve,
            }
        )
    meter.advance(now)
    total, sharp, peak, flat, valley = meter.energy_registers()
    values = meter.instantaneous(now)
    return MeterReport(
        addr=addr,
        time=at,
        state="ONLINE",
        energy_kwh=total,
        energy_sharp_kwh=sharp,
        energy_peak_kwh=peak,
        energy_flat_kwh=flat,
        energy_valley_kwh=valley,
        voltage_v=values.voltage_v[0],
        current_a=values.current_a[0],
        power_kw=values.total_active_kw,
        pf=values.power_factor,
        frequency_hz=values.frequency_hz,
        remaining_money=meter.engine.displayed_money,
        relay="open" if meter.engine.relay_open else "closed",
    )


def apply_control(meter: SimulatedMeter | None, control: Control, now: datetime) -> ControlReply:
    """Apply ``control`` to ``meter`` and say how it went."""

    def answer(ok: bool, detail: str | None = None) -> ControlReply:
        return ControlReply(
            msgid=control.msgid, addr=control.addr, res=1 if ok else 0, detail=detail
        )

    if meter is None:
        return answer(False, "no such meter on this gateway")
    if control.deadline < epoch_ms(now):
        return answer(False, "deadline passed")
    if isinstance(meter, WaterMeter):
        if control.command not in ("valve_open", "valve_close"):
            return answer(False, f"{control.command} is not a water meter command")
        meter.command_valve(control.command == "valve_open", now)
        return answer(True)
    if control.command not in RELAY_COMMANDS:
        return answer(False, f"{control.command} is not an electricity meter command")
    try:
        meter.advance(now)
        meter.engine.command(RELAY_COMMANDS[control.command])
    except CommandRefused as refused:
        return answer(False, str(refused))
    return answer(True)


class VirtualGateway:
    """One gateway and its meters on an MQTT broker; ``await run()`` until cancelled."""

    def __init__(
        self,
        spec: GatewaySpec,
        meters: Sequence[SimulatedMeter],
        *,
        clock: Clock,
        speed: float = 1.0,
        run_id: str | None = None,
    ) -> None:
        self.spec, self.clock, self.speed = spec, clock, speed
        self.meters = {meter_addr(meter): meter for meter in meters}
        run = run_id or format(int(time.time() * 1000), "x")
        self.outbox = Outbox(spec.sn, run, resend_after_s=spec.resend_after_s)
        self.up_topic = up_topic(spec.product_key, spec.sn)
        self.down_topic = down_topic(spec.product_key, spec.sn)
        self._uplink_wanted = asyncio.Event()
        self._uplink_wanted.set()
        self._uplink_cut = asyncio.Event()
        self._wake = asyncio.Event()
        self._connected = False
        self.connected = asyncio.Event()  # set while a broker session is up
        self.on_publish: Callable[[Report], None] | None = None

    def set_uplink(self, up: bool) -> None:
        """Fault injection: ``False`` cuts the uplink (readings are buffered), ``True`` heals."""
        if up:
            self._uplink_cut.clear()
            self._uplink_wanted.set()
        else:
            self._uplink_wanted.clear()
            self._uplink_cut.set()

    async def run(self) -> None:
        reader = asyncio.create_task(self._read_loop())
        try:
            await self._uplink_loop()
        finally:
            await cancel_and_wait([reader])

    def read_meters(self) -> None:
        """Read every meter now; publish when connected, else keep for the history resend."""
        now = self.clock()
        self._deliver([meter_report(meter, now) for meter in self.meters.values()], now)

    def _deliver(self, entries: list[MeterReport], now: datetime) -> None:
        if not entries:
            return
        if self._connected:
            self.outbox.realtime(entries, epoch_ms(now))
            self._wake.set()
        else:
            self.outbox.buffer(entries)

    async def _read_loop(self) -> None:
        interval = self.spec.interval_s
        while True:
            now_s = self.clock().timestamp()
            boundary = math.floor(now_s / interval + 1) * interval
            await asyncio.sleep((boundary - now_s) / self.speed)
            now = self.clock()
            entries = [meter_report(meter, now) for meter in self.meters.values()]
            await asyncio.sleep(self.spec.stagger_s / self.speed)
            self._deliver(entries, now)

    async def _uplink_loop(self) -> None:
        spec = self.spec
        while True:
            await self._uplink_wanted.wait()
            try:
                # A broker drops the older of two clients with one id: the product key keeps
                # two simulators (two benches, two test runs) on one broker apart.
                identifier = f"meterdesk-sim-{spec.product_key}-{spec.sn}"
                async with aiomqtt.Client(
                    spec.broker_host, spec.broker_port, identifier=identifier
                ) as client:
                    await client.subscribe(self.down_topic, qos=1)
                    await self._session(client)
            except aiomqtt.MqttError as error:
                log.warning("gateway %s: uplink lost (%s); buffering", spec.sn, error)
            finally:
                self._connected = False
                self.connected.clear()
            await asyncio.sleep(spec.reconnect_s)

    async def _session(self, client: aiomqtt.Client) -> None:
        self.outbox.reconnected(epoch_ms(self.clock()))
        self._connected = True
        self.connected.set()
        tasks = [
            asyncio.create_task(self._send_loop(client)),
            asyncio.create_task(self._receive_loop(client)),
            asyncio.create_task(self._uplink_cut.wait()),
        ]
        await until_first_ends(tasks)

    async def _send_loop(self, client: aiomqtt.Client) -> None:
        while True:
            for report in self.outbox.due(time.monotonic()):
                self._announce(report)
                await client.publish(self.up_topic, to_payload(report), qos=1)
            self._wake.clear()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wake.wait()

    def _announce(self, report: Report) -> None:
        if self.on_publish is None:
            return
        try:
            self.on_publish(report)
        except Exception:  # an observer's bug must not stop the uplink
            log.exception("gateway %s: on_publish failed", self.spec.sn)

    async def _receive_loop(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, bytes | bytearray):
                reply = self.handle_down(bytes(payload))
                if reply is not None:
                    await client.publish(self.up_topic, to_payload(reply), qos=1)

    def handle_down(self, payload: bytes) -> ControlReply | None:
        """A message from the platform: acknowledge a report or apply a control."""
        try:
            method = json.loads(payload).get("method")
            if method == "report_reply":
                reply = parse_report_reply(payload)
                self.outbox.acknowledge(reply.msgid, reply.res == 1)
                self._wake.set()
            elif method == "control":
                control = parse_control(payload)
                return apply_control(self.meters.get(control.addr), control, self.clock())
        except (UplinkRejected, ValueError, AttributeError) as error:
            log.warning("gateway %s: ignored a down message: %s", self.spec.sn, error)
        return None
