"""Engines for the embedded default (SQLite) and PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL``: a committed recharge or deduction survives a
power cut. Transactions start with ``BEGIN IMMEDIATE`` so a writer takes the write lock up front
instead of failing half-way when another writer got there first.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from meterdesk.db.functions import SQLITE_CASEFOLD, python_casefold

# pysqlite adapts every parameter that is not exactly an int, float, str or bytearray: it looks
# for a registered adapter, then asks its PrepareProtocol type and the value for __adapt__ and
# __conform__, and the type's miss raises and clears an AttributeError — ≈ 3,300 instructions a
# parameter. None (nullable columns) and bool (flags) are ≈ 12 parameters of every reading the
# ingest writes, ≈ 9 % of its instructions. Registered, each is one dict lookup and one C call,
# and binds exactly as before: None as NULL, a bool as the integer 0 or 1. (The registry is the
# process's: any sqlite3 user here binds these the same way it did.)
_NOTHING: dict[None, None] = {}
sqlite3.register_adapter(type(None), _NOTHING.get)  # .get(None) is None, without a Python frame
sqlite3.register_adapter(bool, int)


def build_engine(url: str, *, echo: bool = False) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, echo=echo)
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _sqlite_engine(url: str, *, echo: bool) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit BEGIN is DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
        dbapi_connection.create_function(SQLITE_CASEFOLD, 1, python_casefold, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Readers (Database.read) take no write lock, so a long statement read never holds up
        # billing; WAL gives them a consistent snapshot.
        read_only = connection.get_execution_options().get("meterdesk_read_only", False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
