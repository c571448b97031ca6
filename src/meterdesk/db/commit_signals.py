"""Signals after commit: wake a background worker the moment its work is committed.

A use case that writes work for a worker of this process — a device command for the command
executor, an outbox message for the notification dispatcher — calls :func:`announce` on its
connection. When that transaction commits (:meth:`meterdesk.db.database.Database.transaction`),
every subscriber of the topic is called, so the worker claims the new row at once instead of at
its next idle poll (1 s: most of the trip latency at a light load, ``bench control``).

- Only after the commit: a worker woken earlier would claim before the row is visible, find
  nothing, and sleep through its idle poll again. A transaction that rolls back signals nothing.
- Callbacks run in the committing thread (the ingest commits from worker threads): an asyncio
  subscriber hands the signal to its loop with ``loop.call_soon_threadsafe``. A callback must be
  quick and must not raise; one that raises is logged and the others still run.
- A signal is a hint, never the only way work is found: rows written by other processes (CLI,
  API server, another worker) are not signalled here, so workers keep their idle poll.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine

log = logging.getLogger(__name__)

COMMANDS = "commands"  # device commands were created (devices/commands)
NOTIFICATIONS = "notifications"  # outbox messages were queued (notifications)

# The topics announced in the transaction open on a connection. ``Connection.info`` lives as long
# as the pooled DBAPI connection, so Database.transaction clears it when a transaction begins.
_ANNOUNCED = "meterdesk_announced_topics"

Callback = Callable[[], None]


def announce(conn: Connection, topic: str) -> None:
    """Signal ``topic`` to this process's subscribers once the current transaction commits."""
    announced: set[str] = conn.info.setdefault(_ANNOUNCED, set())
    announced.add(topic)


def take_announced(conn: Connection) -> set[str]:
    """The topics announced on ``conn`` since the last call (and forget them)."""
    found: set[str] = conn.info.pop(_ANNOUNCED, set())
    return found


class CommitSignals:
    """Subscribers per topic for one database (engine) in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, list[Callback]] = {}

    def subscribe(self, topic: str, callback: Callback) -> Callable[[], None]:
        """Call ``callback`` after every commit that announced ``topic``; returns the function
        that unsubscribes it."""
        with self._lock:
            self._subscribers.setdefault(topic, []).append(callback)

        def unsubscribe() -> None:
            with self._lock:
                callbacks = self._subscribers.get(topic, [])
                if callback in callbacks:
                    callbacks.remove(callback)

        return unsubscribe

    def publish(self, topics: Iterable[str]) -> None:
        for topic in topics:
            with self._lock:
                callbacks = list(self._subscribers.get(topic, ()))
            for callback in callbacks:
                try:
                    callback()
                except Exception:  # a subscriber gone wrong (its loop closed) wakes no one else
                    log.exception("commit signal %r: a subscriber failed", topic)


_SIGNALS: WeakKeyDictionary[Engine, CommitSignals] = WeakKeyDictionary()
_SIGNALS_LOCK = threading.Lock()


def commit_signals(engine: Engine) -> CommitSignals:
    """The signals of ``engine`` (one set per engine, shared by every Database built on it)."""
    with _SIGNALS_LOCK:
        found = _SIGNALS.get(engine)
        if found is None:
            found = _SIGNALS[engine] = CommitSignals()
        return found


def wake_on_commit(engine: Engine, topic: str, event: asyncio.Event) -> Callable[[], None]:
    """Set ``event`` (in the running loop) after every commit that announced ``topic``, from
    whichever thread committed; returns the function that unsubscribes."""
    loop = asyncio.get_running_loop()

    def wake() -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    return commit_signals(engine).subscribe(topic, wake)
