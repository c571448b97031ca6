"""Rebuild the initial migration, ``0001_initial.py``, from the current table definitions.

Until the first release the schema has exactly one revision, and it is generated, not edited:
whenever a ``tables.py`` changes, run

    .venv/bin/python -m meterdesk.db.regenerate_initial

then ``.venv/bin/pytest tests/integration/test_migrations.py``. The script deletes
``migrations/versions/0001_initial.py``, autogenerates it again against an empty throwaway
SQLite file (so every table, index and constraint comes out as a create), and formats it with
ruff. The output does not depend on the date or the machine: with unchanged tables the file
comes out byte for byte the same, so a diff of it shows exactly the schema change.

It refuses to run once any later revision exists: after a release, databases in the field are at
0001, and every change must be a new revision (autogenerate it with
``alembic.command.revision(meterdesk.db.migrate.alembic_config(url), message=...,
autogenerate=True, rev_id="0002")`` against a database at head, then read it and fix it).
See docs/decisions/0002-migrations.md.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config

from meterdesk.db.migrate import VERSIONS_DIR, MigrationError, alembic_config

INITIAL_REVISION = "0001"
INITIAL_FILE = "0001_initial.py"


def regenerate() -> Path:
    later = sorted(
        path.name
        for path in VERSIONS_DIR.glob("*.py")
        if path.name not in {INITIAL_FILE, "__init__.py"}
    )
    if later:
        raise MigrationError(
            f"later revisions exist ({', '.join(later)}): change the schema with a new revision"
        )
    target = VERSIONS_DIR / INITIAL_FILE
    target.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="meterdesk-migrations-") as scratch:
        config = alembic_config(f"sqlite:///{Path(scratch) / 'empty.sqlite3'}")
        _format_with_ruff(config)
        command.revision(config, message="initial", autogenerate=True, rev_id=INITIAL_REVISION)
    if not target.exists():
        raise MigrationError(f"Alembic did not write {target}")
    return target


def _format_with_ruff(config: Config) -> None:
    """Alembic's post-write hooks: ``python -m ruff format``, then ``ruff check --fix``."""
    section = "post_write_hooks"
    config.set_section_option(section, "hooks", "ruff_format, ruff_fix")
    config.set_section_option(section, "ruff_fix.type", "module")
    config.set_section_option(section, "ruff_fix.module", "ruff")
    config.set_section_option(
        section, "ruff_fix.options", "check --fix --quiet REVISION_SCRIPT_FILENAME"
    )
    config.set_section_option(section, "ruff_format.type", "module")
    config.set_section_option(section, "ruff_format.module", "ruff")
    config.set_section_option(
        section, "ruff_format.options", "format --quiet REVISION_SCRIPT_FILENAME"
    )


def main() -> None:
    try:
        print(f"wrote {regenerate()}")
    except MigrationError as error:
        raise SystemExit(f"error: {error}") from error


if __name__ == "__main__":
    main()
