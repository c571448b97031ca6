"""How long the database itself takes during ``bench ingest``'s own run.

Every bulk insert, update and raw read (``db.bulk``), every other statement run through
SQLAlchemy, and each batch's commit are timed. Their sum per reading, set against the bulk
insert's time per reading, is the floor of the pipeline on this schema: however fast the Python
around it, our time cannot fall below it (docs/decisions/0003-ingest-throughput.md).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event

from meterdesk.db import bulk


class DatabaseTime:
    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._statement_started = 0.0
        self._commit_started: float | None = None

    def add(self, what: str, seconds: float) -> None:
        self.seconds[what] += seconds
        self.calls[what] += 1

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())

    @contextmanager
    def watching(self, engine: Engine) -> Iterator[None]:
        hooks = [
            ("before_cursor_execute", self._before),
            ("after_cursor_execute", self._after),
            ("commit", self._commit),
        ]
        for name, hook in hooks:
            event.listen(engine, name, hook)
        try:
            with bulk.observed(self.add):
                yield
        finally:
            for name, hook in hooks:
                event.remove(engine, name, hook)

    def committed(self) -> None:
        """Call when a batch has returned: its commit ran from the ``commit`` event to now."""
        if self._commit_started is not None:
            self.add("commit", time.perf_counter() - self._commit_started)
            self._commit_started = None

    def _before(self, *_: Any) -> None:
        self._statement_started = time.perf_counter()

    def _after(self, *_: Any) -> None:
        self.add("other statements", time.perf_counter() - self._statement_started)

    def _commit(self, *_: Any) -> None:
        self._commit_started = time.perf_counter()
