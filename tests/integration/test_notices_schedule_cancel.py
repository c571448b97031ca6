"""Scheduled and cancelled system notices, on SQLite and PostgreSQL: a scheduled notice's
messages are written at once but the dispatcher (driven by a fake clock) sends none before their
time and all after; one scheduled inside quiet hours waits for their end; a time in the past or
too far ahead writes nothing. A cancel stops every message not gone out, in one transaction with
the notice and its audit entry; twice answers the same; a message claimed before the cancel is
reported as gone and, should it come back unsent, is not tried again; nothing cancelled is ever
claimed or retried."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from builders import ACTOR
from notice_world import World, make_world, notice_rows
from sqlalchemy import func, select

from meterdesk.audit.tables import audit_log
from meterdesk.db.database import Database
from meterdesk.notifications import notice_model, notices, outbox, service
from meterdesk.notifications.channels.base import DeliveryResult, TransientDeliveryError
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.dispatcher import Dispatcher
from meterdesk.notifications.model import Channel
from meterdesk.notifications.tables import notices as notices_table
from meterdesk.notifications.tables import notification_log
from meterdesk.shared.errors import ConflictError, NotFoundError, ValidationError
from meterdesk.shared.time import FakeClock, zone

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # the clock fixture: 08:00 in Shanghai
AT_TEN = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)  # 10:00 the next day in Shanghai
AT_NIGHT = datetime(2026, 11, 3, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai: quiet hours 22–07
MORNING = datetime(2026, 11, 3, 23, 0, tzinfo=UTC)  # 07:00 the day after, when they end


def send(
    db: Database, world: World, key: str = "k1", send_at: datetime | None = None, **given: Any
) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "scope_kind": "building",
        "scope_ids": [world.building_b],
        "subject_text": "B 栋停水检修",
        "body": "12 月 9 日 9:00–12:00 停水检修，请提前储水。",
        "send_at": send_at,
    }
    arguments.update(given)
    found, _ = notices.send_notice(
        db,
        organisation_id=world.org,
        request=notice_model.notice_request(**arguments),
        key=key,
        actor=ACTOR,
    )
    return found


def log_worker(db: Database, **overrides: Any) -> Dispatcher:
    return Dispatcher(db, ChannelRegistry(clock=db.clock, overrides=overrides))


def drain(worker: Dispatcher) -> int:
    return asyncio.run(worker.drain())


def attempts(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(notification_log)).scalar_one())


def audited(db: Database, action: str) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.action == action)).mappings()
        return [dict(r) for r in rows]


def statuses(db: Database, notice_id: int) -> list[str]:
    return sorted(r["status"] for r in notice_rows(db, notice_id))


# --- scheduled ----------------------------------------------------------------------------------


def test_a_scheduled_notice_is_queued_now_and_sent_at_its_time_not_before(
    db: Database, clock: FakeClock
) -> None:
    world = make_world(db, log=True)
    notice = send(db, world, send_at=AT_TEN)
    assert notice["send_at"] == AT_TEN and notice["created_at"] == NOW
    rows = notice_rows(db, notice["id"])
    assert len(rows) == 4  # zhang and anna, SMS and log: written at once
    assert {r["next_attempt_at"] for r in rows} == {AT_TEN}
    assert {r["created_at"] for r in rows} == {NOW}
    assert notice["delivery"]["pending"] == 4
    (entry,) = audited(db, "notices.send")
    assert '"send_at"' in entry["detail"] and AT_TEN.isoformat() in entry["detail"]

    worker = log_worker(db)
    assert drain(worker) == 0 and attempts(db) == 0  # 08:00: not yet
    clock.now = AT_TEN - timedelta(seconds=1)
    assert drain(worker) == 0 and attempts(db) == 0  # a second before: still not
    clock.now = AT_TEN
    assert drain(worker) == 4
    logged = [r for r in notice_rows(db, notice["id"]) if r["channel"] == "log"]
    assert {r["status"] for r in logged} == {"sent"} and {r["sent_at"] for r in logged} == {AT_TEN}
    shown = notices.get_notice(db, organisation_id=world.org, notice_id=notice["id"])
    assert shown["delivery"]["sent"] == 2 and shown["delivery"]["pending"] == 0


def test_a_normal_notice_scheduled_in_quiet_hours_waits_for_their_end_an_urgent_one_not(
    db: Database, clock: FakeClock
) -> None:
    world = make_world(db, log=True)
    normal = send(db, world, "n", send_at=AT_NIGHT)
    urgent = send(db, world, "u", send_at=AT_NIGHT, urgent=True, subject_text="今晚停电")
    assert {r["next_attempt_at"] for r in notice_rows(db, normal["id"])} == {MORNING}
    assert {r["next_attempt_at"] for r in notice_rows(db, urgent["id"])} == {AT_NIGHT}
    assert normal["send_at"] == AT_NIGHT  # the notice keeps the time asked for

    worker = log_worker(db)
    clock.now = AT_NIGHT
    drain(worker)
    assert {r["status"] for r in notice_rows(db, normal["id"])} == {"pending"}
    assert "sent" in statuses(db, urgent["id"])
    clock.now = MORNING
    drain(worker)
    assert "sent" in statuses(db, normal["id"])


def test_a_time_not_ahead_or_too_far_ahead_is_refused_and_writes_nothing(
    db: Database, clock: FakeClock
) -> None:
    world = make_world(db)
    for when, words in (
        (NOW, "not in the future"),
        (NOW - timedelta(hours=1), "not in the future"),
        (NOW + timedelta(days=90, seconds=1), "at most 90 days ahead"),
    ):
        with pytest.raises(ValidationError, match=words):
            send(db, world, send_at=when)
    assert notice_rows(db) == [] and audited(db, "notices.send") == []
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(notices_table)).scalar_one() == 0
    with pytest.raises(ValidationError, match="time zone is required"):
        send(db, world, send_at=datetime(2026, 11, 3, 10, 0))  # noqa: DTZ001 - the naive time refused
    assert send(db, world, send_at=NOW + timedelta(days=90))["send_at"] == NOW + timedelta(days=90)


def test_a_repeat_after_its_time_answers_the_first_and_another_time_is_another_notice(
    db: Database, clock: FakeClock
) -> None:
    world = make_world(db)
    first = send(db, world, send_at=AT_TEN)
    clock.now = AT_TEN + timedelta(hours=1)  # a retry of the request after the time passed
    again, replayed = notices.send_notice(
        db,
        organisation_id=world.org,
        request=notice_model.notice_request(
            scope_kind="building",
            scope_ids=[world.building_b],
            subject_text="B 栋停水检修",
            body="12 月 9 日 9:00–12:00 停水检修，请提前储水。",
            send_at=AT_TEN,
        ),
        key="k1",
        actor=ACTOR,
    )
    assert replayed and again["id"] == first["id"]
    with pytest.raises(Exception, match="different notice"):
        send(db, world, send_at=AT_TEN + timedelta(days=1))


def test_local_times_are_read_in_the_places_zone(db: Database) -> None:
    world = make_world(db)
    scope = notice_model.scope("building", [world.building_b])
    tz = notices.scope_zone(db, world.org, scope)
    assert tz == zone("Asia/Shanghai")
    assert notice_model.local_send_at("2026-12-09 08:00", tz) == datetime(
        2026, 12, 9, 0, 0, tzinfo=UTC
    )
    assert notice_model.local_send_at("2026-12-09T08:00+09:00", tz) == datetime(
        2026, 12, 8, 23, 0, tzinfo=UTC
    )
    with pytest.raises(ValidationError, match="not a date and time"):
        notice_model.local_send_at("tomorrow", tz)
    other = make_world(db, "Other Co")
    with pytest.raises(NotFoundError):
        notices.scope_zone(db, world.org, notice_model.scope("building", [other.building_b]))


# --- cancelled ----------------------------------------------------------------------------------


def test_cancelling_before_it_goes_stops_every_message_and_twice_answers_the_same(
    db: Database, clock: FakeClock
) -> None:
    world = make_world(db, log=True)
    notice = send(db, world, send_at=AT_TEN)
    clock.advance(timedelta(minutes=5))

    cancelled, before = notices.cancel_notice(
        db, organisation_id=world.org, notice_id=notice["id"], actor="op2"
    )
    assert not before
    assert (cancelled["stopped"], cancelled["gone"]) == (4, 0)
    assert cancelled["delivery"]["cancelled"] == 4 and cancelled["delivery"]["pending"] == 0
    assert (cancelled["cancelled_at"], cancelled["cancelled_by"]) == (clock(), "op2")
    rows = notice_rows(db, notice["id"])
    assert {r["status"] for r in rows} == {"cancelled"}
    assert {r["last_error"] for r in rows} == {
        f"notice #{notice['id']} was cancelled before this message went out"
    }
    (entry,) = audited(db, "notices.cancel")
    assert entry["actor"] == "op2" and entry["subject"] == f"notice:{notice['id']}"
    assert '"stopped": 4' in entry["detail"]

    clock.advance(timedelta(minutes=5))
    again, before = notices.cancel_notice(
        db, organisation_id=world.org, notice_id=notice["id"], actor="someone else"
    )
    assert before and again == cancelled  # the same answer: first time, first actor
    assert len(audited(db, "notices.cancel")) == 1 and notice_rows(db, notice["id"]) == rows

    clock.now = AT_TEN + timedelta(days=1)
    assert drain(log_worker(db)) == 0 and attempts(db) == 0  # nothing cancelled is claimed
    with db.transaction() as conn:
        late = clock() + timedelta(days=365)
        assert outbox.claim_due(conn, now=late, limit=100, lease=timedelta(minutes=5)) == []


def test_another_organisations_notice_is_not_found_and_nothing_changes(db: Database) -> None:
    world = make_world(db)
    other = make_world(db, "Other Co")
    theirs = send(db, other, send_at=AT_TEN)
    with pytest.raises(NotFoundError, match=f"notice {theirs['id']} not found"):
        notices.cancel_notice(db, organisation_id=world.org, notice_id=theirs["id"], actor=ACTOR)
    assert {r["status"] for r in notice_rows(db, theirs["id"])} == {"pending"}
    assert audited(db, "notices.cancel") == []


def test_a_cancel_after_some_went_out_reports_them_as_gone(db: Database, clock: FakeClock) -> None:
    world = make_world(db, log=True)
    notice = send(db, world, urgent=True)  # at once
    drain(log_worker(db))  # the log messages go; SMS has no provider credentials here
    sent = [r for r in notice_rows(db, notice["id"]) if r["status"] == "sent"]
    assert len(sent) == 2
    cancelled, _ = notices.cancel_notice(
        db, organisation_id=world.org, notice_id=notice["id"], actor=ACTOR
    )
    assert cancelled["gone"] == 2 and cancelled["stopped"] == 4 - 2 - _final(cancelled)
    assert cancelled["delivery"]["sent"] == 2


def _final(notice: dict[str, Any]) -> int:
    return int(notice["delivery"]["failed"]) + int(notice["delivery"]["suppressed"])


def test_a_cancel_landing_between_claim_and_send_stops_the_rest_and_reports_the_claimed(
    db: Database, clock: FakeClock
) -> None:
    """The dispatcher claims a batch (the rows are 'sending'), the operator cancels, then the
    dispatcher sends what it claimed: those are reported gone, the others are stopped."""
    world = make_world(db, log=True)
    notice = send(db, world, urgent=True)
    worker = log_worker(db)
    worker.batch_size = 1  # the claim takes one of the four messages
    original = worker._claim
    answers: list[dict[str, Any]] = []

    def claim_then_cancel(now: datetime) -> Any:
        batch = original(now)
        found, _ = notices.cancel_notice(
            db, organisation_id=world.org, notice_id=notice["id"], actor=ACTOR
        )
        answers.append(found)
        return batch

    worker._claim = claim_then_cancel  # type: ignore[method-assign]
    assert asyncio.run(worker.run_once()) == 1
    (answer,) = answers
    assert (answer["stopped"], answer["gone"]) == (3, 1)
    assert answer["delivery"]["sending"] == 1
    worker._claim = original  # type: ignore[method-assign]
    clock.advance(timedelta(days=1))
    drain(worker)
    after = notices.get_notice(db, organisation_id=world.org, notice_id=notice["id"])
    assert after["delivery"]["cancelled"] == 3
    assert after["delivery"]["sent"] + after["delivery"]["failed"] == 1  # the claimed one went


def test_a_message_claimed_before_the_cancel_that_comes_back_unsent_is_not_tried_again(
    db: Database, clock: FakeClock
) -> None:
    world = make_world(db, log=True)
    notice = send(db, world, urgent=True, channel_names=["email"])  # person channels: none
    rows = notice_rows(db, notice["id"])
    assert {r["channel"] for r in rows} == {"log"} and len(rows) == 2

    class Flaky:
        calls = 0

        async def send(self, message: Any) -> DeliveryResult:
            Flaky.calls += 1
            # The operator cancels while this message is on its way; the send then fails.
            notices.cancel_notice(
                db, organisation_id=world.org, notice_id=notice["id"], actor=ACTOR
            )
            raise TransientDeliveryError("log: disk busy")

    worker = log_worker(db, **{Channel.LOG: Flaky()})
    worker.concurrency = 1
    drain(worker)
    rows = notice_rows(db, notice["id"])
    assert {r["status"] for r in rows} == {"cancelled"}  # no retry is queued
    assert any("log: disk busy; notice #" in (r["last_error"] or "") for r in rows)
    clock.advance(timedelta(days=1))
    assert drain(worker) == 0
    found = notices.get_notice(db, organisation_id=world.org, notice_id=notice["id"])
    assert found["delivery"]["cancelled"] == 2 and found["delivery"]["pending"] == 0


def test_a_cancel_racing_a_claim_in_another_transaction_never_stops_a_claimed_row(
    db: Database, clock: FakeClock
) -> None:
    """The claim's transaction has not committed when the cancel starts: the cancel waits for
    it (PostgreSQL: the row locks; SQLite: the writer's turn) and then stops only what is still
    pending; the claimed rows are reported gone, never 'cancelled' under a dispatcher."""
    world = make_world(db, log=True)
    notice = send(db, world, urgent=True)
    answers: list[dict[str, Any]] = []

    def cancel() -> None:
        found, _ = notices.cancel_notice(
            db, organisation_id=world.org, notice_id=notice["id"], actor=ACTOR
        )
        answers.append(found)

    racer = threading.Thread(target=cancel)
    with db.transaction() as conn:
        claimed = outbox.claim_due(conn, now=clock(), limit=2, lease=timedelta(minutes=5))
        racer.start()
        time.sleep(0.3)  # the cancel is under way and must wait for this transaction
        assert answers == []
    racer.join(timeout=30)
    (answer,) = answers
    assert len(claimed) == 2 and (answer["stopped"], answer["gone"]) == (2, 2)
    by_id = {r["id"]: r["status"] for r in notice_rows(db, notice["id"])}
    assert {by_id[c.id] for c in claimed} == {"sending"}


def test_an_operator_cannot_retry_a_message_of_a_cancelled_notice(
    db: Database, clock: FakeClock
) -> None:
    world = make_world(db, log=False)
    notice = send(db, world, urgent=True)
    drain(log_worker(db))  # SMS without credentials: fails
    failed = [r for r in notice_rows(db, notice["id"]) if r["status"] == "failed"]
    assert failed
    notices.cancel_notice(db, organisation_id=world.org, notice_id=notice["id"], actor=ACTOR)
    with pytest.raises(ConflictError, match="which was cancelled"):
        service.retry_notification(
            db, organisation_id=world.org, outbox_id=failed[0]["id"], actor=ACTOR
        )
    assert {r["status"] for r in notice_rows(db, notice["id"])} == {"failed"}
    stopped = send(db, world, "k2", send_at=AT_TEN)
    notices.cancel_notice(db, organisation_id=world.org, notice_id=stopped["id"], actor=ACTOR)
    row = notice_rows(db, stopped["id"])[0]
    with pytest.raises(ConflictError, match="is cancelled, only failed or suppressed"):
        service.retry_notification(db, organisation_id=world.org, outbox_id=row["id"], actor=ACTOR)
