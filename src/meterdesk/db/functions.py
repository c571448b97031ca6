"""SQL functions that behave the same on SQLite and PostgreSQL.

``casefold(x)``: text folded for a case-insensitive search. SQLite's own ``lower()`` folds ASCII
letters only, so on SQLite it calls Python's ``str.casefold`` (registered on every connection by
:mod:`meterdesk.db.engine`); PostgreSQL's ``lower()`` folds every script.
"""

from __future__ import annotations

import sys
from functools import cache
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


def caseless(text: str) -> bool:
    """True when case folding cannot touch ``text``: none of its characters folds to anything
    else, and none comes out of another character's folding (ß → ss, K → k …). Folding maps
    character by character, so then ``text in s.casefold()`` exactly when ``text in s``, for any
    ``s`` — a search for digits, punctuation or Chinese needs no folding (and no Python call
    per row on SQLite)."""
    targets = _fold_targets()
    return all(c.casefold() == c and c not in targets for c in text)


@cache
def _fold_targets() -> frozenset[str]:
    """Every character that some other character folds into (≈ 0.2 s, once per process)."""
    found: set[str] = set()
    for point in range(sys.maxunicode + 1):
        char = chr(point)
        folded = char.casefold()
        if folded != char:
            found.update(folded)
    return frozenset(found)
