"""Where the demo's data goes, and starting it fresh without ever losing anyone's data.

The demo writes to the same database every ``meterdesk`` command uses, so the commands it
suggests work afterwards. ``fresh`` deletes the embedded SQLite database (the file in the data
directory, with the ``-wal`` and ``-shm`` files SQLite keeps beside it — a stale WAL file next to
a new database would be replayed into it) and nothing else, and only when:

- ``METERDESK_DATABASE_URL`` is not set (a configured database is used as it is, never deleted),
- and the file holds nothing but meterdesk tables and demo organisations: a database in which
  someone created their own organisation is kept, and the demo adds its organisation beside it
  (under a free name: ``示例物业 Demo Property (2)``, …).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import inspect, select
from sqlalchemy.engine import make_url

from meterdesk.db import migrate
from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.db.metadata import load_all_tables
from meterdesk.demo.plan import ORGANISATION
from meterdesk.settings import Settings
from meterdesk.shared.errors import NotFoundError, ValidationError
from meterdesk.sites.service import organisation_by_name
from meterdesk.sites.tables import organisations

SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


@dataclass(frozen=True)
class Prepared:
    url: str
    shown: str  # the URL without a password, or the SQLite file
    notes: list[str]


def prepare(settings: Settings, *, fresh: bool) -> Prepared:
    """Delete the demo's own SQLite database when asked and safe, then bring the schema up."""
    url = settings.resolved_database_url()
    notes: list[str] = []
    if settings.database_url:
        shown = make_url(url).render_as_string(hide_password=True)
        if fresh:
            notes.append(f"using METERDESK_DATABASE_URL ({shown}) as it is; nothing is deleted")
    else:
        path = (settings.data_dir / "meterdesk.sqlite3").resolve()
        shown = str(path)
        if fresh and path.exists():
            notes.append(_delete_if_only_demo(path, url))
    _migrate(url)
    return Prepared(url, shown, notes)


def _delete_if_only_demo(path: Path, url: str) -> str:
    others = _foreign_content(url)
    if others:
        return f"kept {path}: it holds {others}; the demo adds its own organisation beside it"
    for suffix in SQLITE_COMPANIONS:
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"started from an empty database (deleted the demo's {path.name})"


def _foreign_content(url: str) -> str:
    """What in the SQLite file is not the demo's: '' when it is all the demo's."""
    engine = build_engine(url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            ours = set(load_all_tables().tables) | {"alembic_version"}
            if tables - ours:
                return f"tables meterdesk does not know ({', '.join(sorted(tables - ours)[:3])})"
            if "organisations" not in tables:
                return ""
            names = [str(name) for name in conn.execute(select(organisations.c.name)).scalars()]
    finally:
        engine.dispose()
    foreign = [name for name in names if not name.startswith(ORGANISATION)]
    return f"other organisations ({', '.join(foreign[:3])})" if foreign else ""


def _migrate(url: str) -> None:
    if make_url(url).get_backend_name() == "sqlite":
        migrate.upgrade(url)
    elif migrate.current(url) is None:
        raise ValidationError(
            "the database has no meterdesk schema yet: run `meterdesk migrate` first"
        )


def free_organisation_name(db: Database) -> str:
    """The demo organisation's name, numbered when an earlier demo run is still there."""
    for number in range(1, 1000):
        name = ORGANISATION if number == 1 else f"{ORGANISATION} ({number})"
        try:
            organisation_by_name(db, name=name)
        except NotFoundError:
            return name
    raise ValidationError("too many demo organisations in this database; use a fresh one")
