"""Fixtures shared by the integration property tests."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from meterdesk.db.engine import build_engine
from meterdesk.db.metadata import load_all_tables


@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    """An empty SQLite database with the schema, copied for every generated example (building
    the schema each time would cost more than most examples)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "template.sqlite3"
        engine = build_engine(f"sqlite:///{path}")
        load_all_tables().create_all(engine)
        engine.dispose()
        yield path
