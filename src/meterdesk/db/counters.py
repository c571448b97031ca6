"""Change counters: a cheap way for long-lived caches to notice that configuration changed.

A use case that changes what the ingest pipeline caches (meters, meter assignments, account
billing modes) bumps the counter in the same transaction; each ingest batch reads the counter
(one primary-key lookup) and drops its cache when the value moved. Counters only go up.
"""

from __future__ import annotations

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
    builder = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = builder(change_counters).values(name=name, value=1)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["name"], set_={"value": change_counters.c.value + 1}
        )
    )


def read(conn: Connection, name: str = METER_CONFIG) -> int:
    found = conn.execute(
        select(change_counters.c.value).where(change_counters.c.name == name)
    ).scalar_one_or_none()
    return int(found or 0)
