"""The simulated side of ``meterdesk bench control``, in a process of its own: prepaid DL/T 645
meters on loopback lines (10 per line, as on an RS485 bus behind a DTU), each line's meters
reported every second over MQTT by a virtual gateway, and the two clocks the bench needs:

- when each reading left its gateway (``VirtualGateway.on_publish``, just before the publish);
- when each relay command frame reached the meter's line (``BusServer.observer``, the moment the
  frame is decoded off the socket, before it waits for the line).

Times are ``time.monotonic()`` (one clock for every process on Linux) and ``time.time()`` (to
compare with the database's instants). The meters only measure and switch (platform billing):
every trip is the platform's. Their loads are off until the parent says ``load_on``, so the
poller's first read of each line (at start) and the opening readings agree.

The parent talks to :func:`serve` over a pipe: it receives ``{"ports": …}`` once the lines
listen, sends ``"load_on"``, then ``"stop"``, and receives the :class:`Records`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from decimal import Decimal
from multiprocessing.connection import Connection
from typing import Any

from meterdesk.devices.codecs.dlt645 import Dlt645Frame, Function
from meterdesk.devices.uplink import Report
from meterdesk.simulator.config import parse_config
from meterdesk.simulator.gateway import VirtualGateway
from meterdesk.simulator.meter import ElectricityMeter
from meterdesk.simulator.runtime import Simulation

log = logging.getLogger(__name__)
METERS_PER_LINE = 10  # also the readings per MQTT report, as in the P2 load
ZONE = "Asia/Shanghai"
TRIP, CLOSE = 0x1A, 0x1C  # DL/T 645 1C actions (N1)
Instant = tuple[float, float]  # (monotonic s, epoch s)


@dataclass(frozen=True)
class SimJob:
    meters: int
    first_address: int  # DL/T 645 address of the first meter; the others follow
    rated_kw: Decimal  # primary load of every meter once the loads are on
    energy_kwh: Decimal  # every meter's register at the start
    broker: tuple[str, int]
    product_key: str
    seed: int

    @property
    def lines(self) -> int:
        return -(-self.meters // METERS_PER_LINE)

    def line_name(self, line: int) -> str:
        return f"C{line:03d}"

    def gateway_sn(self, line: int) -> str:
        return f"GWC{line:03d}"

    def address(self, k: int) -> str:
        return f"{self.first_address + k:012d}"


@dataclass
class Records:
    """What the simulated side saw; keys are DL/T 645 addresses."""

    published: dict[tuple[str, int], Instant] = field(default_factory=dict)  # (addr, ms) → first
    frames: list[tuple[str, int, float, float]] = field(default_factory=list)  # addr, action, t
    relay_open: dict[str, bool] = field(default_factory=dict)  # at the end
    registers: dict[str, Decimal] = field(default_factory=dict)  # at the end
    load_on: Instant = (0.0, 0.0)

    def observe_frame(self, frame: Dlt645Frame) -> None:
        if frame.function == Function.RELAY_CONTROL and not frame.is_reply and len(frame.data) > 8:
            self.frames.append((frame.address, frame.data[8], time.monotonic(), time.time()))

    def observe_report(self, report: Report) -> None:
        if report.reported.source != "REALTIME":
            return
        now = (time.monotonic(), time.time())
        for entry in report.reported.meters:
            self.published.setdefault((entry.addr, entry.time), now)


def config(job: SimJob) -> dict[str, Any]:
    """The simulator configuration: one DL/T 645 line and one gateway per 10 meters."""
    lines = range(job.lines)
    host, port = job.broker
    return {
        "simulator": {"seed": job.seed, "zone": ZONE, "speed": 1},
        "bus": [
            {"name": job.line_name(n), "protocol": "dlt645", "listen": "127.0.0.1:0"} for n in lines
        ],
        "gateway": [
            {
                "sn": job.gateway_sn(n),
                "product_key": job.product_key,
                "broker": f"{host}:{port}",
                "interval_s": 1,
                "resend_after_s": 20,
            }
            for n in lines
        ],
        "meters": [
            {
                "first_address": job.first_address + n * METERS_PER_LINE,
                "count": min(METERS_PER_LINE, job.meters - n * METERS_PER_LINE),
                "bus": job.line_name(n),
                "gateway": job.gateway_sn(n),
                "profile": "constant",
                "rated_kw": str(job.rated_kw),
                "energy_kwh": str(job.energy_kwh),
                "billing": "platform",
            }
            for n in lines
        ],
    }


def serve(job: SimJob, pipe: Connection) -> None:
    """The child process: run the simulation until the parent says ``stop``."""
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve(job, pipe))


async def _serve(job: SimJob, pipe: Connection) -> None:
    simulation = Simulation(parse_config(config(job)))
    records = Records()
    meters = _meters(simulation)
    for meter in meters:  # loads off until "load_on"
        meter.spec = replace(meter.spec, rated_kw=Decimal(0))
    for _, server in simulation.listening:
        server.observer = records.observe_frame  # type: ignore[attr-defined]
    for gateway in simulation.gateways.values():
        if isinstance(gateway, VirtualGateway):  # the bench's site has MQTT gateways only
            gateway.on_publish = records.observe_report
    await simulation.start()
    try:
        await asyncio.wait_for(_all_connected(simulation), 30)
        pipe.send({"ports": {bus.name: server.port for bus, server in simulation.listening}})
        await _commands(job, pipe, simulation, records)
    finally:
        await simulation.stop()
    now = simulation.clock()
    for meter in meters:
        meter.advance(now)
        address = f"{meter.address:012d}"
        records.relay_open[address] = meter.engine.relay_open
        records.registers[address] = meter.energy_registers()[0]
    pipe.send(records)


async def _all_connected(simulation: Simulation) -> None:
    for gateway in simulation.gateways.values():
        await gateway.connected.wait()


async def _commands(
    job: SimJob, pipe: Connection, simulation: Simulation, records: Records
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        message = await loop.run_in_executor(None, pipe.recv)
        if message == "load_on":
            now = simulation.clock()
            for meter in _meters(simulation):
                meter.advance(now)  # what was used so far was used with the load off
                meter.spec = replace(meter.spec, rated_kw=job.rated_kw)
            records.load_on = (time.monotonic(), time.time())
        elif message == "stop":
            return


def _meters(simulation: Simulation) -> list[ElectricityMeter]:
    found = [meter for line in simulation.by_bus.values() for meter in line]
    assert all(isinstance(meter, ElectricityMeter) for meter in found)
    return [meter for meter in found if isinstance(meter, ElectricityMeter)]
