"""SQLite writers of one process take turns first come, first served, so a writer that commits
and begins again at once (the ingest under load) cannot keep the command executor or a desk
recharge waiting; a writer kept waiting too long goes ahead as before; PostgreSQL has no turns."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import create_engine

from meterdesk.db.database import WriterTurns, writer_turns


def _wait_until_queued(turns: WriterTurns, count: int, timeout_s: float = 5.0) -> None:
    give_up = time.monotonic() + timeout_s
    while len(turns._waiting) < count:
        assert time.monotonic() < give_up, "timed out"
        time.sleep(0.005)


def test_waiting_writers_get_their_turn_in_arrival_order() -> None:
    turns, order, threads = WriterTurns(), [], []
    holder = turns.turn()
    holder.__enter__()

    def writer(name: str) -> None:
        with turns.turn():
            order.append(name)

    for name in ("executor", "recharge", "ingest"):
        thread = threading.Thread(target=writer, args=(name,))
        thread.start()
        threads.append(thread)
        _wait_until_queued(turns, len(threads))  # each queued before the next starts
    holder.__exit__(None, None, None)
    for thread in threads:
        thread.join(5)
    assert order == ["executor", "recharge", "ingest"]


def test_a_writer_kept_waiting_too_long_goes_ahead_without_blocking_the_queue() -> None:
    turns, seen = WriterTurns(), []
    holder = turns.turn()
    holder.__enter__()
    with turns.turn(timeout_s=0.05):
        seen.append("went ahead")  # SQLite's own busy handler decides from here
    holder.__exit__(None, None, None)
    with turns.turn(timeout_s=1.0):
        seen.append("next turn")
    assert seen == ["went ahead", "next turn"]


def test_only_sqlite_engines_have_turns_one_queue_per_engine(tmp_path: Path) -> None:
    sqlite = create_engine(f"sqlite:///{tmp_path}/a.sqlite3")
    other = create_engine(f"sqlite:///{tmp_path}/b.sqlite3")
    postgres = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never connects
    assert writer_turns(sqlite) is writer_turns(sqlite) is not None
    assert writer_turns(other) is not writer_turns(sqlite)
    assert writer_turns(postgres) is None
