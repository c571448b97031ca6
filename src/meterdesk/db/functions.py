"""SQL functions that behave the same on SQLite and PostgreSQL.

``casefold(x)``: text folded for a case-insensitive search. SQLite's own ``lower()`` folds ASCII
letters only, so on SQLite it calls Python's ``str.casefold`` (registered on every connection by
:mod:`meterdesk.db.engine`); PostgreSQL's ``lower()`` folds every script.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import GenericFunction

SQLITE_CASEFOLD = "meterdesk_casefold"


class casefold(GenericFunction[str]):  # noqa: N801 - SQL function names are lower case
    type = String()
    inherit_cache = True


@compiles(casefold)
def _casefold_default(element: casefold, compiler: Any, **kw: Any) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(casefold, "sqlite")
def _casefold_sqlite(element: casefold, compiler: Any, **kw: Any) -> str:
    return f"{SQLITE_CASEFOLD}({compiler.process(element.clauses, **kw)})"


def python_casefold(value: object) -> object:
    """The SQLite side of :class:`casefold` (NULL stays NULL)."""
    return value.casefold() if isinstance(value, str) else value
