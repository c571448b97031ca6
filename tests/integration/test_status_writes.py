"""The poller's status flush and the command executor's read-back write the same
``device_status`` row: the flush must not put back a read older than the one stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from builders import make_meter, make_org

from meterdesk.db.database import Database
from meterdesk.devices.commands.device_state import save_snapshot
from meterdesk.devices.ports import Snapshot
from meterdesk.devices.status import StatusBook, meter_status, write_changes

pytestmark = pytest.mark.integration
T1 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def flush(db: Database, book: StatusBook) -> None:
    with db.transaction() as conn:
        write_changes(conn, book.take_changes())


def test_a_flush_after_a_failed_read_keeps_the_executors_newer_read_back(db: Database) -> None:
    """The poller read the relay closed at 08:00; the executor tripped it and read it back open
    at 08:05; the poller's next read failed at 08:10 and its flush wrote its whole book row,
    relay closed and last seen 08:00, over the confirmed trip."""
    meter_id = make_meter(db, make_org(db))
    book = StatusBook(lost_after=3)
    book.track(meter_id, None)
    book.succeeded(Snapshot(meter_id, T1, total=Decimal("1.0"), relay="closed"))
    flush(db, book)
    with db.transaction() as conn:  # the executor's read-back of a confirmed trip
        tripped = Snapshot(meter_id, T1 + timedelta(minutes=5), relay="open")
        save_snapshot(conn, tripped, T1 + timedelta(minutes=5))
    book.failed(meter_id, "timeout", T1 + timedelta(minutes=10), connection=False)
    flush(db, book)
    with db.engine.connect() as conn:
        stored = meter_status(conn, meter_id)
    assert stored is not None
    assert stored.relay == "open"  # the newer read stays
    assert stored.last_seen_at == T1 + timedelta(minutes=5)
    assert (stored.failures, stored.last_error) == (1, "timeout")  # the failure is counted


def test_a_newer_read_of_the_poller_replaces_an_older_stored_one(db: Database) -> None:
    meter_id = make_meter(db, make_org(db))
    with db.transaction() as conn:
        save_snapshot(conn, Snapshot(meter_id, T1, relay="open"), T1)
    book = StatusBook()
    book.track(meter_id, None)
    book.succeeded(Snapshot(meter_id, T1 + timedelta(minutes=1), relay="closed"))
    flush(db, book)
    with db.engine.connect() as conn:
        stored = meter_status(conn, meter_id)
    assert stored is not None
    assert (stored.relay, stored.last_seen_at, stored.state) == (
        "closed",
        T1 + timedelta(minutes=1),
        "online",
    )
