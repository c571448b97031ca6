"""Where ``bench floor`` writes its rows: a fresh SQLite file or a scratch PostgreSQL schema.

The lean loop (:mod:`meterdesk.bench.floor`) is one and the same for both engines; a
:class:`Store` only writes a batch's rows, each engine with its fastest honest means —
executemany in-process on SQLite; on PostgreSQL ``COPY`` for the inserted rows and one statement
over ``unnest`` arrays for each kind of per-batch update — and commits once per batch.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from meterdesk.bench.workload import Workload
from meterdesk.db.bulk import array_parameter

REVENUE = 0  # the revenue account; the wallet of meter i is account i + 1

_READINGS = (
    "CREATE TABLE readings (id INTEGER PRIMARY KEY, meter_id INTEGER NOT NULL, "
    "generation INTEGER NOT NULL, measured_at INTEGER NOT NULL, received_at INTEGER NOT NULL, "
    "register_total INTEGER NOT NULL, sharp INTEGER, peak INTEGER, flat INTEGER, valley INTEGER, "
    "source VARCHAR(20) NOT NULL, band VARCHAR(12), period VARCHAR(7), cost_exact INTEGER, "
    "debit_account_id INTEGER, credit_account_id INTEGER, amount_fen INTEGER, "
    "UNIQUE (meter_id, measured_at, generation))"
)
_SCHEMA = (
    _READINGS,
    "CREATE TABLE meter_state (meter_id INTEGER PRIMARY KEY, measured_at INTEGER NOT NULL, "
    "register_total INTEGER NOT NULL, period VARCHAR(7) NOT NULL, quantity INTEGER NOT NULL, "
    "exact INTEGER NOT NULL, posted_fen INTEGER NOT NULL, postings INTEGER NOT NULL)",
    "CREATE TABLE balances (account_id INTEGER PRIMARY KEY, balance_fen INTEGER NOT NULL)",
    "CREATE TABLE transfers (id INTEGER PRIMARY KEY, idempotency_key VARCHAR(200) NOT NULL "
    "UNIQUE, debit_account_id INTEGER NOT NULL, credit_account_id INTEGER NOT NULL, "
    "amount_fen INTEGER NOT NULL CHECK (amount_fen > 0), reason VARCHAR(40) NOT NULL, "
    "account_id INTEGER NOT NULL, meter_id INTEGER NOT NULL, period_key VARCHAR(7) NOT NULL, "
    "created_at INTEGER NOT NULL)",
    "CREATE INDEX ix_transfers_account ON transfers (account_id)",
)
_BASE = ("meter_id", "generation", "measured_at", "received_at", "register_total", "source")
_PRICED = (
    *_BASE,
    "band",
    "period",
    "cost_exact",
    "debit_account_id",
    "credit_account_id",
    "amount_fen",
)
_TRANSFER = (
    "idempotency_key",
    "debit_account_id",
    "credit_account_id",
    "amount_fen",
    "reason",
    "account_id",
    "meter_id",
    "period_key",
    "created_at",
)
_STATE = (
    "measured_at",
    "register_total",
    "period",
    "quantity",
    "exact",
    "posted_fen",
    "postings",
    "meter_id",
)


def _insert(table: str, columns: Sequence[str], marker: str, verb: str = "INSERT") -> str:
    return (
        f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join([marker] * len(columns))})"
    )


_BULK = _insert("readings", _BASE, "?")
# A reading after its meter's last one is new (the state in memory says so): a plain INSERT, so
# were the state ever wrong the unique index would raise rather than silently drop it. One at or
# before the last (a repeat or a late reading) is left to the unique index: INSERT OR IGNORE.
_INSERT_READING = _insert("readings", _PRICED, "?")
_INSERT_REPEAT = _insert("readings", _BASE, "?", verb="INSERT OR IGNORE")
_INSERT_TRANSFER = _insert("transfers", _TRANSFER, "?")
_UPSERT_STATE = ", ".join(f"{name} = excluded.{name}" for name in _STATE[:-1])
_SAVE_STATE = _insert("meter_state", _STATE, "?") + (
    f" ON CONFLICT (meter_id) DO UPDATE SET {_UPSERT_STATE}"
)
_MOVE_BALANCE = "UPDATE balances SET balance_fen = balance_fen + ? WHERE account_id = ?"

Row = tuple[object, ...]


def scaled(value: Decimal, places: int) -> int:
    return int(value.scaleb(places))


@dataclass
class Batch:
    """The rows one batch writes, in one transaction."""

    readings: list[Row] = field(default_factory=list)  # new: after their meter's last reading
    repeats: list[Row] = field(default_factory=list)  # at or before it: repeats and late ones
    transfers: list[Row] = field(default_factory=list)
    states: list[Row] = field(default_factory=list)  # (*_STATE), upserted
    balances: list[Row] = field(default_factory=list)  # (amount, account): balance += amount


class Store(Protocol):
    """Where the rows go: the only part of the run that differs between the engines."""

    def write(self, batch: Batch) -> None:
        """Write one batch's rows and commit."""

    def bulk(self, rows: list[Row]) -> None:
        """The baseline: insert these ``_BASE`` rows into ``readings`` in one transaction."""

    def one(self, query: str) -> int: ...


class SQLiteStore:
    """A fresh SQLite file: WAL, ``synchronous=FULL``, executemany in-process."""

    def __init__(self, path: Path, workload: Workload) -> None:
        self.conn = conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO balances VALUES (?, ?)", opening_balances(workload))
        conn.execute("COMMIT")

    def write(self, batch: Batch) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT_READING, batch.readings)
        conn.executemany(_INSERT_REPEAT, batch.repeats)
        conn.executemany(_INSERT_TRANSFER, batch.transfers)
        conn.executemany(_SAVE_STATE, batch.states)
        conn.executemany(_MOVE_BALANCE, batch.balances)
        conn.execute("COMMIT")

    def bulk(self, rows: list[Row]) -> None:
        self.conn.execute("BEGIN")
        self.conn.executemany(_BULK, rows)
        self.conn.execute("COMMIT")

    def one(self, query: str) -> int:
        return int(self.conn.execute(query).fetchone()[0])

    def close(self) -> None:
        self.conn.close()


def _postgres_schema() -> list[str]:
    """``_SCHEMA`` on PostgreSQL: the same tables, columns, keys and checks, every integer a
    BIGINT (SQLite's are 64-bit) and the row ids identities (SQLite's ``INTEGER PRIMARY KEY``)."""
    return [
        statement.replace(
            "(id INTEGER PRIMARY KEY", "(id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
        ).replace("INTEGER", "BIGINT")
        for statement in _SCHEMA
    ]


def _copy_sql(table: str, columns: Sequence[str]) -> str:
    return f"COPY {table} ({', '.join(columns)}) FROM STDIN"


def _unnest(columns: Sequence[str], types: Sequence[str]) -> str:
    arrays = ", ".join(f"%s::{kind}[]" for kind in types)
    return f"SELECT * FROM unnest({arrays}) AS u({', '.join(columns)})"  # noqa: S608 - constants


# Duplicates: the readings after their meter's last one (about 82 % of the default workload's
# rows) are new by the state in memory and go by COPY, which cannot skip a conflict: it raises
# on one (the batch fails and the run with it), so a wrong state cannot store a reading twice,
# and a stored count other than the distinct readings' shows it losing one. The readings at or
# before their meter's last one (repeats and late ones) go by one INSERT over arrays with
# ON CONFLICT DO NOTHING: the unique index decides, as INSERT OR IGNORE does on SQLite. Staging
# every reading in a temporary table by COPY to INSERT ... SELECT ... ON CONFLICT from it writes
# each row twice for the sake of the repeats (measured: 1.5 to 4 µs more per reading).
_PG_INSERT_REPEATS = (
    f"INSERT INTO readings ({', '.join(_BASE)}) "
    + _unnest(_BASE, ("bigint",) * 5 + ("text",))
    + " ON CONFLICT DO NOTHING"
)
_PG_SAVE_STATE = (
    f"INSERT INTO meter_state ({', '.join(_STATE)}) "
    + _unnest(
        _STATE, ("bigint", "bigint", "text", "bigint", "bigint", "bigint", "bigint", "bigint")
    )
    + f" ON CONFLICT (meter_id) DO UPDATE SET {_UPSERT_STATE}"
)
_PG_MOVE_BALANCES = (
    "UPDATE balances SET balance_fen = balance_fen + u.amount "
    "FROM unnest(%s::bigint[], %s::bigint[]) AS u(amount, account_id) "
    "WHERE balances.account_id = u.account_id"
)


def _columns(rows: list[Row]) -> list[str | list[Any]]:
    """The rows' columns as PostgreSQL array literals, one ``%s::type[]`` parameter each
    (:func:`meterdesk.db.bulk.array_parameter`, as meterdesk's own bulk updates send them:
    psycopg adapting a list element by element took longer than the server's work)."""
    return [array_parameter(column) for column in zip(*rows, strict=True)]


class PostgresStore:
    """A fresh scratch schema (``floor_<design>_<pid>_<random>``), dropped by :meth:`close`;
    nothing outside it is touched. psycopg 3 directly, one transaction per batch."""

    def __init__(self, url: str, design: str, workload: Workload) -> None:
        self.conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
        self.schema = f"floor_{design}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.conninfo, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
        try:
            self.conn = conn = psycopg.connect(self.conninfo)
        except BaseException:
            self._drop()
            raise
        try:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            for statement in _postgres_schema():
                conn.execute(statement)
            self._copy("balances", ("account_id", "balance_fen"), opening_balances(workload))
            conn.commit()
            conn.execute("ANALYZE balances")  # as a long-lived table would be; not timed
            conn.commit()
        except BaseException:
            self.close()
            raise

    def _copy(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        if not rows:
            return
        with self.conn.cursor() as cursor, cursor.copy(_copy_sql(table, columns)) as copy:
            for row in rows:
                copy.write_row(row)

    def write(self, batch: Batch) -> None:
        conn = self.conn
        self._copy("readings", _PRICED, batch.readings)
        if batch.repeats:
            conn.execute(_PG_INSERT_REPEATS, _columns(batch.repeats))
        self._copy("transfers", _TRANSFER, batch.transfers)
        if batch.states:
            conn.execute(_PG_SAVE_STATE, _columns(batch.states))
        if batch.balances:
            conn.execute(_PG_MOVE_BALANCES, _columns(batch.balances))
        conn.commit()

    def bulk(self, rows: list[Row]) -> None:
        self._copy("readings", _BASE, rows)
        self.conn.commit()

    def one(self, query: str) -> int:
        found = self.conn.execute(query).fetchone()
        self.conn.commit()
        assert found is not None
        return int(found[0])

    def close(self) -> None:
        self.conn.close()
        self._drop()

    def _drop(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )


def opening_balances(workload: Workload) -> list[Row]:
    rows: list[Row] = [(REVENUE, 0)]
    return rows + [(m.index + 1, scaled(m.credit, 2)) for m in workload.meters]


@contextmanager
def open_store(
    design: str, workload: Workload, folder: Path, database_url: str | None
) -> Iterator[Store]:
    store: SQLiteStore | PostgresStore = (
        SQLiteStore(folder / f"{design}.sqlite3", workload)
        if database_url is None
        else PostgresStore(database_url, design, workload)
    )
    try:
        yield store
    finally:
        store.close()
