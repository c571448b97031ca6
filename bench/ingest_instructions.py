"""Instructions per reading of the ingest, counted by callgrind: a figure the shared, noisy
machines cannot move (docs/decisions/0004-p1-floor.md, "Sitting 15").

    .venv/bin/python bench/ingest_instructions.py            # both runs, then the figure
    .venv/bin/python bench/ingest_instructions.py --recording-outbox

runs the ``bench ingest`` workload (seed 1; by default 1,000 meters x 10 readings in batches of
250, so about one reading per meter per batch) twice under ``valgrind --tool=callgrind`` with
``PYTHONHASHSEED=0``: once only building the world (``--mode setup``), once building it and
ingesting every batch through one ``Ingestor`` on SQLite (``--mode ingest``). Instructions per
reading = (ingest - setup) / distinct readings. Two runs of the same code agree within 0.1 %.
``--uplink`` sends the same kind of work through the MQTT ingest's store instead
(:class:`UplinkStore`, as ``bench mqtt`` does but without a broker): the workload's readings as
``bench mqtt``'s gateway reports (10 readings each, HISTORY re-sends and late reports included),
parsed on arrival as the service does (parsing counted), committed ``--batch`` / 10 reports at
a time; per reading is then per distinct reading, re-sends included in the work.
``--writes-between`` has another connection commit an unrelated row before each commit,
as the command executor and the notification sender do in a running platform (with
``--uplink``). ``--recording-outbox`` ingests with the control loop's commands and messages only remembered:
the difference to a plain run is what writing them costs. The callgrind files stay in
``--out`` for ``callgrind_annotate`` (C-level: SQLite, pysqlite, decimal; Python code shows as
the interpreter loop, so find Python hot spots with py-spy or cProfile first).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from sqlalchemy import Engine, text

from meterdesk.bench import setup
from meterdesk.bench.mqtt import MqttBench, add_gateways, streams_of
from meterdesk.bench.workload import build
from meterdesk.billing.control_send import RecordingOutbox
from meterdesk.billing.ingest import Ingestor
from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.devices.mqtt_rows import receive
from meterdesk.devices.mqtt_store import UplinkStore
from meterdesk.shared.runtime import tune_for_long_running
from meterdesk.shared.time import system_clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("setup", "ingest"), help="one run (under valgrind)")
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--recording-outbox", action="store_true")
    parser.add_argument("--uplink", action="store_true", help="through the MQTT ingest's store")
    parser.add_argument(
        "--writes-between",
        action="store_true",
        help="another connection commits an unrelated row between batches, as the command "
        "executor and the notification sender do in a running platform",
    )
    parser.add_argument(
        "--no-kept-state",
        action="store_true",
        help="read cursors, totals and balances back every batch (billing/ingest_state.py off)",
    )
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "callgrind")
    args = parser.parse_args()
    if args.mode is None:
        measure(args)
    else:
        if args.uplink:
            readings = run_uplink(
                args.mode,
                args.meters,
                args.rounds,
                args.batch,
                not args.no_kept_state,
                args.writes_between,
            )
        else:
            readings = run(
                args.mode,
                args.meters,
                args.rounds,
                args.batch,
                args.recording_outbox,
                not args.no_kept_state,
            )
        print(f"{args.mode}: {readings} distinct readings", file=sys.stderr)


def run(
    mode: str, meters: int, rounds: int, batch_size: int, recording: bool, keep_state: bool
) -> int:
    """Build the world on a fresh SQLite file and, for ``ingest``, ingest every batch."""
    workload = build(seed=1, meters=meters, rounds=rounds, batch_size=batch_size)
    tune_for_long_running()  # as bench ingest and every long-running process do
    with tempfile.TemporaryDirectory(prefix="meterdesk-instructions-") as folder:
        engine = build_engine(f"sqlite:///{folder}/ingest.sqlite3")
        prepared = setup.prepare(Database(engine, system_clock), workload)
        batches = [[prepared.incoming(item) for item in batch] for batch in workload.batches]
        outbox = RecordingOutbox() if recording else None
        pipeline = Ingestor(Database(engine, system_clock), outbox, keep_state=keep_state)
        if mode == "ingest":
            for batch in batches:
                pipeline.ingest(batch)
        engine.dispose()
    return len(workload.truth)


def run_uplink(
    mode: str, meters: int, rounds: int, batch_size: int, keep_state: bool, writes_between: bool
) -> int:
    """Build the world and ``bench mqtt``'s reports; for ``ingest``, parse and commit them."""
    workload = build(seed=1, meters=meters, rounds=rounds)
    tune_for_long_running()
    with tempfile.TemporaryDirectory(prefix="meterdesk-instructions-") as folder:
        engine = build_engine(f"sqlite:///{folder}/uplink.sqlite3")
        db = Database(engine, system_clock)
        setup.prepare(db, workload)
        bench = MqttBench(engine, workload, ("127.0.0.1", 1883), 1, 1, product_key="bench")
        add_gateways(bench)
        messages = [message for stream in streams_of(bench) for message in stream]
        store = UplinkStore(db)
        if not keep_state:
            store.ingestor = Ingestor(db, keep_state=False)
        if mode == "ingest":
            per_commit = max(1, batch_size // 10)
            elsewhere = build_engine(f"sqlite:///{folder}/uplink.sqlite3")
            for start in range(0, len(messages), per_commit):
                if writes_between:
                    _write_elsewhere(elsewhere, start)
                store.commit(
                    [
                        receive(f"data/up/bench/{m.serial}", m.payload, 0.0)
                        for m in messages[start : start + per_commit]
                    ]
                )
            elsewhere.dispose()
        engine.dispose()
    return len(workload.truth)


def _write_elsewhere(engine: Engine, n: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("INSERT OR REPLACE INTO change_counters (name, value) VALUES ('elsewhere', :n)"),
            {"n": n},
        )


def measure(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    totals, readings = {}, 0
    for mode in ("setup", "ingest"):
        out = args.out / f"ingest-instructions.{mode}.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            f"--mode={mode}",
            f"--meters={args.meters}",
            f"--rounds={args.rounds}",
            f"--batch={args.batch}",
            *(["--recording-outbox"] if args.recording_outbox else []),
            *(["--uplink"] if args.uplink else []),
            *(["--no-kept-state"] if args.no_kept_state else []),
            *(["--writes-between"] if args.writes_between else []),
        ]
        done = subprocess.run(  # noqa: S603 - our own interpreter and script
            command,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
            check=True,
        )
        readings = int(re.findall(r"(\d+) distinct readings", done.stderr)[-1])
        summary = re.search(r"^summary: (\d+)", out.read_text(), re.MULTILINE)
        assert summary is not None, f"no summary in {out}"
        totals[mode] = int(summary.group(1))
        print(f"{mode}: {totals[mode]:,} instructions ({out})")
    per_reading = (totals["ingest"] - totals["setup"]) / readings
    print(f"{per_reading / 1000:.1f} k instructions per reading ({readings:,} readings)")


if __name__ == "__main__":
    main()
