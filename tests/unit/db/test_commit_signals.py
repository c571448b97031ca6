"""A transaction that announces a topic wakes the topic's subscribers once it has committed —
never before (a woken worker must find the rows), never when it rolls back — from whichever
thread committed; a failing subscriber does not keep the others from hearing it."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, func, insert, select

from meterdesk.db import commit_signals
from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.shared.time import FakeClock

_metadata = MetaData()
_work = Table("work", _metadata, Column("id", Integer, primary_key=True))


@pytest.fixture
def db(tmp_path: Path) -> Database:
    engine = build_engine(f"sqlite:///{tmp_path}/signals.sqlite3")
    _metadata.create_all(engine)
    return Database(engine=engine, clock=FakeClock(datetime(2026, 11, 2, tzinfo=UTC)))


def _rows(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(_work)).scalar_one())


def test_subscribers_hear_a_topic_after_the_commit_and_see_its_rows(db: Database) -> None:
    seen: list[int] = []
    commit_signals.commit_signals(db.engine).subscribe("work", lambda: seen.append(_rows(db)))
    with db.transaction() as conn:
        conn.execute(insert(_work).values(id=1))
        commit_signals.announce(conn, "work")
        commit_signals.announce(conn, "work")  # twice in one transaction: one signal
        assert seen == []  # not before the commit
    assert seen == [1]


def test_a_rolled_back_transaction_or_another_topic_signals_nothing(db: Database) -> None:
    seen: list[str] = []
    commit_signals.commit_signals(db.engine).subscribe("work", lambda: seen.append("work"))
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute(insert(_work).values(id=1))
        commit_signals.announce(conn, "work")
        raise RuntimeError("the use case failed")
    with db.transaction() as conn:  # the same pooled connection: nothing left over
        conn.execute(insert(_work).values(id=2))
        commit_signals.announce(conn, "other")
    with db.transaction() as conn:
        conn.execute(insert(_work).values(id=3))
    assert seen == []


def test_unsubscribed_and_failing_subscribers_do_not_stop_the_others(db: Database) -> None:
    seen: list[str] = []
    signals = commit_signals.commit_signals(db.engine)

    def broken() -> None:
        raise RuntimeError("loop closed")

    signals.subscribe("work", broken)
    unsubscribe = signals.subscribe("work", lambda: seen.append("gone"))
    signals.subscribe("work", lambda: seen.append("kept"))
    unsubscribe()
    with db.transaction() as conn:
        commit_signals.announce(conn, "work")
    assert seen == ["kept"]


def test_an_asyncio_event_is_set_from_a_commit_in_another_thread(db: Database) -> None:
    async def scenario() -> None:
        event = asyncio.Event()
        unsubscribe = commit_signals.wake_on_commit(db.engine, "work", event)

        def commit_elsewhere() -> None:
            with db.transaction() as conn:
                conn.execute(insert(_work).values(id=1))
                commit_signals.announce(conn, "work")

        thread = threading.Thread(target=commit_elsewhere)
        thread.start()
        await asyncio.wait_for(event.wait(), 10)
        thread.join()
        unsubscribe()

    asyncio.run(scenario())
    assert _rows(db) == 1
