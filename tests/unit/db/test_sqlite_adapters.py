"""None and bool reach SQLite through registered adapters (db/engine.py): without them pysqlite
searched for an adapter each time, ≈ 3,300 instructions a parameter, ≈ 9 % of the ingest's.
They must bind exactly as pysqlite binds them unadapted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text

from meterdesk.db.engine import build_engine


def test_none_and_bool_have_registered_adapters() -> None:
    assert (type(None), sqlite3.PrepareProtocol) in sqlite3.adapters
    assert (bool, sqlite3.PrepareProtocol) in sqlite3.adapters


def test_they_bind_as_null_and_integers(tmp_path: Path) -> None:
    engine = build_engine(f"sqlite:///{tmp_path / 'bind.sqlite3'}")
    with engine.begin() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute("CREATE TABLE t (a, b, c)")
        driver.executemany("INSERT INTO t VALUES (?, ?, ?)", [(None, True, False)])
        row = conn.execute(text("SELECT typeof(a), typeof(b), b, typeof(c), c FROM t")).one()
    engine.dispose()
    assert tuple(row) == ("null", "integer", 1, "integer", 0)
