"""``meterdesk bench poll`` — target P6 (docs/PERFORMANCE.md): the real poller and Modbus driver
against simulated Modbus TCP meters on loopback.

Layout: ``lines`` TCP endpoints (one per simulated RS485 line) with ``meters`` units each, served
by a **separate process** so that the figure is the poller's own process. The poller polls every
line as fast as one-request-in-flight allows (``poll_interval_s`` = 0) for a fixed duration,
after a warm-up in which every line has connected and answered.

Meter servers (``--server``), all in the separate process:
- ``lean`` (default): a tiny asyncio Modbus TCP responder with the reference map's registers
  (exception 02 for the map's gaps, like the simulator). It leaves the machine's second core
  mostly to the poller, so the figure measures the poller; it also counts requests that arrived
  before the previous one on the same connection was answered — an independent check of
  one-in-flight on the meters' side.
- ``pymodbus``: a minimal pymodbus server with the same registers and fixed values;
- ``simulator``: meterdesk's simulator (the meter model refreshed before every register access).
  Realistic, but its process saturates one core near 1,000 reads/s, so with it the figure is
  the simulator's ceiling, not the poller's; the summary's ``meters_process_cpu_share`` shows
  which side was the limit.

Figures: reads/s (one read = one ``ModbusDriver.read``: energy, live values, money, relay and
status — five Modbus requests with the reference map, whose gaps cannot be bridged), Modbus
requests/s, the poller process's CPU time per read, and the most requests in flight per line
(pymodbus' PDU trace: sent minus answered, observed below our lock). ``--ingest`` adds the money
core: readings go through ``Ingestor.ingest`` into a temporary SQLite database with open
accounts. The last line printed is one JSON object. Medians of ``--runs`` runs are reported.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import platform
import resource
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

from meterdesk.billing.ingest import IncomingReading
from meterdesk.devices.codecs.modbus_map import load_map
from meterdesk.devices.drivers.registry import BusConfig
from meterdesk.devices.poller import BusPlan, DatabaseSink, Poller, PollerSettings
from meterdesk.devices.ports import MeterAddress
from meterdesk.devices.status import StatusChanges

SERVERS = ("simulator", "pymodbus", "lean")
TARGET_READS_PER_S = 2000
MAP_SIZE = 0x60


# --- the meters' side (runs in a child process) ------------------------------------------------


def reference_memory(unit: int) -> list[int | None]:
    """The reference map's readable registers with plausible values; ``None`` = not mapped."""
    values: dict[str, Decimal | int] = {
        "energy_kwh": Decimal(unit),
        "voltage_v": Decimal("220.1"),
        "current_a": Decimal("1.23"),
        "power_kw": Decimal("0.271"),
        "power_factor": Decimal("0.998"),
        "frequency_hz": Decimal("50.00"),
        "remaining_money_cny": Decimal("88.00"),
        "purchase_count": 1,
    }
    memory: list[int | None] = [None] * MAP_SIZE
    for register in load_map("reference_prepaid").registers:
        words = register.encode(values.get(register.name, 0)) if register.readable else [0]
        memory[register.address : register.address + len(words)] = words
    return memory


class LeanLine(asyncio.Protocol):
    """One simulated line: Modbus TCP (function 03 reads, 06/16 writes acknowledged)."""

    def __init__(self, units: dict[int, list[int | None]], counters: dict[str, int]) -> None:
        self.units, self.counters = units, counters
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer.extend(data)
        answered = 0
        while len(self.buffer) >= 8 and len(self.buffer) >= 6 + (
            size := (self.buffer[4] << 8) | self.buffer[5]
        ):
            request = bytes(self.buffer[: 6 + size])
            del self.buffer[: 6 + size]
            answered += 1
            reply = self.answer(request)
            if reply and self.transport is not None:
                self.transport.write(reply)
        self.counters["max_pipelined"] = max(self.counters["max_pipelined"], answered)

    def answer(self, request: bytes) -> bytes:
        unit, function = request[6], request[7]
        memory = self.units.get(unit)
        if memory is None:
            return b""  # nobody at this address on the line: silence
        if function in (0x06, 0x10):
            pdu = request[7:12]
        elif function == 0x03:
            address, count = struct.unpack(">HH", request[8:12])
            words = memory[address : address + count]
            if len(words) != count or None in words:
                pdu = bytes([0x83, 0x02])
            else:
                if address == 0:  # the energy register creeps up by 0.01 kWh per read
                    memory[1] = (memory[1] or 0) + 1
                pdu = bytes([0x03, 2 * count]) + struct.pack(f">{count}H", *words)
        else:
            pdu = bytes([function | 0x80, 0x01])
        return request[:4] + struct.pack(">HB", len(pdu) + 1, unit) + pdu


async def _lean_servers(
    lines: int, meters: int, counters: dict[str, int]
) -> tuple[list[int], list[Any]]:
    loop = asyncio.get_running_loop()
    ports, servers = [], []
    for _ in range(lines):
        units = {unit: reference_memory(unit) for unit in range(1, meters + 1)}
        server = await loop.create_server(lambda u=units: LeanLine(u, counters), "127.0.0.1", 0)  # type: ignore[misc]
        servers.append(server)
        ports.append(server.sockets[0].getsockname()[1])
    return ports, servers


async def _pymodbus_servers(lines: int, meters: int) -> tuple[list[int], list[Any]]:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    def device(unit: int) -> Any:
        memory = reference_memory(unit)
        blocks = [
            SimData(a, values=[w], datatype=DataType.REGISTERS)
            for a, w in enumerate(memory)
            if w is not None
        ]
        return SimDevice(id=unit, simdata=blocks)

    ports, servers = [], []
    for _ in range(lines):
        server = ModbusTcpServer(
            [device(u) for u in range(1, meters + 1)], address=("127.0.0.1", 0)
        )
        await server.serve_forever(background=True)
        servers.append(server)
        listener = cast(asyncio.Server, server.transport)
        ports.append(listener.sockets[0].getsockname()[1])
    return ports, servers


async def _simulator(lines: int, meters: int, seed: int) -> tuple[list[int], Any]:
    from meterdesk.simulator.config import parse_config
    from meterdesk.simulator.runtime import Simulation

    document = {
        "simulator": {"seed": seed, "zone": "Asia/Shanghai"},
        "bus": [
            {"name": f"L{n}", "protocol": "modbus", "listen": "127.0.0.1:0"} for n in range(lines)
        ],
        "meters": [{"first_address": 1, "count": meters, "bus": f"L{n}"} for n in range(lines)],
    }
    simulation = Simulation(parse_config(document))
    await simulation.start()
    return [server.port for _, server in simulation.listening], simulation


async def _serve(kind: str, lines: int, meters: int, seed: int, pipe: Connection) -> None:
    counters = {"max_pipelined": 0}
    handle: Any  # kept alive until the parent says stop
    if kind == "simulator":
        ports, handle = await _simulator(lines, meters, seed)
    elif kind == "pymodbus":
        ports, handle = await _pymodbus_servers(lines, meters)
    else:
        ports, handle = await _lean_servers(lines, meters, counters)
    pipe.send(ports)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, pipe.recv) == "cpu":
        pipe.send(_cpu_s())  # the parent's question: how busy were the meters?
    pipe.send(counters)  # the parent said stop
    if kind == "simulator":
        await handle.stop()


def serve_main(kind: str, lines: int, meters: int, seed: int, pipe: Connection) -> None:
    """Entry point of the meters' process."""
    asyncio.run(_serve(kind, lines, meters, seed, pipe))


# --- the poller's side -------------------------------------------------------------------------


class CountingSink:
    """No database: the P6 figure is the poller's."""

    def __init__(self) -> None:
        self.readings = 0
        self.status_rows = 0

    async def write(self, readings: list[IncomingReading], changes: StatusChanges) -> None:
        self.readings += len(readings)
        self.status_rows += len(changes.meters)


@dataclass
class RunResult:
    reads_per_s: float
    server_cpu_share: float
    requests_per_s: float
    cpu_us_per_read: float
    max_in_flight_per_bus: int
    failures: int
    reads_per_line_min: int
    reads_per_line_max: int
    stored: int


def plans_for(
    ports: list[int], meters: int, meter_ids: dict[tuple[int, int], int] | None
) -> list[BusPlan]:
    plans = []
    for line, port in enumerate(ports):
        config = BusConfig(line + 1, "modbus_tcp", "tcp", f"127.0.0.1:{port}", timeout_s=2.0)
        addresses = tuple(
            MeterAddress(
                (meter_ids or {}).get((line, unit), line * 1000 + unit), "modbus_tcp", str(unit)
            )
            for unit in range(1, meters + 1)
        )
        plans.append(BusPlan(config, 1, None, 0.0, addresses))
    return plans


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _warm_up(poller: Poller, lines: int, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while len(poller.stats.reads_by_bus) < lines and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def measure(
    plans: list[BusPlan],
    duration_s: float,
    sink: Any,
    server_cpu: Callable[[], float] = lambda: 0.0,
) -> RunResult:
    poller = Poller(plans, sink=sink, settings=PollerSettings(flush_interval_s=1.0))
    task = asyncio.create_task(poller.run())
    await _warm_up(poller, len(plans))
    reads0, by_bus0, cpu0, t0 = (
        poller.stats.reads,
        dict(poller.stats.reads_by_bus),
        _cpu_s(),
        time.perf_counter(),
    )
    requests0 = sum(c.stats.requests for c in poller.connections.values())
    server0 = server_cpu()
    await asyncio.sleep(duration_s)
    server_share = (server_cpu() - server0) / (time.perf_counter() - t0)
    reads, elapsed, cpu = poller.stats.reads - reads0, time.perf_counter() - t0, _cpu_s() - cpu0
    requests = sum(c.stats.requests for c in poller.connections.values()) - requests0
    per_line = [
        poller.stats.reads_by_bus.get(p.config.bus_id, 0) - by_bus0.get(p.config.bus_id, 0)
        for p in plans
    ]
    poller.stop()
    await task
    return RunResult(
        reads_per_s=reads / elapsed,
        server_cpu_share=server_share,
        requests_per_s=requests / elapsed,
        cpu_us_per_read=cpu / max(reads, 1) * 1e6,
        max_in_flight_per_bus=max(c.stats.max_in_flight for c in poller.connections.values()),
        failures=poller.stats.failures,
        reads_per_line_min=min(per_line),
        reads_per_line_max=max(per_line),
        stored=poller.stats.readings_flushed,
    )


def _ingest_sink(
    folder: Path, lines: int, meters: int
) -> tuple[DatabaseSink, dict[tuple[int, int], int]]:
    """A temporary SQLite database with one open account per simulated meter."""
    from meterdesk.bench import setup
    from meterdesk.bench.workload import BenchMeter, Workload
    from meterdesk.db.database import Database
    from meterdesk.db.engine import build_engine
    from meterdesk.shared.time import system_clock

    db = Database(build_engine(f"sqlite:///{folder}/poll.sqlite3"), system_clock)
    count = lines * meters
    bench_meters = [BenchMeter(i, "tou", Decimal(0), 1, Decimal(5000)) for i in range(count)]
    prepared = setup.prepare(db, Workload(seed=1, meters=bench_meters, rounds=0))
    ids = {(i // meters, i % meters + 1): prepared.meter_ids[i] for i in range(count)}
    return DatabaseSink(db), ids


def _server_kind(server: str) -> str:
    if server not in SERVERS:
        raise ValueError(f"--server must be one of {', '.join(SERVERS)}")
    return server


def _measure_all(
    ports: list[int], meters: int, duration_s: float, runs: int, ingest: bool, pipe: Connection
) -> tuple[list[RunResult], dict[str, int]]:
    def server_cpu() -> float:
        pipe.send("cpu")
        return float(pipe.recv())

    results = []
    with tempfile.TemporaryDirectory(prefix="meterdesk-bench-poll-") as folder:
        sink: Any = CountingSink()
        meter_ids = None
        if ingest:
            sink, meter_ids = _ingest_sink(Path(folder), len(ports), meters)
        plans = plans_for(ports, meters, meter_ids)
        for number in range(1, runs + 1):
            result = asyncio.run(measure(plans, duration_s, sink, server_cpu))
            say(
                f"run {number}: {result.reads_per_s:,.0f} reads/s, {result.requests_per_s:,.0f} Modbus "
                f"requests/s, {result.cpu_us_per_read:.0f} µs poller CPU per read, max in flight per "
                f"line {result.max_in_flight_per_bus}, failures {result.failures}, reads per line "
                f"{result.reads_per_line_min}–{result.reads_per_line_max}, meters' process busy "
                f"{result.server_cpu_share:.0%} of a core"
            )
            results.append(result)
        counts = _stored_counts(sink) if ingest else {}
    return results, counts


def _stored_counts(sink: DatabaseSink) -> dict[str, int]:
    """What the core made of the polled readings: accepted, quarantined, ledger transfers."""
    from sqlalchemy import func, select

    from meterdesk.ledger.tables import transfers
    from meterdesk.metering.tables import quarantine, readings

    with sink.db.read() as conn:
        counts = {
            f"db_{table.name}": int(
                conn.execute(select(func.count()).select_from(table)).scalar_one()
            )
            for table in (readings, quarantine, transfers)
        }
    say(f"database: {counts}")
    return counts


def run(
    *,
    quick: bool,
    lines: int | None = None,
    meters: int | None = None,
    duration_s: float | None = None,
    runs: int | None = None,
    server: str = "lean",
    ingest: bool = False,
    seed: int = 1,
) -> dict[str, Any]:
    lines, meters = lines or 20, meters or 25
    duration_s = duration_s or (8.0 if quick else 30.0)
    runs = runs or (2 if quick else 3)
    kind = _server_kind(server)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # late answers after a stop
    say(
        f"P6 poll bench: {lines} lines × {meters} meters ({kind} server, separate process), {runs} × {duration_s:g} s"
    )
    load_before = os.getloadavg()[0]
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=serve_main, args=(kind, lines, meters, seed, child), daemon=True
    )
    process.start()
    try:
        started = time.monotonic()
        while not parent.poll(0.2):
            if not process.is_alive() or time.monotonic() - started > 120:
                raise RuntimeError(
                    "the simulated meters' process did not start (see its error above)"
                )
        ports: list[int] = parent.recv()
        results, counts = _measure_all(ports, meters, duration_s, runs, ingest, parent)
        parent.send("stop")
        counters: dict[str, int] = parent.recv() if parent.poll(10) else {}
    finally:
        process.join(10)
        if process.is_alive():
            process.terminate()
    summary = _summary(results, kind, lines, meters, duration_s, ingest, counters, load_before)
    summary.update(counts)
    print(json.dumps(summary, sort_keys=True), flush=True)
    return summary


def _summary(
    results: list[RunResult],
    kind: str,
    lines: int,
    meters: int,
    duration_s: float,
    ingest: bool,
    counters: dict[str, int],
    load_before: float,
) -> dict[str, Any]:
    def median(name: str) -> float:
        return float(statistics.median(getattr(result, name) for result in results))

    reads = median("reads_per_s")
    summary: dict[str, Any] = {
        "bench": "poll",
        "figure": "P6",
        "reads_per_s": round(reads),
        "reads_per_s_runs": [round(r.reads_per_s) for r in results],
        "target_reads_per_s": TARGET_READS_PER_S,
        "meets_target": reads >= TARGET_READS_PER_S,
        "max_in_flight_per_bus": max(r.max_in_flight_per_bus for r in results),
        "modbus_requests_per_s": round(median("requests_per_s")),
        "poller_cpu_us_per_read": round(median("cpu_us_per_read")),
        "meters_process_cpu_share": round(median("server_cpu_share"), 2),
        "failures": sum(r.failures for r in results),
        "reads_per_line_min_max": [
            min(r.reads_per_line_min for r in results),
            max(r.reads_per_line_max for r in results),
        ],
        "lines": lines,
        "meters_per_line": meters,
        "meters": lines * meters,
        "duration_s": duration_s,
        "runs": len(results),
        "server": kind,
        "ingest": ingest,
        "stored_readings": sum(r.stored for r in results) if ingest else None,
        "machine": _machine(load_before),
    }
    if summary["meters_process_cpu_share"] >= 0.9:
        say("note: the simulated meters' process was saturated: the figure is a floor set by it")
    if "max_pipelined" in counters and kind == "lean":
        summary["server_max_requests_before_answer"] = counters["max_pipelined"]
    say(
        f"median {summary['reads_per_s']:,} reads/s (target ≥ {TARGET_READS_PER_S:,}: "
        f"{'met' if summary['meets_target'] else 'NOT met'}); never more than "
        f"{summary['max_in_flight_per_bus']} request in flight per line"
    )
    return summary


def _machine(load_before: float) -> dict[str, Any]:
    import pymodbus

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_before": round(load_before, 2),
        "pymodbus": pymodbus.__version__,
    }


def say(message: str) -> None:
    print(message, flush=True)
