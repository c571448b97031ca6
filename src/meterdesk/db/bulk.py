"""Fast bulk reads and writes for the hot paths (ingest, postings).

Writes: one ``executemany`` per table per batch, with values already converted to what the
column stores (integers for :class:`~meterdesk.db.types.Scaled` and
:class:`~meterdesk.db.types.Instant`), compiled once per statement shape, so no per-value type
processing runs. On PostgreSQL, large inserts use ``COPY``.

Updates of many rows on PostgreSQL run as one ``UPDATE … FROM unnest(arrays)`` statement: an
``executemany`` of single-row updates costs one statement execution (and, without a pipeline, one
round trip) per row, which made the balance, cursor and running-total updates of a batch a large
part of its time there. SQLite runs statements in-process, so its ``executemany`` stays.

Reads: :func:`raw_rows` runs a textual query and returns plain tuples of what the database
stores (integers, strings) — the callers convert only what they need.

:func:`observed` lets a benchmark see how long the database itself takes in these calls (the
floor a pipeline built on this schema cannot go below); unobserved, it costs one check per
statement, not per row.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Connection,
    Dialect,
    String,
    Table,
    TypeDecorator,
    and_,
    bindparam,
    insert,
    update,
)
from sqlalchemy.types import TypeEngine

COPY_THRESHOLD = 200
UNNEST_THRESHOLD = 20

Observer = Callable[[str, float], None]  # (what, seconds), e.g. ("insert readings", 0.006)
_observer: Observer | None = None


@contextmanager
def observed(observer: Observer) -> Iterator[None]:
    """Report every bulk insert, update and raw read made meanwhile, in this process, to
    ``observer``. For benchmarks (single-threaded); not nested."""
    global _observer  # one switch for the whole process: for the bench only
    _observer = observer
    try:
        yield
    finally:
        _observer = None


def _report(what: str, started: float) -> None:
    if _observer is not None:
        _observer(what, time.perf_counter() - started)


def _driver(conn: Connection) -> Any:
    return conn.connection.driver_connection


@lru_cache(maxsize=256)
def _insert_sql(
    dialect: Dialect, table: Table, columns: tuple[str, ...]
) -> tuple[str, tuple[int, ...] | None]:
    compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
    positions = compiled.positiontup
    order = tuple(columns.index(name) for name in positions) if positions is not None else None
    return str(compiled), order


@lru_cache(maxsize=256)
def _update_sql(
    dialect: Dialect, table: Table, keys: tuple[str, ...], values: tuple[str, ...]
) -> tuple[str, tuple[int, ...] | None]:
    # Values are passed straight to the driver, so the bind parameters need no types.
    statement = (
        update(table)
        .where(and_(*(table.c[k] == bindparam(f"k_{k}") for k in keys)))
        .values({v: bindparam(f"v_{v}") for v in values})
    )
    compiled = statement.compile(dialect=dialect)
    positions = compiled.positiontup
    param_names = [f"v_{v}" for v in values] + [f"k_{k}" for k in keys]
    order = tuple(param_names.index(name) for name in positions) if positions is not None else None
    return str(compiled), order


def _arrange(
    rows: Sequence[tuple[Any, ...]], order: tuple[int, ...] | None, names: Sequence[str]
) -> Sequence[Any]:
    if order is None:
        return [dict(zip(names, row, strict=True)) for row in rows]
    if order == tuple(range(len(order))):
        return rows
    return [tuple(row[i] for i in order) for row in rows]


def bulk_insert(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    if not rows:
        return
    started = time.perf_counter()
    raw = _driver(conn)
    if conn.dialect.name == "postgresql" and len(rows) >= COPY_THRESHOLD:
        _copy(raw, table, columns, rows)
    else:
        sql, order = _insert_sql(conn.dialect, table, tuple(columns))
        cursor = raw.cursor()
        try:
            cursor.executemany(sql, _arrange(rows, order, columns))
        finally:
            cursor.close()
    _report(f"insert {table.name}", started)


def bulk_update(
    conn: Connection,
    table: Table,
    keys: Sequence[str],
    values: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """``UPDATE table SET values WHERE keys`` for each row; a row is (*values, *keys), stored forms."""
    if not rows:
        return
    started = time.perf_counter()
    if conn.dialect.name == "postgresql" and len(rows) >= UNNEST_THRESHOLD:
        _update_from_arrays(conn, table, tuple(keys), tuple(values), rows)
    else:
        sql, order = _update_sql(conn.dialect, table, tuple(keys), tuple(values))
        names = [f"v_{v}" for v in values] + [f"k_{k}" for k in keys]
        cursor = _driver(conn).cursor()
        try:
            cursor.executemany(sql, _arrange(rows, order, names))
        finally:
            cursor.close()
    _report(f"update {table.name}", started)


@lru_cache(maxsize=256)
def _unnest_sql(
    dialect: Dialect, table: Table, keys: tuple[str, ...], values: tuple[str, ...]
) -> str:
    """``UPDATE t SET v = u.c0, … FROM unnest(%s::type[], …) AS u(c0, …) WHERE t.k = u.cN``;
    one array parameter per column, in (*values, *keys) order."""
    quote = dialect.identifier_preparer.quote
    names = (*values, *keys)
    arrays = ", ".join(f"%s::{_array_type(table.c[name].type, dialect)}[]" for name in names)
    aliases = ", ".join(f"c{i}" for i in range(len(names)))
    target = dialect.identifier_preparer.format_table(table)
    assignments = ", ".join(f"{quote(name)} = u.c{i}" for i, name in enumerate(values))
    matches = " AND ".join(
        f"{target}.{quote(name)} = u.c{len(values) + i}" for i, name in enumerate(keys)
    )
    return (
        f"UPDATE {target} SET {assignments} "  # noqa: S608 - identifiers from the table only
        f"FROM unnest({arrays}) AS u({aliases}) WHERE {matches}"
    )


def _array_type(column_type: TypeEngine[Any], dialect: Dialect) -> str:
    """The element type of the parameter array: strings without their length, because an
    explicit cast to ``varchar(n)`` cuts a longer value silently, while the column itself refuses
    it as the one-row-per-statement path does."""
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    if isinstance(column_type, String):
        return "text"
    return str(column_type.compile(dialect=dialect))


def _update_from_arrays(
    conn: Connection,
    table: Table,
    keys: tuple[str, ...],
    values: tuple[str, ...],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    # Later rows win, as they would in an executemany: keep one row per key, the last one.
    width = len(values)
    unique = list({tuple(row[width:]): row for row in rows}.values())
    columns = [array_parameter(column) for column in zip(*unique, strict=True)]
    cursor = _driver(conn).cursor()
    try:
        cursor.execute(_unnest_sql(conn.dialect, table, keys, values), columns)
    finally:
        cursor.close()


def array_parameter(column: tuple[Any, ...]) -> str | list[Any]:
    """One column of an unnest UPDATE as a PostgreSQL array literal (``{1,NULL,"a \\"b\\""}``),
    which the ``%s::type[]`` cast parses on the server. psycopg adapts a Python list element by
    element, which took a third of the statement's time for a batch's cursor, running-total and
    balance updates (2,000 rows × 8 columns: 15 ms as lists, 10–12 ms as literals). A column
    holding anything but None, bool, int or str goes as a list, adapted by psycopg as before."""
    parts = []
    for value in column:
        if value is None:
            parts.append("NULL")
        elif value is True or value is False:
            parts.append("t" if value else "f")
        elif type(value) is int:
            parts.append(str(value))
        elif type(value) is str:
            parts.append('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            return list(column)
    return "{" + ",".join(parts) + "}"


_NAME = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_SOURCE = re.compile(r"\b(?:FROM|JOIN)\s+(\w+)", re.IGNORECASE)
_COMMON_TABLE = re.compile(r"(?:WITH|,)\s+(\w+)\s*(?:\([^)]*\))?\s+AS\s*\(", re.IGNORECASE)


_UNION = re.compile(r"\bUNION(?:\s+ALL)?\b", re.IGNORECASE)


def _first_table(sql: str) -> str:
    """The first stored table each part of a query's UNION reads (not one of its own WITH
    names), to label it: ``charge_lines + readings`` for a read of both lines' stores."""
    own = set(_COMMON_TABLE.findall(sql))
    names: list[str] = []
    for part in _UNION.split(sql):
        name = next((name for name in _SOURCE.findall(part) if name not in own), None)
        if name is not None and name not in names:
            names.append(name)
    return " + ".join(names) or "?"


def raw_rows(conn: Connection, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """A query's rows as stored (no type processing), straight from the driver. ``:name``
    placeholders take scalars, or lists/sets/tuples that expand into an IN list.

    On PostgreSQL a long list of integers (ids) goes as one array, ``IN (SELECT
    unnest(%s::bigint[]))``: a list of 2,000 parameters cost psycopg an adaptation each and the
    server a parse and plan of 2,000 constants on every batch."""
    args: list[Any] = []
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    arrays = conn.dialect.name == "postgresql"

    def place(match: re.Match[str]) -> str:
        value = params[match.group(1)]
        if isinstance(value, list | tuple | set | frozenset):
            values = list(value)
            if arrays and len(values) >= UNNEST_THRESHOLD and all(type(v) is int for v in values):
                args.append("{" + ",".join(map(str, values)) + "}")
                return "(SELECT unnest(%s::bigint[]))"
            args.extend(values)
            return "(" + ", ".join([marker] * len(values)) + ")"
        args.append(value)
        return marker

    started = time.perf_counter()
    statement = _NAME.sub(place, sql)
    cursor = _driver(conn).cursor()
    try:
        cursor.execute(statement, args)
        rows: list[tuple[Any, ...]] = cursor.fetchall()
    finally:
        cursor.close()
    if _observer is not None:
        _report(f"read {_first_table(sql)}", started)
    return rows


def _copy(raw: Any, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    column_list = ", ".join(f'"{name}"' for name in columns)
    with (
        raw.cursor() as cursor,
        cursor.copy(f'COPY "{table.name}" ({column_list}) FROM STDIN') as copy,
    ):
        for row in rows:
            copy.write_row(row)
