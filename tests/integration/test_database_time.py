"""``bench ingest``'s split of the database's own time: every bulk insert, update and raw read
is reported while observed (labelled by table), statements through SQLAlchemy and commits are
counted, and nothing is reported once the observation ends."""

from __future__ import annotations

import pytest
from sqlalchemy import BigInteger, Column, Engine, Integer, MetaData, Table, select

from meterdesk.bench.database_time import DatabaseTime
from meterdesk.db.bulk import bulk_insert, bulk_update, observed, raw_rows

pytestmark = pytest.mark.integration

_metadata = MetaData()
counters = Table(
    "timed_counters",
    _metadata,
    Column("id", Integer, primary_key=True),
    Column("value", BigInteger, nullable=False),
)
other_counters = Table("other_counters", _metadata, Column("id", Integer, primary_key=True))


def test_every_bulk_call_is_reported_with_its_table_and_a_duration(engine: Engine) -> None:
    _metadata.create_all(engine)
    seen: list[tuple[str, float]] = []
    with observed(lambda what, seconds: seen.append((what, seconds))), engine.begin() as conn:
        bulk_insert(conn, counters, ("id", "value"), [(1, 10), (2, 20)])
        bulk_update(conn, counters, ("id",), ("value",), [(11, 1)])
        rows = raw_rows(
            conn,
            "WITH wanted(id) AS (SELECT 1) SELECT c.value FROM wanted "
            "JOIN timed_counters c ON c.id = wanted.id",
        )
    assert rows == [(11,)]
    assert [what for what, _ in seen] == [
        "insert timed_counters",
        "update timed_counters",
        "read timed_counters",  # the stored table, not the query's own WITH name
    ]
    assert all(seconds >= 0 for _, seconds in seen)
    with observed(lambda what, seconds: seen.append((what, seconds))), engine.begin() as conn:
        raw_rows(
            conn,
            "WITH wanted(id) AS (SELECT 1) SELECT c.value FROM wanted "
            "JOIN timed_counters c ON c.id = wanted.id UNION ALL SELECT 1 FROM other_counters "
            "WHERE 1 = 0 UNION ALL SELECT value FROM timed_counters WHERE 1 = 0",
        )
    # A union is labelled by what each part reads, each table once (billing.lines reads both
    # stores of priced lines this way).
    assert seen[-1][0] == "read timed_counters + other_counters"
    del seen[-1]
    with engine.begin() as conn:  # no longer observed
        bulk_insert(conn, counters, ("id", "value"), [(3, 30)])
    assert len(seen) == 3


def test_the_split_counts_other_statements_and_each_commit(engine: Engine) -> None:
    _metadata.create_all(engine)
    split = DatabaseTime()
    with split.watching(engine):
        for batch in range(3):
            with engine.begin() as conn:
                bulk_insert(conn, counters, ("id", "value"), [(batch, batch)])
                conn.execute(select(counters.c.value)).all()
            split.committed()
    assert split.calls["insert timed_counters"] == 3
    assert split.calls["commit"] == 3
    assert split.calls["other statements"] >= 3
    assert split.total_s == pytest.approx(sum(split.seconds.values()))
    with engine.begin() as conn:  # the engine's hooks are gone with the observation
        conn.execute(select(counters.c.value)).all()
    split.committed()
    assert split.calls["commit"] == 3
