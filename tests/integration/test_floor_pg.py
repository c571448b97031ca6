"""`bench floor --database-url`: the PostgreSQL store must do the work it claims, as the SQLite
one does (tests/unit/bench/test_floor.py), or its figures mean nothing."""

from __future__ import annotations

import json
import os

import psycopg
import pytest
from typer.testing import CliRunner

from meterdesk.bench import floor, floor_stores
from meterdesk.bench.workload import build
from meterdesk.cli import cli
from support.database import PG_URL, postgres_unavailable

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _postgres() -> None:
    reason = postgres_unavailable()
    if reason:
        pytest.skip(f"PostgreSQL not answering: {reason}")


def _our_schemas() -> list[str]:
    conninfo = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
            (f"floor\\_%\\_{os.getpid()}\\_%",),
        ).fetchall()
    return [row[0] for row in rows]


def test_the_lean_loop_on_postgresql_bills_stores_and_conserves_as_on_sqlite() -> None:
    # Two batches: the second brings repeats of readings the first stored, and late readings.
    summary = floor.run(meters=300, rounds=8, seed=3, database_url=PG_URL)
    distinct = len(build(seed=3, meters=300, rounds=8).truth)
    assert summary["backend"] == "postgresql"
    assert summary["readings"] == distinct
    for design in floor.DESIGNS:
        result = summary[design]
        assert result["bills_differ_without_late_reading"] == 0
        assert result["stored_readings"] == distinct  # repeats dropped, late ones kept
        assert result["balances_conserved"] is True
        assert result["readings_per_s"] > 0
    assert _our_schemas() == []  # every scratch schema dropped


def test_a_wrong_price_shows_in_the_bills(monkeypatch: pytest.MonkeyPatch) -> None:
    real = floor._Tariff.cost
    monkeypatch.setattr(
        floor._Tariff,
        "cost",
        lambda self, hour, used, quantity: real(self, hour, used, quantity) + floor.EXACT_PER_FEN,
    )
    summary = floor.run(meters=40, rounds=4, seed=3, database_url=PG_URL)
    assert all(summary[d]["bills_differ_without_late_reading"] > 0 for d in floor.DESIGNS)


def test_late_readings_lost_show_in_the_stored_count(monkeypatch: pytest.MonkeyPatch) -> None:
    # A store that drops every reading at or before its meter's last one, late ones included.
    monkeypatch.setattr(
        floor_stores,
        "_PG_INSERT_REPEATS",
        floor_stores._PG_INSERT_REPEATS.replace(" ON CONFLICT DO NOTHING", " LIMIT 0"),
    )
    summary = floor.run(meters=300, rounds=8, seed=3, database_url=PG_URL)
    distinct = len(build(seed=3, meters=300, rounds=8).truth)
    assert all(summary[d]["stored_readings"] < distinct for d in floor.DESIGNS)


def test_a_one_sided_posting_shows_in_the_balances(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        floor_stores, "_PG_MOVE_BALANCES", floor_stores._PG_MOVE_BALANCES + " AND u.account_id <> 0"
    )
    summary = floor.run(meters=40, rounds=4, seed=3, database_url=PG_URL)
    assert not any(summary[d]["balances_conserved"] for d in floor.DESIGNS)


def test_a_reading_copied_twice_is_refused_not_stored_twice() -> None:
    """The readings the state in memory calls new go by COPY: were it wrong, the unique index
    refuses them (the run fails) rather than storing a reading twice."""
    workload = build(seed=3, meters=10, rounds=2)
    store = floor_stores.PostgresStore(PG_URL, "twice", workload)
    try:
        row = (0, 1, 1_800_000_000, 1_800_000_000, 1, "realtime", "0", "2027-01", 0, 1, 0, 1)
        store.write(floor_stores.Batch(readings=[row]))
        with pytest.raises(psycopg.errors.UniqueViolation):
            store.write(floor_stores.Batch(readings=[row]))
        store.conn.rollback()
        assert store.one("SELECT count(*) FROM readings") == 1
    finally:
        store.close()
    assert _our_schemas() == []


def test_the_cli_takes_a_database_url() -> None:
    result = CliRunner().invoke(
        cli, ["bench", "floor", "--meters", "30", "--rounds", "3", "--database-url", PG_URL]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["backend"] == "postgresql"
    assert set(floor.DESIGNS) | {"bulk"} <= summary.keys()
