"""The hot tables keep some references without foreign keys (docs/decisions/0005); the
consistency check (``meterdesk check``, the benchmarks, ``check_books``) proves they resolve."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from builders import T0, D, check_books, one_meter_account, steady_stream
from sqlalchemy import insert, text
from typer.testing import CliRunner

from meterdesk.billing.ingest import Ingestor
from meterdesk.cli import cli
from meterdesk.cli import common as cli_common
from meterdesk.db.consistency import (
    UNCHECKED_REFERENCES,
    dangling_references,
    ledger_differences,
)
from meterdesk.db.database import Database
from meterdesk.db.metadata import load_all_tables
from meterdesk.metering.tables import readings

pytestmark = pytest.mark.integration


def test_the_listed_references_are_exactly_those_without_a_foreign_key() -> None:
    tables = load_all_tables().tables
    for table, column, parent in UNCHECKED_REFERENCES:
        assert parent in tables, parent
        assert not tables[table].c[column].foreign_keys, f"{table}.{column} has a foreign key"
    # every other *_id column of these tables still has its foreign key
    listed = {(t, c) for t, c, _ in UNCHECKED_REFERENCES}
    for table in {t for t, _, _ in UNCHECKED_REFERENCES}:
        for column in tables[table].c:
            if column.name.endswith("_id") and (table, column.name) not in listed:
                assert column.foreign_keys, (
                    f"{table}.{column.name} is neither checked by a foreign key nor listed"
                )


def test_a_sound_database_has_no_dangling_reference_and_balanced_books(db: Database) -> None:
    setup = one_meter_account(db, credit="50")
    stream = steady_stream(
        setup.meter_id, start_total=D("1000"), count=40, step=D("3"), every=timedelta(hours=1)
    )
    Ingestor(db).ingest(stream)
    with db.read() as conn:
        assert set(dangling_references(conn).values()) == {0}
        assert ledger_differences(conn) == {"entries_sum": 0, "balances_off": 0}
    check_books(db)


def test_a_reading_of_a_meter_that_does_not_exist_is_found(db: Database) -> None:
    one_meter_account(db)
    with db.transaction() as conn:
        conn.execute(
            insert(readings).values(
                meter_id=999_999,
                generation=0,
                measured_at=T0,
                received_at=T0,
                register_total=D("1"),
                source="poll",
            )
        )
    with db.read() as conn:
        found = dangling_references(conn)
    assert found["readings.meter_id"] == 1
    assert sum(found.values()) == 1


@pytest.fixture
def cli_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("METERDESK_DATA_DIR", str(tmp_path / "data"))
    for name in ("METERDESK_DATABASE_URL", "METERDESK_ORG", "METERDESK_ACTOR"):
        monkeypatch.delenv(name, raising=False)
    cli_common.app.cache_clear()
    yield tmp_path
    if cli_common.app.cache_info().currsize:
        cli_common.app().db.engine.dispose()
    cli_common.app.cache_clear()


def test_meterdesk_check_says_ok_and_then_names_what_points_at_nothing(cli_data: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["org", "create", "Acme"]).exit_code == 0
    sound = runner.invoke(cli, ["check", "--json"])
    assert sound.exit_code == 0, sound.output
    assert json.loads(sound.stdout)["ok"] is True
    with cli_common.app().db.transaction() as conn:
        conn.execute(
            text(
                "INSERT INTO transfers (organisation_id, idempotency_key, request_hash, "
                "debit_account_id, credit_account_id, amount_fen, reason, actor, created_at) "
                "VALUES (1, 'k', 'h', 424242, 434343, 5, 'deduction', 'test', 0)"
            )
        )
    broken = runner.invoke(cli, ["check"])
    assert broken.exit_code == 1, broken.output
    assert "transfers.debit_account_id: 1 rows point at nothing" in broken.output
    assert "transfers.credit_account_id: 1 rows point at nothing" in broken.output
    assert "NOT OK" in broken.output
