"""The migrations build exactly the schema the tables describe, on SQLite and PostgreSQL.

Unlike the ``engine`` fixture in conftest, nothing here calls ``create_all``: every database
starts empty and gets its schema from ``meterdesk.db.migrate`` alone. If a test here fails after
a ``tables.py`` change, run ``python -m meterdesk.db.regenerate_initial`` (before the first
release) or write a new revision.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import CheckConstraint, MetaData, create_engine, inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from meterdesk.db import migrate
from meterdesk.db.engine import build_engine
from meterdesk.db.metadata import load_all_tables
from support.database import PG_URL, postgres_unavailable

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.sqlite3'}"
        return
    reason = postgres_unavailable()
    if reason:
        pytest.skip(f"PostgreSQL not answering: {reason}")
    schema = f"m_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        # The %3D also proves the URL never passes through Alembic's ConfigParser.
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _table_names(url: str) -> set[str]:
    engine = build_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_keeps_the_schema_in_step_with_the_tables(
    database_url: str,
) -> None:
    expected = set(load_all_tables().tables)

    migrate.upgrade(database_url)
    assert migrate.current(database_url) == migrate.head() == "0001"
    assert _table_names(database_url) == expected | {"alembic_version"}
    assert migrate.check(database_url) == []

    migrate.downgrade(database_url, "base")
    assert migrate.current(database_url) is None
    assert _table_names(database_url) <= {"alembic_version"}

    migrate.upgrade(database_url)
    assert migrate.current(database_url) == "0001"
    assert migrate.check(database_url) == []


def test_check_reports_missing_tables_and_a_missing_check_constraint(database_url: str) -> None:
    """check() is not blind to CHECK constraints, which Alembic's autogenerate ignores."""
    partial = MetaData(naming_convention=load_all_tables().naming_convention)
    for name in ("organisations", "ledger_accounts"):
        load_all_tables().tables[name].to_metadata(partial)
    ledger_accounts = partial.tables["ledger_accounts"]
    floor = next(
        constraint
        for constraint in ledger_accounts.constraints
        if isinstance(constraint, CheckConstraint)
        and constraint.name == "ck_ledger_accounts_above_floor"
    )
    ledger_accounts.constraints.discard(floor)
    engine = build_engine(database_url)
    partial.create_all(engine)
    engine.dispose()

    differences = migrate.check(database_url)

    assert "add_check_constraint ledger_accounts ck_ledger_accounts_above_floor" in differences
    assert "add_table readings" in differences
    assert not any("organisations" in line for line in differences)


def test_balance_floor_is_a_database_check_after_migrating(database_url: str) -> None:
    migrate.upgrade(database_url)
    engine = build_engine(database_url)
    try:
        with engine.connect() as conn:
            names = {c["name"] for c in inspect(conn).get_check_constraints("ledger_accounts")}
        assert "ck_ledger_accounts_above_floor" in names

        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO organisations (id, name, timezone, created_at)"
                    " VALUES (1, 'Org', 'Asia/Shanghai', 0)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO ledger_accounts"
                    " (id, organisation_id, code, kind, balance_fen, floor_fen, created_at)"
                    " VALUES (1, 1, 'wallet:1', 'wallet', 0, -500, 0)"
                )
            )
        with engine.begin() as conn:
            conn.execute(text("UPDATE ledger_accounts SET balance_fen = -500 WHERE id = 1"))

        with (
            pytest.raises(IntegrityError, match="ck_ledger_accounts_above_floor"),
            engine.begin() as conn,
        ):
            conn.execute(text("UPDATE ledger_accounts SET balance_fen = -501 WHERE id = 1"))

        with engine.connect() as conn:
            balance = conn.execute(text("SELECT balance_fen FROM ledger_accounts")).scalar_one()
        assert balance == -500
    finally:
        engine.dispose()


def test_open_assignment_index_is_unique_and_partial(database_url: str) -> None:
    migrate.upgrade(database_url)
    engine = build_engine(database_url)
    try:
        with engine.connect() as conn:
            indexes = {i["name"]: i for i in inspect(conn).get_indexes("meter_assignments")}
    finally:
        engine.dispose()

    index = indexes["uq_meter_assignments_open"]
    assert index["unique"]
    assert index["column_names"] == ["meter_id"]
    where = index.get("dialect_options", {}).get(f"{engine.dialect.name}_where")
    assert re.sub(r"[()\s]", "", str(where)).lower() == "end_atisnull"


def test_check_reports_an_open_assignment_index_that_lost_its_where_clause(
    database_url: str,
) -> None:
    """Alembic's autogenerate does not compare index predicates; check() does."""
    migrate.upgrade(database_url)
    engine = build_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX uq_meter_assignments_open"))
        conn.execute(
            text("CREATE UNIQUE INDEX uq_meter_assignments_open ON meter_assignments (meter_id)")
        )
    engine.dispose()

    assert migrate.check(database_url) == [
        "modify_index_where uq_meter_assignments_open on meter_assignments: None -> end_at IS NULL"
    ]


def test_failed_upgrade_leaves_nothing_behind(database_url: str) -> None:
    """DDL is transactional on both backends, SQLite included (thanks to BEGIN IMMEDIATE)."""
    last_created = load_all_tables().sorted_tables[-1].name
    engine = build_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {last_created} (squatter INTEGER)"))
    engine.dispose()

    with pytest.raises(DBAPIError, match="already exists"):
        migrate.upgrade(database_url)

    assert _table_names(database_url) == {last_created}
    assert migrate.current(database_url) is None


def test_migrations_do_not_depend_on_application_types() -> None:
    """Custom column types are written as their storage types, so old revisions keep working
    when a Python-side type changes."""
    source = (migrate.VERSIONS_DIR / "0001_initial.py").read_text(encoding="utf-8")
    assert "meterdesk" not in source.replace("python -m meterdesk.db.regenerate_initial", "")
    assert "Scaled" not in source
    assert "Instant" not in source


def test_tables_updated_in_place_keep_room_for_updates_on_postgresql(database_url: str) -> None:
    """Autogenerate does not compare storage parameters: the migration must carry the fill
    factor of the tables every batch updates (db.metadata.UPDATED_IN_PLACE)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("storage parameters are PostgreSQL's")
    migrate.upgrade(database_url)
    engine = build_engine(database_url)
    try:
        with engine.connect() as conn:
            options = dict(
                conn.execute(
                    text(
                        "SELECT c.relname, c.reloptions FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
                        "AND c.relkind = 'r'"
                    )
                ).all()
            )
    finally:
        engine.dispose()
    expected = {
        name: ["fillfactor=50"]
        for name, table in load_all_tables().tables.items()
        if table.dialect_options["postgresql"]["with"]
    }
    assert expected.keys() == {"meter_cursors", "period_totals", "ledger_accounts"}
    assert {name: options[name] for name in expected} == expected
