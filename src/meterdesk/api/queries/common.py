"""Paging a query by a unique, increasing column."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Column, Connection, RowMapping, Select

from meterdesk.api.pagination import encode


@dataclass(frozen=True)
class Window:
    """Where a page starts (after this key) and how long it is."""

    after: int | None
    limit: int


def page(
    conn: Connection,
    query: Select[Any],
    key: Column[Any],
    *,
    after: int | None,
    limit: int,
    descending: bool = False,
) -> tuple[Sequence[RowMapping], str | None]:
    """One page of ``query`` ordered by ``key``, after the cursor's position."""
    if after is not None:
        query = query.where(key < after if descending else key > after)
    ordered = query.order_by(key.desc() if descending else key).limit(limit + 1)
    rows = conn.execute(ordered).mappings().all()
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], encode(int(rows[limit - 1][key.key]))


def text(value: Decimal | None) -> str | None:
    """An exact decimal as a plain string (no exponent), or None."""
    return None if value is None else f"{value:f}"


def like(term: str) -> str:
    """A LIKE pattern that matches ``term`` anywhere, with LIKE's wildcards escaped."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
