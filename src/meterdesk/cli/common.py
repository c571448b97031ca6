"""What every CLI command shares: building the app, naming the organisation and the actor,
printing results as text or ``--json``, and turning errors into clear messages and exit codes."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.cells import cell_len

from meterdesk.bootstrap import App, build
from meterdesk.shared.errors import (
    ConflictError,
    IdempotencyConflictError,
    InsufficientFundsError,
    MeterdeskError,
    NotFoundError,
    ValidationError,
)

# One table from error class to exit code (checked in order: most specific first).
EXIT_CODES: tuple[tuple[type[MeterdeskError], int], ...] = (
    (ValidationError, 2),
    (NotFoundError, 3),
    (IdempotencyConflictError, 5),
    (InsufficientFundsError, 6),
    (ConflictError, 4),
    (MeterdeskError, 1),
)

OrgOption = Annotated[str, typer.Option("--org", envvar="METERDESK_ORG", help="organisation name")]
ActorOption = Annotated[
    str, typer.Option("--actor", envvar="METERDESK_ACTOR", help="who does this (audited)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of text")]


ACTOR_LENGTH = 100  # the actor columns (audit, transfers, accounts.opened_by, …)


def who(actor: str) -> str:
    """The audited actor: ``--actor``, else ``METERDESK_ACTOR``, else the login name.

    At most 100 characters: a longer one was stored as it was on SQLite and a DataError
    traceback on PostgreSQL."""
    found = actor or os.environ.get("USER") or "operator"
    if len(found) > ACTOR_LENGTH:
        raise ValidationError(f"--actor: at most {ACTOR_LENGTH} characters")
    return found


@cache
def app() -> App:
    """The application for this CLI invocation (schema brought up to date on the embedded SQLite)."""
    built = build()
    ensure_schema(built)
    return built


def ensure_schema(built: App) -> None:
    from meterdesk.db import migrate

    url = built.settings.resolved_database_url()
    if built.db.dialect == "sqlite":
        migrate.upgrade(url)
    elif migrate.current(url) is None:
        fail(
            ValidationError(
                "the database has no meterdesk schema yet: run `meterdesk migrate` first"
            )
        )


def organisation_id(name: str) -> int:
    from meterdesk.sites.service import organisation_by_name

    return organisation_by_name(app().db, name=name)


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr
        }
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def emit(value: Any, as_json: bool, text: Callable[[Any], str] | None = None) -> None:
    if as_json:
        typer.echo(json.dumps(to_jsonable(value), ensure_ascii=False, indent=2))
    elif text is not None:
        typer.echo(text(value))
    else:
        typer.echo(json.dumps(to_jsonable(value), ensure_ascii=False, indent=2))


def pad(text: str, width: int) -> str:
    """``text`` padded to ``width`` terminal columns: a Chinese character takes two, so
    ``f"{name:<30}"`` pushed every column after a Chinese name out of line."""
    return text + " " * max(0, width - cell_len(text))


def fail(error: MeterdeskError) -> NoReturn:
    code = next(code for kind, code in EXIT_CODES if isinstance(error, kind))
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code)


@contextmanager
def handled() -> Iterator[None]:
    from sqlalchemy.exc import DataError

    try:
        yield
    except MeterdeskError as error:
        fail(error)
    except DataError as error:
        # A value only the database refuses (on PostgreSQL, text longer than its column where a
        # service does not check the length itself): a traceback before. The transaction was
        # rolled back, so nothing changed.
        reason = str(error.orig).splitlines()[0] if error.orig else "invalid value"
        fail(ValidationError(f"the database refused a value: {reason}"))


def parse_when(value: str | None) -> datetime | None:
    from meterdesk.shared.time import parse_instant

    return None if value is None else parse_instant(value, field="time")


def stderr(message: str) -> None:
    print(message, file=sys.stderr)


def load_json_file(path: Path) -> object:
    """A JSON file given on the command line, or a clear error with the line of the mistake."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValidationError(
            f"{path.name}: not valid JSON ({error.msg} at line {error.lineno})"
        ) from None
    except RecursionError:  # "[[[[…" thousands deep: the parser's stack, a traceback before
        raise ValidationError(f"{path.name}: JSON nested too deeply") from None
