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

from sqlalchemy import BigInteger, Column, Connection, String, Table, select
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
