"""The handle every use case receives: an engine to open transactions on, and the clock.

A use case owns its transaction (``with db.transaction() as conn``); everything it writes —
records, ledger transfers, audit entries — commits together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from meterdesk.shared.time import Clock


@dataclass
class Database:
    engine: Engine
    clock: Clock

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(meterdesk_read_only=True) as conn:
            yield conn

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name
