"""A batch commits whole or not at all, so a crash or an error never leaves money half-moved,
and re-sending everything afterwards gives exactly what a run that never failed gives.

Two ways to fail mid-batch:
- a real crash: a separate process ingests into a SQLite file and is killed with SIGKILL after
  it reported some committed batches (while it is inside the next one);
- a fault in-process: one write of the pipeline (the ledger insert, the running totals, the
  control loop) raises once; the Ingestor that saw the error is reused for the retry, as a
  long-lived ingest worker would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import (
    T0,
    D,
    make_meter,
    make_org,
    make_tariff,
    open_account,
    row_counts,
    shuffled_batches,
    snapshot,
    steady_stream,
    tou_tier_definition,
)
from sqlalchemy import Engine

from meterdesk.billing.ingest import IncomingReading, Ingestor
from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.db.metadata import load_all_tables
from meterdesk.shared.time import FakeClock

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).parent
BATCH = 10
READINGS_PER_METER = 200
FAULT_BATCHES = 12  # the in-process fault tests use the first batches only
FAULT_AT = 5  # a batch with new readings, postings and a late reading


def build_world(db: Database) -> list[int]:
    """Three meters on two accounts: flat (rolling over at 10 000) and TOU with tiers."""
    org = make_org(db)
    flat = make_tariff(db, org, "flat")
    tou = make_tariff(db, org, "tou", tou_tier_definition())
    meters = [
        make_meter(db, org, "M1", modulus="10000"),
        make_meter(db, org, "M2"),
        make_meter(db, org, "M3"),
    ]
    open_account(db, org, "A-1", [(meters[0], flat, "9990"), (meters[1], tou, "500")], credit="30")
    open_account(db, org, "A-2", [(meters[2], tou, "0")], credit="1000")
    return meters


def batches(meter_ids: list[int]) -> list[list[IncomingReading]]:
    """Readings every 7 minutes (up to 0.8 kWh each), mixed within windows of 50, in batches of
    10; every third reading of the second meter is sent twice."""
    stream: list[IncomingReading] = []
    for index, (meter_id, start) in enumerate(zip(meter_ids, ("9990", "500", "0"), strict=True)):
        stream += steady_stream(
            meter_id,
            start_total=D(start),
            count=READINGS_PER_METER,
            step=D("0.8"),
            every=timedelta(minutes=7),
            modulus=D(10_000) if index == 0 else None,
            seed=index,
        )
    stream += [r for r in stream if r.meter_id == meter_ids[1]][::3]  # duplicates, later on
    return shuffled_batches(stream, size=BATCH, window=50, seed=42)


def received_at(index: int) -> Any:
    """A fixed arrival time per batch, so every run writes identical rows."""
    return T0 + timedelta(days=10, seconds=index)


# The crashing (and the re-sending) process: it rebuilds the same batches and ingests those
# after ``skip``, printing a line after each commit.
INGEST_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[2])
from test_crash import batches, received_at, meter_ids_in
from meterdesk.billing.ingest import Ingestor
from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.shared.time import FakeClock, system_clock

engine = build_engine(f"sqlite:///{sys.argv[1]}")
db = Database(engine=engine, clock=system_clock)
ingestor = Ingestor(db)
for index, batch in enumerate(batches(meter_ids_in(db))):
    ingestor.ingest(batch, received_at=received_at(index))
    print(f"committed {index}", flush=True)
engine.dispose()
print("done", flush=True)
"""


def meter_ids_in(db: Database) -> list[int]:
    from sqlalchemy import select

    from meterdesk.metering.tables import meters

    with db.read() as conn:
        return [
            int(i) for i in conn.execute(select(meters.c.id).order_by(meters.c.number)).scalars()
        ]


def base_database(folder: Path) -> Path:
    path = folder / "base.sqlite3"
    engine = build_engine(f"sqlite:///{path}")
    try:
        load_all_tables().create_all(engine)
        build_world(Database(engine=engine, clock=FakeClock(T0)))
    finally:
        engine.dispose()
    return path


def copy_of(base: Path, name: str) -> Path:
    target = base.parent / name
    shutil.copy(base, target)
    return target


def ingest_in_process(path: Path, limit: int | None = None) -> dict[str, Any]:
    engine = build_engine(f"sqlite:///{path}")
    try:
        db = Database(engine=engine, clock=FakeClock(T0))
        ingestor = Ingestor(db)
        for index, batch in enumerate(batches(meter_ids_in(db))[:limit]):
            ingestor.ingest(batch, received_at=received_at(index))
        return snapshot(db)
    finally:
        engine.dispose()


def state_of(path: Path) -> dict[str, Any]:
    engine = build_engine(f"sqlite:///{path}")
    try:
        return snapshot(Database(engine=engine, clock=FakeClock(T0)))
    finally:
        engine.dispose()


def run_ingest_process(path: Path, *, kill_after: int | None) -> list[str]:
    """Run the ingest script; with ``kill_after``, SIGKILL it as soon as it reports that many
    committed batches. Returns what it printed."""
    process = subprocess.Popen(
        [sys.executable, "-c", INGEST_SCRIPT, str(path), str(HERE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert process.stdout is not None
    printed = []
    try:
        for line in process.stdout:
            printed.append(line.strip())
            if kill_after is not None and line.strip() == f"committed {kill_after - 1}":
                process.send_signal(signal.SIGKILL)
                break
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        error = process.stderr.read() if process.stderr else ""
        process.stdout.close()
        if process.stderr:
            process.stderr.close()
    if kill_after is None:
        assert process.returncode == 0, error
        assert printed[-1] == "done"
    else:
        assert process.returncode == -signal.SIGKILL
    return printed


def test_a_process_killed_mid_run_and_fed_again_ends_exactly_like_a_clean_run(
    tmp_path: Path,
) -> None:
    base = base_database(tmp_path)
    clean = ingest_in_process(copy_of(base, "clean.sqlite3"))
    crashed = copy_of(base, "crashed.sqlite3")
    total_batches = len(batches(meter_ids_in_file(crashed)))

    opening = {r[:5] for r in state_of(crashed)["readings"]}

    printed = run_ingest_process(crashed, kill_after=5)

    assert "done" not in printed
    committed = {r[:5] for r in state_of(crashed)["readings"]}
    prefixes = [opening | prefix_readings(crashed, n) for n in range(total_batches + 1)]
    assert committed in prefixes[5:], "a batch was left half-written"
    assert committed != prefixes[-1], "the process finished before it was killed"

    run_ingest_process(crashed, kill_after=None)  # a fresh process re-sends everything

    assert state_of(crashed) == clean


def meter_ids_in_file(path: Path) -> list[int]:
    engine = build_engine(f"sqlite:///{path}")
    try:
        return meter_ids_in(Database(engine=engine, clock=FakeClock(T0)))
    finally:
        engine.dispose()


def prefix_readings(path: Path, count: int) -> set[tuple[Any, ...]]:
    """The (meter, generation, measured_at, received_at, total) of the first ``count`` batches,
    as stored (registers with four places)."""
    found: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for index, batch in enumerate(batches(meter_ids_in_file(path))[:count]):
        for r in batch:
            key = (r.meter_id, r.measured_at)
            found.setdefault(key, (r.meter_id, 0, r.measured_at, received_at(index), r.total))
    return set(found.values())


# --- fault injection, in-process, on both databases ---------------------------------------------


class Boom(RuntimeError):  # noqa: N818 - a deliberate, named fault
    pass


def raise_once(monkeypatch: pytest.MonkeyPatch, target: str) -> list[int]:
    """Make ``module.function`` raise on its first call, then behave normally."""
    module_name, name = target.rsplit(".", 1)
    module = sys.modules[module_name]
    original = getattr(module, name)
    calls: list[int] = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise Boom(f"injected fault in {target}")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)
    return calls


@pytest.mark.parametrize(
    "target",
    [
        "meterdesk.ledger.repository.apply_system_rows",  # how ingest posts its deductions
        "meterdesk.ledger.repository.bulk_insert",
        "meterdesk.billing.repository.save_totals",
        # the batch's last write: its readings, carrying the lines the lane priced
        "meterdesk.metering.repository.insert_reading_rows",
    ],
    ids=["ledger-postings", "transfer-insert", "running-totals", "readings-insert"],
)
def test_a_fault_mid_batch_leaves_nothing_and_a_retry_equals_a_clean_run(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    reference = ingest_in_process(copy_of(base_database(tmp_path), "ref.sqlite3"), FAULT_BATCHES)
    db = Database(engine=engine, clock=FakeClock(T0))
    work = batches(build_world(db))[:FAULT_BATCHES]
    ingestor = Ingestor(db)
    for index, batch in enumerate(work[:FAULT_AT]):
        ingestor.ingest(batch, received_at=received_at(index))
    before, counts = snapshot(db), row_counts(db)
    calls = raise_once(monkeypatch, target)

    with pytest.raises(Boom):
        ingestor.ingest(work[FAULT_AT], received_at=received_at(FAULT_AT))

    assert calls, "the fault was never reached"
    assert snapshot(db) == before
    assert row_counts(db) == counts
    for index, batch in list(enumerate(work))[FAULT_AT:]:
        ingestor.ingest(batch, received_at=received_at(index))
    assert snapshot(db) == reference
