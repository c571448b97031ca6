"""Fast bulk writes for the hot paths (ingest, postings).

One ``executemany`` per table per batch, with values already converted to what the column stores
(integers for :class:`~meterdesk.db.types.Scaled` and :class:`~meterdesk.db.types.Instant`), so
no per-value type processing runs. On PostgreSQL, large batches use ``COPY``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table, insert

COPY_THRESHOLD = 200


def bulk_insert(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
    raw = conn.connection.driver_connection
    if conn.dialect.name == "postgresql" and len(rows) >= COPY_THRESHOLD:
        _copy(raw, table, columns, rows)
        return
    statement = insert(table).compile(dialect=conn.dialect, column_keys=list(columns))
    sql = str(statement)
    positions = statement.positiontup
    if positions is not None:  # positional paramstyle: reorder our tuples to the SQL's order
        index = {name: i for i, name in enumerate(columns)}
        order = [index[name] for name in positions]
        params: Sequence[Any] = [tuple(row[i] for i in order) for row in rows] if order != list(range(len(columns))) else rows
    else:
        params = [dict(zip(columns, row, strict=True)) for row in rows]
    cursor = raw.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(sql, params)
    finally:
        cursor.close()


def _copy(raw: Any, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    column_list = ", ".join(f'"{name}"' for name in columns)
    with raw.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({column_list}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row(row)
