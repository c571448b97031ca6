"""Database migrations, driven from Python: there is no ``alembic.ini``.

The Alembic environment (``migrations/env.py``, ``migrations/script.py.mako`` and
``migrations/versions/``) lives inside the package, so it ships in the wheel and an installed
meterdesk can migrate its own database. Everything Alembic needs is set here:

- :func:`upgrade`, :func:`downgrade`, :func:`current` and :func:`check` take a SQLAlchemy URL;
  :func:`alembic_config` gives the :class:`~alembic.config.Config` for any other Alembic command.
- The URL travels in ``Config.attributes``, not in the ``sqlalchemy.url`` option: the config is
  a ConfigParser, and a ``%`` in a URL (``?options=-csearch_path%3Dschema``) breaks its
  interpolation.
- Migrations run on :func:`meterdesk.db.engine.build_engine`. On SQLite that engine issues
  ``BEGIN IMMEDIATE`` itself (the driver's implicit transactions are off), so SQLite DDL really
  is transactional: Alembic is told ``transactional_ddl=True`` and a failed upgrade leaves
  nothing behind, on SQLite as on PostgreSQL. With pysqlite's default settings the same flag
  would be a lie: pysqlite does not BEGIN before DDL, and each CREATE would commit on its own.
- On SQLite, ``PRAGMA foreign_keys`` is off while migrating, as SQLite's own table-rebuild
  procedure asks: batch operations rebuild a table by copy, DROP and rename, and dropping a
  referenced table with foreign keys on fails. The pragma is ignored inside a transaction, so it
  is set on the driver connection *before* the transaction (going through SQLAlchemy would
  autobegin one, and Alembic would then think it runs inside the caller's transaction and never
  commit). ``PRAGMA foreign_key_check`` must come back empty before the migration commits.
- Column types from :mod:`meterdesk.db.types` are written into migration files as their storage
  types (``Scaled`` and ``Instant`` as ``sa.BigInteger()``, ``ExactDecimal`` as
  ``sa.String(length=80)``): a migration describes what the database holds, and must keep
  working when a Python-side type is changed, moved or renamed. Alembic compares types by
  compiling both sides to DDL, so a TypeDecorator already compares as its storage type: no
  ``compare_type`` hook is needed (``tests/integration/test_migrations.py`` proves it).
- Autogenerate never compares CHECK constraints, nor the ``WHERE`` of a partial index. The
  ledger's balance floor is a CHECK and "one open assignment per meter" is a partial unique
  index, so :func:`check` compares those too: CHECK constraints by *name* (each database
  rewrites expressions its own way; to change an expression, give the constraint a new name),
  index predicates as text with case, spaces and parentheses ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from alembic import command, context
from alembic.autogenerate import compare_metadata
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, Connection, Constraint, Index, MetaData, Table
from sqlalchemy import inspect as inspect_database
from sqlalchemy.engine import Inspector
from sqlalchemy.types import TypeDecorator

from meterdesk.db import counters
from meterdesk.db.engine import build_engine
from meterdesk.db.metadata import load_all_tables
from meterdesk.shared.errors import MeterdeskError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSIONS_DIR = MIGRATIONS_DIR / "versions"
_URL_ATTRIBUTE = "meterdesk_database_url"


class MigrationError(MeterdeskError):
    """A migration could not run, or would have left the database inconsistent."""


def alembic_config(url: str) -> Config:
    """The Alembic configuration for the database at ``url`` (nothing is read from disk)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.attributes[_URL_ATTRIBUTE] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    engine = build_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    """The newest revision shipped with this version of meterdesk."""
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def check(url: str) -> list[str]:
    """Differences between the table definitions and the database; empty means in sync."""
    metadata = load_all_tables()
    engine = build_engine(url)
    try:
        with engine.connect() as connection:
            migration_context = MigrationContext.configure(connection)
            differences = [
                _describe(diff) for diff in compare_metadata(migration_context, metadata)
            ]
            differences += _beyond_autogenerate(connection, metadata)
    finally:
        engine.dispose()
    return differences


def run_migrations() -> None:
    """The body of ``migrations/env.py``; Alembic's ``context`` is set up when this runs."""
    if context.is_offline_mode():
        raise MigrationError("offline (--sql) migrations are not supported")
    url = context.config.attributes.get(_URL_ATTRIBUTE)
    if not isinstance(url, str):
        raise MigrationError("run migrations through meterdesk.db.migrate (it passes the URL)")
    metadata = load_all_tables()
    engine = build_engine(url)
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                with _sqlite_foreign_keys_off(connection):
                    _run_in_transaction(connection, metadata, sqlite=True)
            else:
                _run_in_transaction(connection, metadata, sqlite=False)
    finally:
        engine.dispose()


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Write meterdesk's own column types into migration files as their storage types."""
    if (
        type_ == "type"
        and isinstance(obj, TypeDecorator)
        and type(obj).__module__.startswith("meterdesk.")
    ):
        return f"sa.{obj.impl_instance!r}"
    return False


def _run_in_transaction(connection: Connection, metadata: MetaData, *, sqlite: bool) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        transactional_ddl=True,
        render_as_batch=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite and counters.kept_tables_exist(connection):
            # triggers are not in the generated migration: the ingest's marker (db/counters.py)
            counters.install_kept_state_marker(connection)
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise MigrationError(f"rows with dangling foreign keys: {broken[:10]}")


@contextmanager
def _sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    driver = connection.connection.driver_connection
    if driver is None or connection.in_transaction():
        raise MigrationError("PRAGMA foreign_keys must be set outside a transaction")
    driver.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        driver.execute("PRAGMA foreign_keys=ON")


def _beyond_autogenerate(connection: Connection, metadata: MetaData) -> list[str]:
    """What compare_metadata does not look at: CHECK constraints and partial-index predicates."""
    inspector = inspect_database(connection)
    existing = set(inspector.get_table_names())
    differences: list[str] = []
    for table in metadata.sorted_tables:
        if table.name in existing:  # else compare_metadata already reports the missing table
            differences += _check_constraint_differences(inspector, table)
            differences += _index_predicate_differences(inspector, table)
    return differences


def _check_constraint_differences(inspector: Inspector, table: Table) -> list[str]:
    wanted = {
        str(constraint.name)
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint) and constraint.name
    }
    found = {
        str(reflected["name"])
        for reflected in inspector.get_check_constraints(table.name)
        if reflected["name"]
    }
    return [f"add_check_constraint {table.name} {name}" for name in sorted(wanted - found)] + [
        f"remove_check_constraint {table.name} {name}" for name in sorted(found - wanted)
    ]


def _index_predicate_differences(inspector: Inspector, table: Table) -> list[str]:
    """Compares ``WHERE`` clauses of indexes present on both sides, ignoring case, spaces,
    parentheses and PostgreSQL's casts (it gives back ``(end_at IS NULL)`` for ``end_at IS
    NULL``)."""
    dialect = inspector.dialect
    key = f"{dialect.name}_where"
    reflected = {
        str(index["name"]): index.get("dialect_options", {}).get(key)
        for index in inspector.get_indexes(table.name)
    }
    differences: list[str] = []
    for index in sorted(table.indexes, key=lambda index: str(index.name)):
        name = str(index.name)
        if name not in reflected:
            continue  # compare_metadata reports the missing index
        wanted = index.dialect_kwargs.get(key)
        if wanted is not None:
            wanted = wanted.compile(
                dialect=dialect, compile_kwargs={"include_table": False, "literal_binds": True}
            )
        if _predicate(wanted) != _predicate(reflected[name]):
            differences.append(
                f"modify_index_where {name} on {table.name}: {reflected[name]} -> {wanted}"
            )
    return differences


def _predicate(clause: object) -> str | None:
    """A WHERE clause as both databases give it back: PostgreSQL adds casts
    (``(reason)::text <> 'deduction'::text``) and writes ``!=`` as ``<>``."""
    if clause is None:
        return None
    text = re.sub(r"::(?:character varying|\w+)", "", str(clause).lower()).replace("!=", "<>")
    return re.sub(r"[()\s]", "", text)


def _describe(diff: Sequence[Any]) -> str:
    """One line per difference, e.g. ``add_table readings``, ``add_column meters.phase`` or
    ``modify_nullable meters.address: True -> False``."""
    if diff and not isinstance(diff[0], str):  # a group of modifications to one column
        return "; ".join(_describe(part) for part in diff)
    kind = str(diff[0])
    if kind in ("add_column", "remove_column"):
        return f"{kind} {diff[2]}.{diff[3].name}"
    if kind.startswith("modify_") and len(diff) == 7:
        return f"{kind} {diff[2]}.{diff[3]}: {diff[5]} -> {diff[6]}"
    return " ".join([kind, *(_label(part) for part in diff[1:] if part is not None)])


def _label(part: Any) -> str:
    if isinstance(part, Table):
        return part.name
    if isinstance(part, Index | Constraint):
        table = part.table.name if isinstance(part.table, Table) else "?"
        return f"{part.name} on {table}"
    return str(part)
