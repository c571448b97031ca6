"""``bench ingest`` reports the bytes each reading adds to the database (P7's figure): the
measure must count tables and their indexes, on SQLite (including what still sits in the
write-ahead log) and on PostgreSQL (the test's own schema only)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from meterdesk.bench.storage import stored_bytes

pytestmark = pytest.mark.integration


def test_stored_bytes_grow_by_the_rows_and_their_index(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"))
    empty = stored_bytes(engine)
    with engine.begin() as conn:
        # distinct values: PostgreSQL folds equal index keys into one entry
        conn.execute(
            text("INSERT INTO t (id, v) VALUES (:id, :v)"),
            [{"id": n, "v": f"{n:04d}" + "x" * 96} for n in range(1000)],
        )
    rows = stored_bytes(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE INDEX ix_t_v ON t (v)"))
    indexed = stored_bytes(engine)

    # 1,000 rows of about 105 bytes, with each database's row overhead, primary key and page
    # bookkeeping (PostgreSQL adds free-space and visibility maps), in whole pages
    assert 100_000 <= rows - empty < 300_000
    assert 100_000 <= indexed - rows < 300_000  # the index holds every value again
