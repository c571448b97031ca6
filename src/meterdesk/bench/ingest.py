"""``meterdesk bench ingest`` — targets P1, P1-pg and P1-naive (docs/PERFORMANCE.md).

Three runs over the same seeded workload, side by side, on the same database engine:

1. ours: the real pipeline (dedupe → place → price → ledger → one commit per batch);
2. bulk: a raw insert of the same distinct readings into the same ``readings`` table — one
   ``executemany`` in one transaction on SQLite, ``COPY`` on PostgreSQL — the floor no pipeline
   can beat;
3. naive: our pipeline forced to one transaction per reading, on a sample of the stream.

After run 1 the result is checked against the reference pricer (expected deduction per meter,
to the fen) and the ledger invariants. The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

from meterdesk.bench import setup
from meterdesk.bench.checks import check_invariants
from meterdesk.bench.database_time import DatabaseTime
from meterdesk.bench.reference import expected_fen
from meterdesk.bench.storage import stored_bytes
from meterdesk.bench.workload import Workload, build
from meterdesk.billing.ingest import IncomingReading, Ingestor
from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.shared.runtime import tune_for_long_running
from meterdesk.shared.time import system_clock


def run(
    *, quick: bool, database_url: str | None, meters: int | None, seed: int, repeat: int = 1
) -> dict[str, Any]:
    meter_count = meters or (2000 if quick else 10_000)
    rounds = 10 if quick else 20
    naive_sample = 400 if quick else 2000
    workload = build(seed=seed, meters=meter_count, rounds=rounds)
    tune_for_long_running()  # as every long-running meterdesk process does (shared.runtime)
    backend = "postgresql" if database_url else "sqlite"
    say(
        f"workload: seed {seed}, {meter_count} meters, {rounds} readings each, "
        f"{len(workload.truth)} distinct readings, "
        f"{workload.delivered} delivered in {len(workload.batches)} batches (duplicates, reordering, late, rollovers)"
    )
    with tempfile.TemporaryDirectory(prefix="meterdesk-bench-") as folder:
        places = Places(Path(folder), database_url)
        results = [_one_round(workload, places, naive_sample) for _ in range(repeat)]
    summary = _summarise(results, workload, backend, seed)
    print(json.dumps(summary, sort_keys=True))
    return summary


class Places:
    """Fresh, separate databases for each run: files on SQLite, schemas on PostgreSQL."""

    def __init__(self, folder: Path, database_url: str | None) -> None:
        self.folder, self.url, self.count = folder, database_url, 0

    def fresh(self, name: str) -> Engine:
        self.count += 1
        if self.url is None:
            return build_engine(f"sqlite:///{self.folder}/{name}-{self.count}.sqlite3")
        schema = f"bench_{name}_{os.getpid()}_{self.count}"
        admin = create_engine(self.url)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
        separator = "&" if "?" in self.url else "?"
        return build_engine(f"{self.url}{separator}options=-csearch_path%3D{schema}")

    def drop(self, engine: Engine) -> None:
        if self.url is not None:
            options = engine.url.query.get("options", "")
            schema = (options if isinstance(options, str) else options[0]).split("=")[-1]
            engine.dispose()
            admin = create_engine(self.url)
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin.dispose()
        else:
            engine.dispose()


def _one_round(workload: Workload, places: Places, naive_sample: int) -> dict[str, Any]:
    ours_engine = places.fresh("ours")
    prepared = setup.prepare(Database(ours_engine, system_clock), workload)
    batches = [[prepared.incoming(item) for item in batch] for batch in workload.batches]
    naive_engine = _copy_prepared(places, ours_engine, workload)
    database = DatabaseTime()
    # What the prepared database holds, measured on its copy: a checkpoint of ours now would
    # change the run it measures (it would start with an empty write-ahead log).
    stored_before = stored_bytes(naive_engine)
    pipeline = Ingestor(Database(ours_engine, system_clock))
    written_before = written_bytes()
    with database.watching(ours_engine):
        ours_s = _timed(lambda: _ingest_batches(pipeline, batches, database))
    written = _written_since(written_before, places)
    say(
        f"ours: {len(workload.truth)} distinct readings ({workload.delivered} delivered) in {ours_s:.3f} s "
        f"= {len(workload.truth) / ours_s:,.0f} readings/s"
    )
    _say_database_time(database, len(workload.truth), ours_s)
    written_per_reading = None if written is None else written / len(workload.truth)
    if written_per_reading is not None:
        say(f"  bytes written to the database files: {written_per_reading:,.0f} per reading")
    stored_per_reading = (stored_bytes(ours_engine) - stored_before) / len(workload.truth)
    say(
        f"  bytes stored (tables and indexes the run added): {stored_per_reading:,.0f} per "
        "reading (target P7: ≤ 30 on PostgreSQL, with aggregates and retention)"
    )
    lane = pipeline.lane
    lane_share = lane.meters_taken / max(1, lane.meters_seen)
    say(
        f"  fast lane: {lane.meters_taken:,} of {lane.meters_seen:,} meter batches "
        f"({100 * lane_share:.0f} %), {lane.meters_handed_back:,} of them priced by the general "
        "charger (an interval over a period or tier bound)"
    )
    expected = expected_fen(workload, prepared.opening)
    checks = check_invariants(ours_engine, workload, prepared, expected)
    for name, ok in checks.items():
        say(f"check {name}: {'ok' if ok else 'FAILED'}")
    places.drop(ours_engine)
    bulk_engine = places.fresh("bulk")
    bulk_s = setup.bulk_insert_readings(bulk_engine, workload, prepared)
    say(
        f"bulk insert: {len(workload.truth)} readings in {bulk_s:.3f} s "
        f"= {len(workload.truth) / bulk_s:,.0f} readings/s"
    )
    places.drop(bulk_engine)
    sample = [item for batch in batches for item in batch][:naive_sample]
    naive_pipeline = Ingestor(Database(naive_engine, system_clock))
    naive_s = _timed(lambda: [naive_pipeline.ingest([item]) for item in sample])
    say(
        f"one transaction per reading: {len(sample)} readings in {naive_s:.3f} s "
        f"= {len(sample) / naive_s:,.0f} readings/s"
    )
    places.drop(naive_engine)
    return {
        "readings_per_s": len(workload.truth) / ours_s,
        "delivered_per_s": workload.delivered / ours_s,
        "bulk_insert_readings_per_s": len(workload.truth) / bulk_s,
        "per_reading_tx_readings_per_s": len(sample) / naive_s,
        "database_readings_per_s": len(workload.truth) / database.total_s,
        "fast_lane_meter_share": lane_share,
        "written_bytes_per_reading": written_per_reading,
        "stored_bytes_per_reading": stored_per_reading,
        "checks": checks,
    }


def _say_database_time(database: DatabaseTime, readings: int, ours_s: float) -> None:
    say(
        f"  of which the database itself: {database.total_s:.3f} s "
        f"= {1e6 * database.total_s / readings:.1f} µs per reading"
    )
    for what, seconds in sorted(database.seconds.items(), key=lambda item: -item[1]):
        say(f"    {what:<28} {seconds:7.3f} s in {database.calls[what]} calls")
    say(f"  and Python around it: {ours_s - database.total_s:.3f} s")


def _copy_prepared(places: Places, prepared_engine: Engine, workload: Workload) -> Engine:
    """The naive run starts from the same prepared state as ours."""
    if places.url is None:
        source = prepared_engine.url.database
        assert source is not None
        target = places.folder / f"naive-{places.count}.sqlite3"
        with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        return build_engine(f"sqlite:///{target}")
    engine = places.fresh("naive")
    setup.prepare(Database(engine, system_clock), workload)
    return engine


def _ingest_batches(
    pipeline: Ingestor, batches: list[list[IncomingReading]], database: DatabaseTime
) -> None:
    for batch in batches:
        pipeline.ingest(batch)
        database.committed()


def written_bytes() -> int | None:
    """Bytes this process has passed to write calls so far (``wchar`` of ``/proc/self/io``;
    Linux), or None. Unlike time, it does not depend on the machine's load: the pages SQLite
    writes to its WAL and checkpoints for the same workload (None on PostgreSQL, where the
    server writes)."""
    try:
        with open("/proc/self/io", encoding="ascii") as io:
            for line in io:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _written_since(before: int | None, places: Places) -> int | None:
    after = written_bytes()
    if places.url is not None or before is None or after is None:
        return None
    return after - before


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _summarise(
    results: list[dict[str, Any]], workload: Workload, backend: str, seed: int
) -> dict[str, Any]:
    def median(key: str) -> float:
        return float(statistics.median(r[key] for r in results))

    ours, bulk, naive, database = (
        median("readings_per_s"),
        median("bulk_insert_readings_per_s"),
        median("per_reading_tx_readings_per_s"),
        median("database_readings_per_s"),
    )
    invariants_ok = all(all(r["checks"].values()) for r in results)
    summary = {
        "bench": "ingest",
        "backend": backend,
        "readings_per_s": round(ours),
        "delivered_per_s": round(median("delivered_per_s")),
        "bulk_insert_readings_per_s": round(bulk),
        "per_reading_tx_readings_per_s": round(naive),
        "ratio_vs_bulk_insert": round(bulk / ours, 2),  # our time / bulk-insert time, same readings
        "ratio_vs_per_reading_tx": round(
            ours / naive, 1
        ),  # how many times faster than one tx per reading
        # The database's own time in our run against the bulk insert: the floor of the ratio
        # above on this schema, whatever the Python around it does.
        "database_ratio_vs_bulk_insert": round(bulk / database, 2),
        # Of each batch's meters, the share placed and priced by billing/fast_lane.py.
        "fast_lane_meter_share": round(median("fast_lane_meter_share"), 3),
        # SQLite on Linux: what the ingest writes per reading (WAL pages and checkpoints), a
        # figure that does not move with the machine's load; None elsewhere.
        "written_bytes_per_reading": _median_or_none(results, "written_bytes_per_reading"),
        # What the run added to the database (tables, indexes) per distinct reading: readings,
        # lines, transfers and the rest; P7's figure, before retention and aggregates.
        "stored_bytes_per_reading": _median_or_none(results, "stored_bytes_per_reading"),
        "invariants_ok": invariants_ok,
        "runs": len(results),
        "meters": len(workload.meters),
        "distinct_readings": len(workload.truth),
        "delivered_readings": workload.delivered,
        "seed": seed,
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version,
        },
    }
    say(
        f"ratio vs bulk insert: {summary['ratio_vs_bulk_insert']}× the time "
        f"(target ≤ {8 if backend == 'sqlite' else 12}×); "
        f"vs one transaction per reading: {summary['ratio_vs_per_reading_tx']}× faster (target ≥ 15×); "
        f"the database's own time alone: {summary['database_ratio_vs_bulk_insert']}× the bulk insert"
    )
    return summary


def say(message: str) -> None:
    print(message, flush=True)


def _median_or_none(results: list[dict[str, Any]], key: str) -> int | None:
    values = [r[key] for r in results if r[key] is not None]
    return round(statistics.median(values)) if values else None
