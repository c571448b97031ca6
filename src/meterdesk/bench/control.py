"""``meterdesk bench control`` — issue 4's latency target, measured on the real pieces: credit gone
→ trip command on the wire p99 ≤ 2 s at half of the P2 load, and a recharge → close command on
the wire p99 ≤ 2 s.

- **The platform**: the real ``meterdesk run`` runtime (:class:`~meterdesk.runtime.Runtime`) in
  this process — MQTT ingest into the money core, the control loop deciding in the ingest and
  recharge transactions, the command executor sending through the poller's connections and
  confirming by read-back — on a fresh database (a temporary SQLite file, or a schema of
  ``--database-url``), with Mosquitto at ``--broker``.
- **The meters whose credit runs out** (``--meters``, 10 per DL/T 645 line): simulated meters on
  real sockets in a process of their own (:mod:`meterdesk.bench.control_sim`), reported every
  second by virtual gateways over MQTT. Each account's credit is sized to run out at its own
  moment while the background load runs; when its trip is confirmed the bench recharges it.
- **The background load** (``--rate`` readings/s, default half of P2's 20,000): the seeded ingest
  workload published by gateway processes (:mod:`meterdesk.bench.control_load`), QoS 1, 10
  readings per report, with HISTORY overlaps — the same traffic as ``bench mqtt``. The readings/s
  the platform actually answered is printed next to the latencies: the latencies hold at that
  load, not at the target unless it was reached. Background meters are measure-only (protocol
  ``manual``), so every command on the wire is one this bench times.

Latencies (:mod:`meterdesk.bench.control_results`): trip = first 1C trip frame at the meter's
socket − publish of the reading that exhausted the credit; restore = first 1C close frame −
the ``cashier.recharge`` call. Then the checks, and the last line printed is one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import platform
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from meterdesk.bench import control_setup
from meterdesk.bench.control_load import LoadPlan, LoadResult, run_load
from meterdesk.bench.control_report import cpu_figures, latency_figures, load_figures, report
from meterdesk.bench.control_results import Controlled, Latencies, Recharge, check, measure
from meterdesk.bench.control_sim import Records, SimJob, serve
from meterdesk.bench.ingest import Places
from meterdesk.bench.mqtt import broker_cpu_s
from meterdesk.bench.mqtt_gateways import Outgoing, build_rounds, with_faults
from meterdesk.billing import cashier
from meterdesk.db.database import Database
from meterdesk.devices.mqtt_ingest import MqttSettings, parse_broker
from meterdesk.runtime import Runtime, RuntimeSettings
from meterdesk.shared.time import system_clock

TARGET_P99_S = 2.0
P2_READINGS_PER_S = 20_000
DEFAULT_RATE = P2_READINGS_PER_S // 2
WINDOW = 800  # unanswered background reports over all publishers (as bench mqtt)
STARTUP_S = 4.0  # publisher processes start and connect before the load begins
LOAD_ON_AFTER_S = 2.0  # the controlled meters' loads switch on once the background load runs
GRACE_S = 40.0  # after the load: time left for the last trips and restores
RECHARGE = "200.00"


@dataclass(frozen=True)
class Plan:
    controlled: int  # accounts whose credit runs out
    load_s: float  # how long the background load runs
    lead_s: float = 4.0

    @property
    def spread_s(self) -> float:
        """Credits run out between lead_s and lead_s + spread_s after the loads start: inside
        the load, with time left for the last trips and restores."""
        return self.load_s / 2


QUICK = Plan(controlled=20, load_s=25.0)
FULL = Plan(controlled=100, load_s=80.0)


@dataclass
class _Run:
    db: Database
    plan: Plan
    broker: tuple[str, int]
    rate: int
    publishers: int
    seed: int
    stream: list[Outgoing]
    product_key: str = field(default_factory=lambda: f"benchctl{os.getpid()}")


@dataclass
class Outcome:
    rooms: list[Controlled]
    records: Records
    recharges: dict[int, Recharge]
    load: list[LoadResult]
    load_window_s: float
    # CPU seconds during the load phase ("phase": its wall time): this process (the platform)
    # and the broker; the publishers report their own
    cpu_s: dict[str, float | None]


def run(
    *,
    quick: bool,
    database_url: str | None,
    broker: str,
    rate: int | None,
    meters: int | None,
    seed: int,
    publishers: int,
    seconds: float | None = None,
) -> dict[str, Any]:
    host, port = parse_broker(broker)
    if not control_setup.answers(host, port):
        return _error(f"no MQTT broker at {host}:{port}")
    base = QUICK if quick else FULL
    plan = Plan(meters or base.controlled, seconds or base.load_s)
    target = rate or DEFAULT_RATE
    workload = control_setup.background_workload(seed, target, plan.load_s)
    stream = with_faults(build_rounds(workload), seed=seed)
    say(
        f"background: {len(workload.meters)} meters, up to {len(stream):,} reports "
        f"(10 readings each) at {target:,} readings/s for {plan.load_s:g} s; "
        f"{plan.controlled} accounts run out of credit on simulated DL/T 645 meters"
    )
    with tempfile.TemporaryDirectory(prefix="meterdesk-bench-control-") as folder:
        places = Places(Path(folder), database_url)
        engine = places.fresh("control")
        try:
            db = Database(engine, system_clock)
            control_setup.prepare_background(db, workload)
            bench = _Run(db, plan, (host, port), target, publishers, seed, stream)
            outcome = asyncio.run(_bench(bench))
            latencies = measure(engine, outcome.records, outcome.rooms, outcome.recharges)
            checks = check(engine, outcome.records, outcome.rooms)
        finally:
            places.drop(engine)
    summary = _summarise(bench, outcome, latencies, checks, database_url)
    print(json.dumps(summary, sort_keys=True))
    return summary


def _error(message: str) -> dict[str, Any]:
    summary = {"bench": "control", "error": message, "invariants_ok": False}
    print(json.dumps(summary, sort_keys=True))
    return summary


async def _bench(bench: _Run) -> Outcome:
    job = SimJob(
        meters=bench.plan.controlled,
        first_address=control_setup.FIRST_ADDRESS,
        rated_kw=control_setup.RATED_KW,
        energy_kwh=control_setup.OPENING,
        broker=bench.broker,
        product_key=bench.product_key,
        seed=bench.seed,
    )
    simulator = _Simulator(job)
    try:
        ports = await simulator.ports()
        rooms = await asyncio.to_thread(
            lambda: control_setup.prepare_controlled(
                bench.db, job, ports, lead_s=bench.plan.lead_s, spread_s=bench.plan.spread_s
            )
        )
        recharges, load, window, cpu = await _with_runtime(bench, simulator, rooms)
        records = await simulator.finish()
    finally:
        simulator.kill()
    return Outcome(rooms, records, recharges, load, window, cpu)


async def _with_runtime(
    bench: _Run, simulator: _Simulator, rooms: list[Controlled]
) -> tuple[dict[int, Recharge], list[LoadResult], float, dict[str, float | None]]:
    mqtt = MqttSettings(
        host=bench.broker[0],
        port=bench.broker[1],
        client_id=f"{bench.product_key}-ingest",
        topic_filter=f"data/up/{bench.product_key}/+",
        persistent=False,
    )
    runtime = Runtime(bench.db, RuntimeSettings(mqtt=mqtt))
    stop = asyncio.Event()
    running = asyncio.create_task(runtime.run(stop))
    try:
        await asyncio.wait_for(_ready(runtime), 30)
        say("runtime ready: MQTT ingest subscribed, poller connected to the meters' lines")
        return await _load_phase(bench, simulator, rooms)
    finally:
        stop.set()
        await running


async def _ready(runtime: Runtime) -> None:
    await runtime.poller_ready.wait()
    while runtime.mqtt is None:
        await asyncio.sleep(0.05)
    await runtime.mqtt.ready.wait()


async def _load_phase(
    bench: _Run, simulator: _Simulator, rooms: list[Controlled]
) -> tuple[dict[int, Recharge], list[LoadResult], float, dict[str, float | None]]:
    start_at = time.monotonic() + STARTUP_S
    plan = LoadPlan(
        bench.broker, bench.product_key, bench.rate, start_at, start_at + bench.plan.load_s, WINDOW
    )
    context = multiprocessing.get_context("spawn")
    platform_cpu, broker_cpu, began = time.process_time(), broker_cpu_s(), time.monotonic()
    with ProcessPoolExecutor(bench.publishers, mp_context=context) as pool:
        load = asyncio.create_task(run_load(pool, plan, bench.stream, bench.publishers))
        try:
            await asyncio.sleep(max(0.0, start_at + LOAD_ON_AFTER_S - time.monotonic()))
            simulator.send("load_on")
            within = bench.plan.lead_s + bench.plan.spread_s
            say(f"loads on: {len(rooms)} accounts run out of credit within ~{within:g} s")
            recharges = await _recharge_when_cut(bench.db, rooms, plan.stop_at + GRACE_S)
        finally:
            # the publishers stop by themselves (stop_at, then their last replies): wait for
            # them here, with the runtime still answering, never in the pool's blocking exit
            results = await load
    broker_after = broker_cpu_s()
    cpu = {
        "phase": time.monotonic() - began,
        "platform": time.process_time() - platform_cpu,
        "broker": None if broker_cpu is None or broker_after is None else broker_after - broker_cpu,
    }
    return recharges, results, plan.stop_at - plan.start_at, cpu


async def _recharge_when_cut(
    db: Database, rooms: list[Controlled], deadline: float
) -> dict[int, Recharge]:
    """Recharge each account as soon as its trip is confirmed; return when every account is
    restored (its close confirmed) or at ``deadline``."""
    recharges: dict[int, Recharge] = {}
    by_meter = {room.meter_id: room for room in rooms}
    restored: set[int] = set()
    while time.monotonic() < deadline:
        tripped, restored = await asyncio.to_thread(control_setup.confirmed, db, by_meter)
        for meter_id in sorted(tripped - {r.meter_id for r in rooms if r.account_id in recharges}):
            room = by_meter[meter_id]
            recharges[room.account_id] = Recharge(time.monotonic(), time.time())
            await asyncio.to_thread(_recharge, db, room)
        if len(restored) == len(rooms):
            break
        await asyncio.sleep(0.2)
    say(f"restored {len(restored)} of {len(rooms)} accounts")
    return recharges


def _recharge(db: Database, room: Controlled) -> None:
    cashier.recharge(
        db,
        organisation_id=control_setup.organisation(db),
        account_id=room.account_id,
        amount=RECHARGE,
        method="cash",
        actor="bench:cashier",
        idempotency_key=f"bench-control-recharge-{room.account_id}",
    )


class _Simulator:
    """The simulated meters' process and its pipe."""

    def __init__(self, job: SimJob) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=serve, args=(job, child), daemon=True)
        self.process.start()
        child.close()

    async def ports(self) -> dict[str, int]:
        message = await asyncio.wait_for(asyncio.to_thread(_receive, self.pipe), 60)
        return dict(message["ports"])

    def send(self, message: str) -> None:
        self.pipe.send(message)

    async def finish(self) -> Records:
        self.send("stop")
        records = await asyncio.wait_for(asyncio.to_thread(_receive, self.pipe), 60)
        assert isinstance(records, Records)
        await asyncio.to_thread(self.process.join, 10)
        return records

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


def _receive(pipe: Connection) -> Any:
    return pipe.recv()


# --- the summary ---------------------------------------------------------------------------------


def _summarise(
    bench: _Run,
    outcome: Outcome,
    latencies: Latencies,
    checks: dict[str, bool],
    database_url: str | None,
) -> dict[str, Any]:
    checks["every_account_measured"] = not latencies.missing and latencies.not_published == 0
    summary: dict[str, Any] = {
        "bench": "control",
        "backend": "postgresql" if database_url else "sqlite",
        **latency_figures(latencies),
        **load_figures(outcome.load, len(outcome.rooms), outcome.load_window_s),
        **cpu_figures(outcome.load, outcome.cpu_s),
        "target_p99_s": TARGET_P99_S,
        "target_readings_per_s": bench.rate,
        "invariants_ok": all(checks.values()),
        "checks": checks,
    }
    summary["meets_target"] = (
        summary["trip_p99_s"] is not None
        and summary["restore_p99_s"] is not None
        and max(summary["trip_p99_s"], summary["restore_p99_s"]) <= TARGET_P99_S
        and summary["background_readings_per_s"] >= DEFAULT_RATE  # at half of P2, not less
    )
    summary.update(_about(bench))
    report(summary, say)
    return summary


def _about(bench: _Run) -> dict[str, Any]:
    return {
        "controlled_meters": bench.plan.controlled,
        "controlled_lines": -(-bench.plan.controlled // 10),
        "publishers": bench.publishers,
        "seed": bench.seed,
        "executor_idle_s": RuntimeSettings().executor.idle_s,
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version,
            "load_average": [round(x, 1) for x in os.getloadavg()],
        },
    }


def say(message: str) -> None:
    print(message, flush=True)
