"""Splitting a long list of ids into batches (one transaction or one ``IN`` list each)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """``items`` in order, ``size`` at a time (the last batch may be shorter)."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
