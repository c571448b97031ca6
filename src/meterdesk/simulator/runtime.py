"""A whole simulation from a :class:`~.config.SimulatorConfig`: meters, servers, gateways, faults.

``Simulation`` owns the clock and the meter objects; the same meter object is what its bus
server answers for and what its gateway reports, so a relay tripped over DL/T 645 shows as
``"relay": "open"`` in the next MQTT report. ``start()`` binds every listening bus and starts
the gateways and the fault schedule; ``stop()`` undoes it. Buses without ``listen`` are not
served (their meters may still be reported by a gateway).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Protocol as TypingProtocol

from meterdesk.shared.errors import ValidationError
from meterdesk.shared.tasks import cancel_and_wait
from meterdesk.simulator.cjt188_server import cjt188_server
from meterdesk.simulator.clock import AcceleratedClock, SimulationClock
from meterdesk.simulator.config import (
    BusConfig,
    FaultConfig,
    FaultKind,
    Protocol,
    SimulatorConfig,
    is_gateway_garbage,
)
from meterdesk.simulator.dlt645_server import dlt645_server
from meterdesk.simulator.faults import Target, apply_fault, revert_fault
from meterdesk.simulator.gateway import GatewaySpec, VirtualGateway
from meterdesk.simulator.hj212_gateway import Hj212Gateway, Hj212GatewaySpec
from meterdesk.simulator.meter import ElectricityMeter, ElectricitySpec, WaterMeter
from meterdesk.simulator.modbus_server import ModbusMeterServer

log = logging.getLogger(__name__)
SimulatedMeter = ElectricityMeter | WaterMeter


class Server(TypingProtocol):
    name: str
    host: str
    port: int

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class Simulation:
    def __init__(self, config: SimulatorConfig, *, clock: SimulationClock | None = None) -> None:
        self.config = config
        self.clock: SimulationClock = clock or AcceleratedClock(config.start, config.speed)
        self.started_at = self.clock()
        self.by_bus: dict[str, list[SimulatedMeter]] = {bus.name: [] for bus in config.buses}
        self.by_gateway: dict[str, list[SimulatedMeter]] = {g.sn: [] for g in config.gateways}
        for entry in config.meters:
            meter: SimulatedMeter = (
                ElectricityMeter(entry.spec, now=self.started_at)
                if isinstance(entry.spec, ElectricitySpec)
                else WaterMeter(entry.spec, now=self.started_at)
            )
            if entry.bus is not None:
                self.by_bus[entry.bus].append(meter)
            if entry.gateway is not None:
                self.by_gateway[entry.gateway].append(meter)
        self.listening = [(bus, self._server(bus)) for bus in config.buses if bus.host]
        self.servers: list[Server] = [server for _, server in self.listening]
        self.gateways = {spec.sn: self._gateway(spec) for spec in config.gateways}
        self._tasks: list[asyncio.Task[None]] = []

    def _gateway(self, spec: GatewaySpec | Hj212GatewaySpec) -> VirtualGateway | Hj212Gateway:
        meters, clock = self.by_gateway[spec.sn], self.clock
        if isinstance(spec, Hj212GatewaySpec):  # DataTime on the gateway's (the site's) clock
            zone = self.config.zone
            return Hj212Gateway(spec, meters, clock=clock, zone=zone, speed=clock.speed)
        return VirtualGateway(spec, meters, clock=clock, speed=clock.speed)

    def _server(self, bus: BusConfig) -> Server:
        assert bus.host is not None and bus.port is not None
        host, port, meters = bus.host, bus.port, self.by_bus[bus.name]
        seed, clock, name = self.config.seed, self.clock, bus.name
        electricity = [meter for meter in meters if isinstance(meter, ElectricityMeter)]
        if bus.protocol in (Protocol.MODBUS, Protocol.MODBUS_RTU):
            rtu = bus.protocol is Protocol.MODBUS_RTU
            return ModbusMeterServer(
                electricity, host=host, port=port, clock=clock, rtu=rtu, seed=seed, name=name
            )
        if bus.protocol is Protocol.DLT645:
            return dlt645_server(
                electricity, host=host, port=port, clock=clock, name=name, baud=bus.baud, seed=seed
            )
        water = [meter for meter in meters if isinstance(meter, WaterMeter)]
        return cjt188_server(
            water, host=host, port=port, clock=clock, name=name, baud=bus.baud, seed=seed
        )

    def meter(
        self, address: int, *, bus: str | None = None, gateway: str | None = None
    ) -> SimulatedMeter:
        """The meter at ``address`` on ``bus`` (or reported by ``gateway``)."""
        pool = (
            self.by_bus.get(bus, []) if bus is not None else self.by_gateway.get(gateway or "", [])
        )
        for meter in pool:
            if meter.address == address:
                return meter
        raise ValidationError(f"no meter {address} on {bus or gateway}")

    def _target(self, fault: FaultConfig) -> Target:
        if fault.kind is FaultKind.UPLINK_DOWN or is_gateway_garbage(fault):
            return self.gateways[fault.gateway or ""]
        assert fault.address is not None
        return self.meter(fault.address, bus=fault.bus, gateway=fault.gateway)

    async def start(self) -> None:
        for server in self.servers:
            await server.start()
        self._tasks = [asyncio.create_task(gateway.run()) for gateway in self.gateways.values()]
        if self.config.faults:
            self._tasks.append(asyncio.create_task(self._run_faults()))

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        for server in self.servers:
            await server.close()

    async def _run_faults(self) -> None:
        events: list[tuple[float, bool, int, FaultConfig]] = []
        for index, fault in enumerate(self.config.faults):
            events.append((fault.at_s, True, index, fault))
            if fault.duration_s is not None:
                events.append((fault.at_s + fault.duration_s, False, index, fault))
        for at_s, starting, _, fault in sorted(events, key=lambda event: (event[0], event[2])):
            when = self.started_at + timedelta(seconds=at_s)
            await asyncio.sleep(max((when - self.clock()).total_seconds(), 0.0) / self.clock.speed)
            self._fire(fault, starting, self.clock())

    def _fire(self, fault: FaultConfig, starting: bool, now: datetime) -> None:
        try:
            target = self._target(fault)
            (apply_fault if starting else revert_fault)(fault, target, now)
            log.warning("fault %s %s: %s", fault.kind, "starts" if starting else "ends", fault)
        except ValidationError as error:
            log.error("fault %s not applied: %s", fault.kind, error)

    def describe(self) -> list[str]:
        """One line per listening bus and gateway, for people."""
        lines = [
            f"{bus.protocol.value} bus {bus.name}: {len(self.by_bus[bus.name])} meters"
            f" on {server.host}:{server.port}"
            for bus, server in self.listening
        ]
        for sn, gateway in self.gateways.items():
            if isinstance(gateway, Hj212Gateway):
                hj = gateway.spec
                lines.append(
                    f"hj212 gateway MN {sn}: {len(gateway.meters)} meters → {hj.host}:{hj.port}"
                    f" CN={hj.cn} every {hj.interval_s:g} s (simulated)"
                )
                continue
            spec = gateway.spec
            lines.append(
                f"mqtt gateway {sn}: {len(gateway.meters)} meters → {spec.broker_host}:{spec.broker_port}"
                f" topic {gateway.up_topic} every {spec.interval_s:g} s (simulated)"
            )
        return lines
