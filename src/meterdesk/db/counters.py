"""Change markers: a cheap way for long-lived caches to notice that configuration changed.

A use case that changes what the ingest pipeline caches (meters, meter assignments, control
policies) bumps the marker in the same transaction; each ingest batch reads the marker (one
primary-key lookup) and drops its cache when the value differs from the one it loaded under.
A bump writes a fresh random value, not "old + 1": a bump that was rolled back (seen by a cache
inside the failed transaction) can then never be matched by a later committed bump, so a cache
filled from uncommitted rows is always dropped.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    event,
    inspect,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from meterdesk.db.metadata import metadata

change_counters = Table(
    "change_counters",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

METER_CONFIG = "meter_config"
CONTROL_POLICY = "control_policy"


def bump(conn: Connection, name: str = METER_CONFIG) -> None:
    value = secrets.randbits(62) + 1
    builder = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = builder(change_counters).values(name=name, value=value)
    conn.execute(statement.on_conflict_do_update(index_elements=["name"], set_={"value": value}))


def read(conn: Connection, name: str = METER_CONFIG) -> int:
    found = conn.execute(
        select(change_counters.c.value).where(change_counters.c.name == name)
    ).scalar_one_or_none()
    return int(found or 0)


# -- writes to the tables the SQLite ingest keeps between batches ------------------------------
#
# The ingest keeps the cursors, running totals and balances it wrote for its next batch
# (billing/ingest_state.py). Its first proof that they are still current, "nobody committed
# anything since", breaks whenever anything at all commits in between: in a running platform the
# command executor, the notification sender or a poll batch commit between nearly every two
# MQTT group commits, so the kept values were never used there. These triggers give a narrower
# proof that no code path can forget: the first row written to one of these tables after the
# ingest cleared the marker — by any connection of any process — sets the marker's value to a
# fresh random one and raises its flag (random, as ``bump``: a write rolled back leaves the old
# value, and a later one never comes back to a value seen). While the flag is up, further writes
# only test it: the trigger's write happens once per transaction, not once per row (its cost per
# row was measured at ≈ 30 k instructions per reading for the ingest's own writes).
# SQLite only; on PostgreSQL the ingest keeps nothing (its cursor read is the row lock).

kept_state_marker = Table(
    "kept_state_marker",
    metadata,
    Column("id", Integer, primary_key=True),  # one row, id 1
    Column("value", BigInteger, nullable=False),
    Column("written", Boolean, nullable=False),  # a kept table was written since it was cleared
)

KEPT_TABLES = ("meter_cursors", "period_totals", "ledger_accounts")
_OPERATIONS = ("INSERT", "UPDATE", "DELETE")


def _trigger_name(table: str, operation: str) -> str:
    return f"trg_{table}_{operation.lower()}_marks"


TRIGGER_NAMES = tuple(_trigger_name(t, o) for t in KEPT_TABLES for o in _OPERATIONS)


def install_kept_state_marker(conn: Connection) -> None:
    """Create the marker row and its triggers where they are missing (SQLite; nothing
    elsewhere). Run after the tables exist: by ``create_all`` and by every migration."""
    if conn.dialect.name != "sqlite":
        return
    conn.exec_driver_sql(
        "INSERT OR IGNORE INTO kept_state_marker (id, value, written) VALUES (1, random(), 1)"
    )
    for table in KEPT_TABLES:
        for operation in _OPERATIONS:
            conn.exec_driver_sql(
                f"CREATE TRIGGER IF NOT EXISTS {_trigger_name(table, operation)} "  # noqa: S608
                f"AFTER {operation} ON {table} "
                "WHEN (SELECT written FROM kept_state_marker WHERE id = 1) = 0 BEGIN "
                "UPDATE kept_state_marker SET value = random(), written = 1 WHERE id = 1; "
                "END"
            )


def kept_state_marker_installed(conn: Connection) -> bool:
    """Whether every trigger of the marker exists (a database created before them has none:
    then the ingest keeps only what its first proof allows)."""
    if conn.dialect.name != "sqlite":
        return False
    names = ", ".join(f"'{name}'" for name in TRIGGER_NAMES)
    found = conn.exec_driver_sql(
        f"SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN ({names})"  # noqa: S608 - constants
    ).scalar_one()
    return int(found) == len(TRIGGER_NAMES)


def clear_kept_state_marker(conn: Connection) -> None:
    """Lower the flag (the ingest, after its own writes, inside its transaction): the next
    write to a kept table by anyone sets a new value."""
    conn.exec_driver_sql("UPDATE kept_state_marker SET written = 0 WHERE id = 1")


def read_kept_state_marker(conn: Connection) -> int | None:
    """The marker's value while its flag is down; None when the flag is up (a kept table was
    written since the ingest cleared it) or the row is missing: then it proves nothing."""
    found = conn.exec_driver_sql(
        "SELECT value, written FROM kept_state_marker WHERE id = 1"
    ).one_or_none()
    return None if found is None or found[1] else int(found[0])


def kept_tables_exist(conn: Connection) -> bool:
    return set(KEPT_TABLES) <= set(inspect(conn).get_table_names())


@event.listens_for(metadata, "after_create")
def _after_create(_target: MetaData, connection: Connection, **_: Any) -> None:
    # create_all (tests, benches): once every kept table exists (a subset may have been created)
    if connection.dialect.name == "sqlite" and kept_tables_exist(connection):
        install_kept_state_marker(connection)
