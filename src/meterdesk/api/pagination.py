"""Keyset pagination: ``limit`` and an opaque ``cursor`` (the position after the last item
returned); a page answers ``next_cursor`` (null on the last page)."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from meterdesk.shared.errors import ValidationError

T = TypeVar("T")

Limit = Annotated[int, Query(ge=1, le=500, description="items per page")]
Cursor = Annotated[
    str | None,
    Query(max_length=64, description="next_cursor of the previous page"),
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def decode(cursor: str | None, parts: int = 1) -> tuple[int, ...] | None:
    """A cursor is ``parts`` non-negative integers joined by dots."""
    if cursor is None or cursor == "":
        return None
    pieces = cursor.split(".")
    # isascii: str.isdigit also accepts "¹" and other digits int() refuses.
    if len(pieces) != parts or not all(
        p.isascii() and p.isdigit() and len(p) <= 18 for p in pieces
    ):
        raise ValidationError(f"cursor: {cursor!r} is not a cursor this list gave")
    return tuple(int(p) for p in pieces)


def after_id(cursor: str | None) -> int | None:
    decoded = decode(cursor)
    return None if decoded is None else decoded[0]


def encode(*parts: int) -> str:
    return ".".join(str(p) for p in parts)
