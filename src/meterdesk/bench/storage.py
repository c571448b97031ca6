"""What a database holds, in bytes: tables with their indexes (and TOAST on PostgreSQL), so
``bench ingest`` can report what each accepted reading costs on disk (target P7 counts stored
bytes per reading) — a figure, like the bytes written, that the machine's load does not move."""

from __future__ import annotations

import contextlib
import sqlite3

from sqlalchemy import Engine, text


def stored_bytes(engine: Engine) -> int:
    """Bytes of every table and index of the engine's database (SQLite: the pages in use,
    after a checkpoint moved the write-ahead log into the file) or schema (PostgreSQL: the
    relations of the current schema, ``pg_total_relation_size``)."""
    if engine.dialect.name == "sqlite":
        # Its own connection: the engine's begin a transaction on every use, and a checkpoint
        # cannot run inside one.
        path = engine.url.database
        assert path, "an SQLite file, not memory"
        with contextlib.closing(sqlite3.connect(path)) as raw:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            pages = raw.execute("PRAGMA page_count").fetchone()[0]
            free = raw.execute("PRAGMA freelist_count").fetchone()[0]
            size = raw.execute("PRAGMA page_size").fetchone()[0]
        return (int(pages) - int(free)) * int(size)
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')"
            )
        ).scalar_one()
        return int(found)
