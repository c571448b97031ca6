"""Bulk updates (``db.bulk.bulk_update``) behave like one UPDATE per row on both databases —
also above the size where PostgreSQL switches to a single ``UPDATE … FROM unnest(…)``."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    select,
)

from meterdesk.db.bulk import UNNEST_THRESHOLD, bulk_insert, bulk_update, raw_rows

pytestmark = pytest.mark.integration

_metadata = MetaData()
items = Table(
    "bulk_items",
    _metadata,
    Column("id", Integer, primary_key=True),
    Column("part", String(7), primary_key=True),
    Column("amount", BigInteger, nullable=False),
    Column("note", String(80), nullable=True),
    Column("active", Boolean, nullable=False),
    CheckConstraint("amount >= 0", name="bulk_items_not_negative"),
)
COLUMNS = ("id", "part", "amount", "note", "active")


def _stored(engine: Engine) -> dict[tuple[int, str], tuple[int, str | None, bool]]:
    with engine.connect() as conn:
        rows = conn.execute(select(items)).all()
    return {(r.id, r.part): (r.amount, r.note, r.active) for r in rows}


@pytest.mark.parametrize("count", [3, UNNEST_THRESHOLD + 5])
def test_every_row_is_updated_by_its_keys_and_the_last_duplicate_wins(
    engine: Engine, count: int
) -> None:
    _metadata.create_all(engine)
    with engine.begin() as conn:
        bulk_insert(conn, items, COLUMNS, [(i, "2026-11", i, None, True) for i in range(count + 2)])
    updates = [(i * 10, f"n{i}" if i % 2 else None, False, i, "2026-11") for i in range(count)]
    updates.append((999, "last", True, 0, "2026-11"))  # a later row for the same key wins
    updates.append((5, "nobody", False, 10_000, "2026-11"))  # no such row: nothing happens
    with engine.begin() as conn:
        bulk_update(conn, items, ("id", "part"), ("amount", "note", "active"), updates)

    stored = _stored(engine)
    assert stored[(0, "2026-11")] == (999, "last", True)
    for i in range(1, count):
        assert stored[(i, "2026-11")] == (i * 10, f"n{i}" if i % 2 else None, False)
    for i in (count, count + 1):  # not in the update: untouched
        assert stored[(i, "2026-11")] == (i, None, True)
    assert len(stored) == count + 2


@pytest.mark.parametrize("count", [3, UNNEST_THRESHOLD + 5])
def test_a_check_constraint_still_refuses_the_whole_update(engine: Engine, count: int) -> None:
    _metadata.create_all(engine)
    with engine.begin() as conn:
        bulk_insert(conn, items, COLUMNS, [(i, "x", 1, None, True) for i in range(count)])
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)), engine.begin() as conn:
        updates = [(0, None, True, i, "x") for i in range(count - 1)] + [
            (-1, None, True, count - 1, "x")
        ]
        bulk_update(conn, items, ("id", "part"), ("amount", "note", "active"), updates)
    assert {value[0] for value in _stored(engine).values()} == {1}


@pytest.mark.parametrize("count", [3, UNNEST_THRESHOLD + 5])
def test_a_text_too_long_for_its_column_is_refused_not_cut(engine: Engine, count: int) -> None:
    """An explicit cast to ``varchar(80)[]`` would cut the value silently on PostgreSQL."""
    _metadata.create_all(engine)
    with engine.begin() as conn:
        bulk_insert(conn, items, COLUMNS, [(i, "x", 1, None, True) for i in range(count)])
    updates = [(2, "n" * (80 if i else 81), True, i, "x") for i in range(count)]
    if engine.dialect.name == "sqlite":  # SQLite keeps any length: stored whole, never cut
        with engine.begin() as conn:
            bulk_update(conn, items, ("id", "part"), ("amount", "note", "active"), updates)
        assert len(_stored(engine)[(0, "x")][1] or "") == 81
        return
    with pytest.raises(psycopg.DataError), engine.begin() as conn:
        bulk_update(conn, items, ("id", "part"), ("amount", "note", "active"), updates)
    assert {value[1] for value in _stored(engine).values()} == {None}


_SPECIAL = ["NULL", "null", '"', "\\", '\\"', "{", "}", ",", " ", "", "a,b", "{x}", "'", "é中"]
_notes = (
    st.none()
    | st.sampled_from(_SPECIAL)
    | st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        max_size=80,
    )
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    updates=st.lists(
        st.tuples(st.integers(0, 2**62), _notes, st.booleans()),
        min_size=UNNEST_THRESHOLD,
        max_size=UNNEST_THRESHOLD + 30,
    )
)
def test_any_text_number_null_and_flag_is_stored_as_given(
    engine: Engine, updates: list[tuple[int, str | None, bool]]
) -> None:
    """Above the threshold PostgreSQL gets each column as one array literal: quotes,
    backslashes, braces, commas, the word NULL and empty text must arrive exactly as given."""
    _metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(items.delete())
        bulk_insert(conn, items, COLUMNS, [(i, "p", 0, "old", False) for i in range(len(updates))])
    with engine.begin() as conn:
        bulk_update(
            conn,
            items,
            ("id", "part"),
            ("amount", "note", "active"),
            [(*values, i, "p") for i, values in enumerate(updates)],
        )
    assert _stored(engine) == {(i, "p"): values for i, values in enumerate(updates)}


@pytest.mark.parametrize("count", [3, UNNEST_THRESHOLD + 5])
def test_a_list_of_ids_reads_like_an_in_list_whatever_its_length(
    engine: Engine, count: int
) -> None:
    """On PostgreSQL a long list of integers goes as one array (``IN (SELECT unnest(…))``);
    repeated ids, ids that match nothing, NOT IN, a list of text, and FOR UPDATE read alike."""
    _metadata.create_all(engine)
    with engine.begin() as conn:
        bulk_insert(conn, items, COLUMNS, [(i, "q", i, f"n{i}", True) for i in range(2 * count)])
    wanted = [*range(0, 2 * count, 2), 0, 10_000 + count]  # a repeat and an unknown id
    lock = " FOR UPDATE" if engine.dialect.name == "postgresql" else ""
    with engine.begin() as conn:
        found = raw_rows(
            conn, f"SELECT id FROM bulk_items WHERE id IN :ids ORDER BY id{lock}", ids=wanted
        )
        others = raw_rows(conn, "SELECT id FROM bulk_items WHERE id NOT IN :ids", ids=wanted)
        notes = raw_rows(
            conn,
            "SELECT id FROM bulk_items WHERE note IN :notes",
            notes=[f"n{i}" for i in range(count)],
        )
    assert [row[0] for row in found] == list(range(0, 2 * count, 2))
    assert sorted(row[0] for row in others) == list(range(1, 2 * count, 2))
    assert sorted(row[0] for row in notes) == list(range(count))
