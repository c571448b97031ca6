"""The status book reports a meter or gateway turning lost once per offline episode, carries it in
the flush's changes, and keeps it through a failed write (the offline messages are queued when
the lost state is written: src/meterdesk/devices/offline_events.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from meterdesk.devices.offline_events import WentOffline
from meterdesk.devices.ports import Snapshot
from meterdesk.devices.status import LOST, ONLINE, GatewayState, MeterState, StatusBook

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def read(book: StatusBook, meter_id: int, seconds: int) -> None:
    book.succeeded(Snapshot(meter_id, at(seconds), Decimal(seconds)))


def fail(book: StatusBook, meter_id: int, seconds: int, *, connection: bool = False) -> None:
    book.failed(meter_id, "no answer", at(seconds), connection=connection)


def test_a_meter_turning_lost_is_reported_once_per_episode() -> None:
    book = StatusBook(lost_after=3)
    book.track(1, None)
    read(book, 1, 0)
    fail(book, 1, 10)
    fail(book, 1, 20)
    assert book.take_changes().lost_meters == []  # not lost yet
    fail(book, 1, 30)
    assert book.meters[1].state == LOST
    assert book.take_changes().lost_meters == [WentOffline(1, at(30), at(0))]
    fail(book, 1, 40)
    fail(book, 1, 50)
    assert book.take_changes().lost_meters == []  # still the same episode
    read(book, 1, 60)
    changes = book.take_changes()
    assert changes.lost_meters == [] and changes.meters[0]["state"] == ONLINE
    for seconds in (70, 80, 90):
        fail(book, 1, seconds)
    assert book.take_changes().lost_meters == [WentOffline(1, at(90), at(60))]  # a second one


def test_a_meter_never_seen_is_reported_with_no_last_seen_time() -> None:
    book = StatusBook(lost_after=2)
    book.track(1, None)
    fail(book, 1, 10)
    fail(book, 1, 20)
    assert book.take_changes().lost_meters == [WentOffline(1, at(20), None)]


def test_a_meter_known_lost_at_start_is_not_a_new_loss() -> None:
    book = StatusBook(lost_after=3)
    known = MeterState(1, state=LOST, last_seen_at=at(-3600), failures=7)
    book.track(1, 5, known)
    book.load_gateways({5: GatewayState(5, LOST, at(-3600))})
    for seconds in (10, 20, 30, 40):
        fail(book, 1, seconds)
    changes = book.take_changes()
    assert changes.lost_meters == [] and changes.lost_gateways == []
    assert changes.meters[0]["failures"] == 11 and changes.meters[0]["last_seen_at"] == at(-3600)


def test_a_meter_back_before_the_flush_was_never_written_lost() -> None:
    book = StatusBook(lost_after=1)
    book.track(1, None)
    fail(book, 1, 10)
    read(book, 1, 11)
    assert book.take_changes().lost_meters == []


def test_a_gateway_turning_lost_is_reported_once_per_episode() -> None:
    book = StatusBook(lost_after=2)
    book.track(1, 9)
    book.track(2, 9)
    read(book, 1, 0)
    read(book, 2, 1)
    for seconds in (10, 11, 20):
        fail(book, 1 if seconds != 11 else 2, seconds)
    assert book.gateways[9].state == ONLINE  # meter 2 is not lost yet
    fail(book, 2, 21)
    changes = book.take_changes()
    assert [w.id for w in changes.lost_meters] == [1, 2]
    assert changes.lost_gateways == [WentOffline(9, at(21), at(1))]
    fail(book, 1, 30)
    assert book.take_changes().lost_gateways == []
    read(book, 1, 40)
    assert book.gateways[9].state == ONLINE
    fail(book, 1, 50, connection=True)  # a failed connection counts at once
    assert book.take_changes().lost_gateways == [WentOffline(9, at(50), at(40))]


def test_a_failed_write_keeps_the_losses_for_the_next_flush() -> None:
    book = StatusBook(lost_after=1)
    book.track(1, 9)
    book.track(2, 9)
    read(book, 2, 0)
    fail(book, 1, 10)
    fail(book, 2, 11)
    failed = book.take_changes()
    assert [w.id for w in failed.lost_meters] == [1, 2] and len(failed.lost_gateways) == 1
    read(book, 2, 12)  # back meanwhile: its loss was never written, so it is dropped
    book.restore(failed)
    retried = book.take_changes()
    assert retried.lost_meters == [WentOffline(1, at(10), None)]
    assert retried.lost_gateways == []  # the gateway is online again with meter 2
    assert {row["meter_id"] for row in retried.meters} == {1, 2}
    book.restore(retried)
    assert book.take_changes().lost_meters == [WentOffline(1, at(10), None)]
