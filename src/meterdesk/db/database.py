"""The handle every use case receives: an engine to open transactions on, and the clock.

A use case owns its transaction (``with db.transaction() as conn``); everything it writes —
records, ledger transfers, audit entries — commits together or not at all.

SQLite has one write lock, and its busy handler is no queue: a waiting writer sleeps and retries
(every ≤ 100 ms), so a thread that commits and begins again at once — the ingest's group commit
under load — takes the lock again and again while the others wait for seconds (``bench
control`` measured 8–50 s for the command executor and desk recharges). So the writers of one
process take turns, first come first served, before ``BEGIN IMMEDIATE``; a writer that waited
``WRITER_TURN_S`` goes ahead anyway and meets the busy handler as before (other processes never
queue here). PostgreSQL locks rows, not the database: no turns there.

After a commit, the topics announced in the transaction (``meterdesk.db.commit_signals``) wake
this process's workers: the command executor and the notification dispatcher start on new rows
at once instead of at their next idle poll.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine

from meterdesk.db.commit_signals import commit_signals, take_announced
from meterdesk.shared.time import Clock

WRITER_TURN_S = 30.0  # as long as SQLite's busy timeout (db/engine.py)


class WriterTurns:
    """First come, first served turns at one SQLite database's write lock, for this process."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._waiting: deque[object] = deque()
        self._busy = False

    @contextmanager
    def turn(self, timeout_s: float = WRITER_TURN_S) -> Iterator[None]:
        me = object()
        with self._changed:
            self._waiting.append(me)
            mine = self._changed.wait_for(
                lambda: not self._busy and self._waiting[0] is me, timeout_s
            )
            self._waiting.remove(me)
            if mine:
                self._busy = True
            self._changed.notify_all()
        try:
            yield
        finally:
            if mine:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()


_TURNS: WeakKeyDictionary[Engine, WriterTurns] = WeakKeyDictionary()
_TURNS_LOCK = threading.Lock()


def writer_turns(engine: Engine) -> WriterTurns | None:
    """The engine's writer queue (SQLite), or None (PostgreSQL)."""
    if engine.dialect.name != "sqlite":
        return None
    with _TURNS_LOCK:
        found = _TURNS.get(engine)
        if found is None:
            found = _TURNS[engine] = WriterTurns()
        return found


@dataclass
class Database:
    engine: Engine
    clock: Clock

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        turns = writer_turns(self.engine)
        announced: set[str] = set()
        with turns.turn() if turns is not None else nullcontext(), self.engine.begin() as conn:
            take_announced(conn)  # left by a transaction begun outside this method
            try:
                yield conn
            finally:
                announced = take_announced(conn)
        # Reached only once committed (an error above propagates); after the writer's turn too,
        # so a woken worker's own transaction does not queue behind this one.
        if announced:
            commit_signals(self.engine).publish(announced)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(meterdesk_read_only=True) as conn:
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read whose statements all see the same committed state: REPEATABLE READ on
        PostgreSQL (where each statement of a READ COMMITTED transaction sees its own); a SQLite
        read transaction already reads one snapshot."""
        with self.engine.connect().execution_options(meterdesk_read_only=True) as conn:
            if self.engine.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            yield conn

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name
