"""``meterdesk bench mqtt`` — target P2 (docs/PERFORMANCE.md): readings end to end through a real
MQTT broker (QoS 1, 10 readings per report), acknowledged only after their batch committed.

Set-up: the seeded ingest workload (:mod:`meterdesk.bench.workload`) on a fresh database (a
temporary SQLite file, or a schema of ``--database-url``), its meters behind gateways of 50
meters each. The ingest service runs in this process (group commit in a worker thread);
publisher processes act as the gateways (:mod:`meterdesk.bench.mqtt_gateways`), including
HISTORY re-sends that overlap and reports that arrive only late, as HISTORY.

Two phases over consecutive halves of the rounds:
1. saturated: the gateways publish as fast as their window of unanswered reports allows — the
   sustained readings/s (distinct readings ÷ first publish → last reply);
2. paced: a steady rate (``--rate``; default 20,000/s, or half of phase 1 if that is lower) —
   publish → ``report_reply`` latency, and receipt → commit in the service, from which moment
   the balance reflects the reading (``reading_to_balance_p99_s``).

Then the checks every bench runs (bills equal the reference pricer, ledger invariants, every
distinct reading stored once) and the MQTT ones (every report answered ``res: 1``, recorded
once, nothing quarantined). The last line printed is one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import platform
import socket
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from meterdesk.bench import setup
from meterdesk.bench.checks import check_invariants
from meterdesk.bench.ingest import Places
from meterdesk.bench.mqtt_gateways import (
    METERS_PER_GATEWAY,
    Outgoing,
    PublisherResult,
    build_rounds,
    gateway_of,
    run_publishers,
    with_faults,
)
from meterdesk.bench.reference import expected_fen
from meterdesk.bench.workload import START, Workload, build
from meterdesk.db.bulk import bulk_insert
from meterdesk.db.database import Database
from meterdesk.db.types import instant_int
from meterdesk.devices.mqtt_commit import IngestStats
from meterdesk.devices.mqtt_ingest import MqttIngestService, MqttSettings, parse_broker
from meterdesk.devices.mqtt_store import UplinkStore
from meterdesk.devices.tables import gateways, uplink_messages
from meterdesk.metering.tables import meters, quarantine
from meterdesk.shared.time import system_clock

TARGET_READINGS_PER_S = 20_000
TARGET_P99_S = 1.0
PACED_SHARE = 0.5  # of the saturated rate, unless --rate: latency below saturation
WINDOW = 800  # unanswered reports over all gateways (Mosquitto queues ≤ 1,000 per client)
SERVICE_COUNTERS = ("batches", "commit_s", "readings", "duplicates", "late", "messages")


@dataclass
class Phase:
    name: str
    distinct: int  # distinct readings of the phase's rounds
    target_rate: int | None  # readings/s the gateways were paced to (None: saturated)
    results: list[PublisherResult] = field(default_factory=list)
    service: dict[str, float] = field(default_factory=dict)  # counter deltas
    receipt_to_commit_p99_s: float = 0.0
    cpu_s: dict[str, float | None] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return max(r.last_reply for r in self.results) - min(r.first_publish for r in self.results)

    @property
    def readings_per_s(self) -> float:
        return self.distinct / self.duration_s

    def total(self, name: str) -> int:
        return sum(int(getattr(r, name)) for r in self.results)

    def ack(self, fraction: float) -> float:
        return _percentile(self.latencies, fraction)


@dataclass
class MqttBench:
    """What one bench run works with."""

    engine: Engine
    workload: Workload
    broker: tuple[str, int]
    publishers: int
    seed: int
    product_key: str = field(default_factory=lambda: f"bench{os.getpid()}")


def run(
    *,
    quick: bool,
    database_url: str | None,
    broker: str,
    meters: int | None,
    seed: int,
    rate: int | None,
    publishers: int,
) -> dict[str, Any]:
    host, port = parse_broker(broker)
    if not _answers(host, port):
        summary = {
            "bench": "mqtt",
            "error": f"no MQTT broker at {host}:{port}",
            "invariants_ok": False,
        }
        print(json.dumps(summary, sort_keys=True))
        return summary
    meter_count = meters or (2000 if quick else 10_000)
    workload = build(seed=seed, meters=meter_count, rounds=24 if quick else 60)
    say(
        f"workload: seed {seed}, {meter_count} meters behind {_gateway_count(meter_count)} gateways, "
        f"{workload.rounds} rounds, {len(workload.truth)} distinct readings, 10 per report"
    )
    with tempfile.TemporaryDirectory(prefix="meterdesk-bench-mqtt-") as folder:
        places = Places(Path(folder), database_url)
        engine = places.fresh("mqtt")
        try:
            bench = MqttBench(engine, workload, (host, port), publishers, seed)
            phases, checks, stats = asyncio.run(_bench(bench, rate))
        finally:
            places.drop(engine)
    summary = _summarise(phases, checks, stats, bench, "postgresql" if database_url else "sqlite")
    print(json.dumps(summary, sort_keys=True))
    return summary


async def _bench(
    bench: MqttBench, rate: int | None
) -> tuple[list[Phase], dict[str, bool], IngestStats]:
    db = Database(bench.engine, system_clock)
    prepared = setup.prepare(db, bench.workload)
    add_gateways(bench)
    streams = streams_of(bench)
    settings = MqttSettings(
        host=bench.broker[0],
        port=bench.broker[1],
        client_id=f"{bench.product_key}-ingest",
        topic_filter=f"data/up/{bench.product_key}/+",
        persistent=False,
    )
    service = MqttIngestService(UplinkStore(db).commit, settings)
    stop = asyncio.Event()
    serving = asyncio.create_task(service.run(stop))
    await asyncio.wait_for(service.ready.wait(), 10)
    try:
        phases = await _phases(bench, service, streams, rate)
    finally:
        stop.set()
        await serving
    return phases, _checks(bench, prepared, streams, phases), service.stats


def streams_of(bench: MqttBench) -> list[list[Outgoing]]:
    rounds = build_rounds(bench.workload)
    half = len(rounds) // 2
    return [
        with_faults({n: r for n, r in rounds.items() if n <= half}, seed=bench.seed),
        with_faults({n: r for n, r in rounds.items() if n > half}, seed=bench.seed + 1),
    ]


async def _phases(
    bench: MqttBench, service: MqttIngestService, streams: list[list[Outgoing]], rate: int | None
) -> list[Phase]:
    per_round = len(bench.workload.meters)
    half = bench.workload.rounds // 2
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(bench.publishers, mp_context=context) as pool:
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(pool, time.sleep, 0.3) for _ in range(bench.publishers))
        )  # start the processes untimed
        first = await _phase(
            pool, bench, service, Phase("saturated", per_round * half, None), streams[0]
        )
        paced = rate or min(TARGET_READINGS_PER_S, int(PACED_SHARE * first.readings_per_s))
        say(f"paced phase at {paced:,} readings/s")
        service.stats.latencies_s.clear()
        rest = per_round * (bench.workload.rounds - half)
        second = await _phase(pool, bench, service, Phase("paced", rest, paced), streams[1])
    return [first, second]


async def _phase(
    pool: ProcessPoolExecutor,
    bench: MqttBench,
    service: MqttIngestService,
    phase: Phase,
    stream: list[Outgoing],
) -> Phase:
    before, cpu, broker_cpu = _counters(service.stats), time.process_time(), broker_cpu_s()
    phase.results = await run_publishers(
        pool,
        bench.broker,
        bench.product_key,
        stream,
        count=bench.publishers,
        rate=phase.target_rate,
        window=WINDOW,
    )
    after, broker_after = _counters(service.stats), broker_cpu_s()
    phase.service = {name: after[name] - before[name] for name in after}
    phase.receipt_to_commit_p99_s = _percentile(sorted(service.stats.latencies_s), 0.99)
    phase.cpu_s = {
        "ingest_process": time.process_time() - cpu,
        "gateways": sum(r.cpu_s for r in phase.results),
        "broker": None if broker_cpu is None or broker_after is None else broker_after - broker_cpu,
    }
    phase.latencies = sorted(x for r in phase.results for x in r.latencies_s)
    _report(phase)
    return phase


def _counters(stats: IngestStats) -> dict[str, float]:
    return {name: float(getattr(stats, name)) for name in SERVICE_COUNTERS}


def _gateway_count(meter_count: int) -> int:
    return -(-meter_count // METERS_PER_GATEWAY)


def add_gateways(bench: MqttBench) -> None:
    with bench.engine.begin() as conn:
        org, site = conn.execute(select(meters.c.organisation_id, meters.c.site_id).limit(1)).one()
        serials = sorted({gateway_of(m.index) for m in bench.workload.meters})
        columns = (
            "organisation_id",
            "site_id",
            "serial",
            "name",
            "uplink",
            "product_key",
            "state",
            "created_at",
        )
        rows = [
            (
                org,
                site,
                serial,
                f"Bench gateway {serial}",
                "mqtt",
                bench.product_key,
                "unknown",
                instant_int(START),
            )
            for serial in serials
        ]
        bulk_insert(conn, gateways, columns, rows)


def _checks(
    bench: MqttBench, prepared: setup.Prepared, streams: list[list[Outgoing]], phases: list[Phase]
) -> dict[str, bool]:
    expected = expected_fen(bench.workload, prepared.opening)
    checks = check_invariants(bench.engine, bench.workload, prepared, expected)
    with bench.engine.connect() as conn:
        recorded = conn.execute(select(func.count()).select_from(uplink_messages)).scalar_one()
        held = conn.execute(select(func.count()).select_from(quarantine)).scalar_one()
    checks["every_report_answered_res_1"] = all(
        p.total("unanswered") == 0 and p.total("rejected") == 0 for p in phases
    )
    checks["every_report_recorded_once"] = int(recorded) == sum(len(s) for s in streams)
    checks["nothing_quarantined"] = int(held) == 0
    for name, ok in checks.items():
        say(f"check {name}: {'ok' if ok else 'FAILED'}")
    return checks


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _report(phase: Phase) -> None:
    service, duration = phase.service, phase.duration_s
    say(
        f"{phase.name}: {phase.distinct:,} distinct readings ({phase.total('readings'):,} "
        f"delivered in {phase.total('reports'):,} reports) in {duration:.2f} s = "
        f"{phase.readings_per_s:,.0f} readings/s"
    )
    say(
        f"{phase.name}: publish → report_reply p50 {phase.ack(0.5):.3f} s, p99 "
        f"{phase.ack(0.99):.3f} s; receipt → commit p99 {phase.receipt_to_commit_p99_s:.3f} s; "
        f"re-sends {phase.total('resends')}"
    )
    say(
        f"{phase.name}: {service['batches']:.0f} commits of "
        f"{service['readings'] / max(service['batches'], 1):,.0f} readings; database busy "
        f"{service['commit_s'] / duration:.0%} of the time; inside the commits "
        f"{service['readings'] / max(service['commit_s'], 1e-9):,.0f} readings/s; duplicates "
        f"dropped {service['duplicates']:.0f}, meters with late readings {service['late']:.0f}"
    )
    say(
        f"{phase.name}: CPU s "
        + ", ".join(f"{k} {'n/a' if v is None else f'{v:.1f}'}" for k, v in phase.cpu_s.items())
    )


def _summarise(
    phases: list[Phase], checks: dict[str, bool], stats: IngestStats, bench: MqttBench, backend: str
) -> dict[str, Any]:
    first, second = phases
    commits = first.service["readings"] / max(first.service["commit_s"], 1e-9)
    summary: dict[str, Any] = {
        "bench": "mqtt",
        "backend": backend,
        "readings_per_s": round(first.readings_per_s),
        "delivered_readings_per_s": round(first.total("readings") / first.duration_s),
        "readings_per_commit_s": round(commits),  # the database side alone, inside the commits
        "ratio_vs_commit_rate": round(first.readings_per_s / commits, 2),
        "database_busy_share": round(first.service["commit_s"] / first.duration_s, 2),
        "mean_batch_readings": round(first.service["readings"] / max(first.service["batches"], 1)),
        "saturated_ack_p99_s": round(first.ack(0.99), 3),
        "paced_target_readings_per_s": second.target_rate,
        "paced_readings_per_s": round(second.readings_per_s),
        "ack_p50_s": round(second.ack(0.5), 3),
        "ack_p99_s": round(second.ack(0.99), 3),
        "reading_to_balance_p99_s": round(second.receipt_to_commit_p99_s, 3),
        "target_readings_per_s": TARGET_READINGS_PER_S,
        "meets_p2": first.readings_per_s >= TARGET_READINGS_PER_S
        and second.ack(0.99) <= TARGET_P99_S
        and (second.target_rate or 0) >= TARGET_READINGS_PER_S,
        "invariants_ok": all(checks.values()),
        "checks": checks,
        "resends": sum(p.total("resends") for p in phases),
        "duplicates_dropped": stats.duplicates,
        "cpu_s": {p.name: p.cpu_s for p in phases},
    }
    summary.update(_about(bench))
    say(
        f"P2: {summary['readings_per_s']:,} readings/s sustained (target ≥ "
        f"{TARGET_READINGS_PER_S:,}); ack p99 {summary['ack_p99_s']} s at "
        f"{summary['paced_readings_per_s']:,} readings/s (target ≤ 1 s at ≥ 20,000); the "
        f"database commits alone ran at {summary['readings_per_commit_s']:,} readings/s"
    )
    return summary


def _about(bench: MqttBench) -> dict[str, Any]:
    return {
        "meters": len(bench.workload.meters),
        "gateways": _gateway_count(len(bench.workload.meters)),
        "publishers": bench.publishers,
        "distinct_readings": len(bench.workload.truth),
        "seed": bench.seed,
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version,
            "load_average": [round(x, 1) for x in os.getloadavg()],
        },
    }


def broker_cpu_s() -> float | None:
    """CPU seconds of a local Mosquitto (from its pid file), when readable."""
    try:
        pid = Path("/run/mosquitto/mosquitto.pid").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def say(message: str) -> None:
    print(message, flush=True)
