"""System notices (系统通知): a notice reaches exactly the customers of the open accounts in its
scope, once per customer and channel, in one transaction with the notice; a repeat with its key
sends nothing; the dispatcher delivers its text. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from builders import ACTOR
from notice_world import World, make_world, notice_rows
from sqlalchemy import func, select

from meterdesk.audit.tables import audit_log
from meterdesk.db.database import Database
from meterdesk.notifications import notice_model, notices, queueing
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.dispatcher import Dispatcher
from meterdesk.notifications.tables import notices as notices_table
from meterdesk.notifications.tables import notification_log
from meterdesk.shared.errors import ConflictError, IdempotencyConflictError, NotFoundError
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration
NIGHT = datetime(2026, 11, 2, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai: inside quiet hours


def send(db: Database, world: World, key: str = "k1", **given: Any) -> tuple[dict[str, Any], bool]:
    arguments: dict[str, Any] = {
        "scope_kind": "building",
        "scope_ids": [world.building_b],
        "subject_text": "B 栋停水检修",
        "body": "12 月 9 日 9:00–12:00 停水检修，请提前储水。",
    }
    arguments.update(given)
    return notices.send_notice(
        db,
        organisation_id=world.org,
        request=notice_model.notice_request(**arguments),
        key=key,
        actor=ACTOR,
    )


def count(db: Database, table: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_building_notice_reaches_its_open_accounts_customers_once_per_channel(
    db: Database,
) -> None:
    world = make_world(db, log=False)
    notice, replayed = send(db, world)

    rows = notice_rows(db, notice["id"])
    # zhang (two rooms in B: once) and anna; not chen (closed), not wang (building A)
    assert sorted((r["customer_id"], r["channel"]) for r in rows) == sorted(
        [(world.customers["zhang"], "sms"), (world.customers["anna"], "sms")]
    )
    assert {r["address"] for r in rows} == {"+8613900000001", "+8613900000002"}
    assert not replayed and notice["recipient_count"] == 2
    assert notice["delivery"]["pending"] == 2
    languages = {r["customer_id"]: r["language"] for r in rows}
    assert languages[world.customers["anna"]] == "en"
    with db.read() as conn:
        entry = (
            conn.execute(select(audit_log).where(audit_log.c.action == "notices.send"))
            .mappings()
            .one()
        )
    assert entry["actor"] == ACTOR and entry["subject"] == f"notice:{notice['id']}"


def test_a_repeat_with_its_key_queues_nothing_and_another_text_is_refused(db: Database) -> None:
    world = make_world(db)
    first, _ = send(db, world)
    before = notice_rows(db)

    again, replayed = send(db, world)
    assert replayed and again["id"] == first["id"]
    assert notice_rows(db) == before and count(db, notices_table) == 1

    with pytest.raises(IdempotencyConflictError):
        send(db, world, body="另一段文字")
    assert notice_rows(db) == before and count(db, notices_table) == 1


def test_the_same_key_sent_at_the_same_moment_answers_the_first(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both sends read "no notice under this key" before either committed: the second's insert
    meets the first's row (the unique key) and it answers the first notice."""
    world = make_world(db)
    original = notices._replay
    calls: list[int] = []

    def unseen_at_first(*arguments: Any) -> int | None:
        calls.append(1)
        return None if len(calls) in (1, 2) else original(*arguments)

    monkeypatch.setattr(notices, "_replay", unseen_at_first)
    first, first_replayed = send(db, world)
    messages = notice_rows(db)
    second, second_replayed = send(db, world)
    assert (first_replayed, second_replayed) == (False, True) and second["id"] == first["id"]
    assert count(db, notices_table) == 1 and notice_rows(db) == messages
    with pytest.raises(IdempotencyConflictError):
        calls.clear()
        calls.append(1)  # the next read inside the transaction sees nothing, the one after does
        send(db, world, body="另一段文字")
    assert count(db, notices_table) == 1


def test_a_failure_midway_leaves_neither_notice_nor_message(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world(db)
    original = queueing.enqueue_many_in
    written: list[int] = []

    def boom(*arguments: Any, **keywords: Any) -> list[int]:
        written.extend(original(*arguments, **keywords))  # the notice and its messages ...
        raise RuntimeError("the process died")  # ... and the transaction never commits

    monkeypatch.setattr(queueing, "enqueue_many_in", boom)
    with pytest.raises(RuntimeError):
        send(db, world)
    assert len(written) == 4  # zhang and anna on SMS and the log
    assert count(db, notices_table) == 0 and notice_rows(db) == []
    with db.read() as conn:
        audited = select(func.count()).where(audit_log.c.action == "notices.send")
        assert conn.execute(audited).scalar_one() == 0


def test_a_scope_without_open_accounts_or_of_another_organisation_writes_nothing(
    db: Database,
) -> None:
    world = make_world(db)
    other = make_world(db, "Other Co")
    with pytest.raises(ConflictError, match="no open account"):
        send(db, world, scope_kind="rooms", scope_ids=[world.rooms["B-103"]])  # chen's, closed
    with pytest.raises(NotFoundError, match=f"building {other.building_b} not found"):
        send(db, world, scope_ids=[other.building_b])
    with pytest.raises(NotFoundError, match="room"):
        send(db, world, scope_kind="rooms", scope_ids=[world.rooms["A-101"], other.rooms["A-101"]])
    assert count(db, notices_table) == 0 and notice_rows(db) == []


def test_scopes_site_floor_rooms_and_organisation(db: Database) -> None:
    world = make_world(db, log=False)
    make_world(db, "Other Co", log=False)

    def reached(key: str, kind: str, ids: list[int]) -> set[int]:
        found, _ = send(db, world, key, scope_kind=kind, scope_ids=ids)
        return {r["customer_id"] for r in notice_rows(db, found["id"])}

    c = world.customers
    everyone = {c["zhang"], c["anna"], c["wang"]}
    assert reached("o", "organisation", []) == everyone
    assert reached("s", "site", [world.site]) == everyone
    assert reached("f", "floor", [world.floor_b1]) == {c["zhang"], c["anna"]}
    assert reached("r", "rooms", [world.rooms["A-101"], world.rooms["B-201"]]) == {
        c["wang"],
        c["zhang"],
    }


def test_urgent_goes_at_once_and_normal_waits_for_quiet_hours(
    db: Database, clock: FakeClock
) -> None:
    world = make_world(db, log=False)
    clock.now = NIGHT
    normal, _ = send(db, world, "n")
    urgent, _ = send(db, world, "u", urgent=True, subject_text="现在停水")

    normal_rows, urgent_rows = notice_rows(db, normal["id"]), notice_rows(db, urgent["id"])
    assert {r["urgency"] for r in normal_rows} == {"normal"}
    assert {r["urgency"] for r in urgent_rows} == {"urgent"}
    assert all(r["next_attempt_at"] > NIGHT for r in normal_rows)  # 07:00 next morning
    assert all(r["next_attempt_at"] == NIGHT for r in urgent_rows)


def test_chosen_channels_restrict_the_person_channels(db: Database) -> None:
    world = make_world(db, log=False)
    found, _ = send(db, world, channel_names=["email"])
    rows = notice_rows(db, found["id"])
    assert rows == []  # e-mail is not configured: nobody is reached on it, nothing is queued
    assert found["delivery"] == {
        "pending": 0,
        "sending": 0,
        "sent": 0,
        "failed": 0,
        "suppressed": 0,
        "cancelled": 0,
    }


def test_the_log_gets_one_message_per_tenant_like_every_customer_event(db: Database) -> None:
    world = make_world(db)
    found, _ = send(db, world)
    logged = [r for r in notice_rows(db, found["id"]) if r["channel"] == "log"]
    rooms = {r["account_id"] for r in logged}
    # zhang's first room only (two rooms in B: once), anna's
    assert len(logged) == 2 and len(rooms) == 2
    assert found["delivery"]["pending"] == 4  # 2 SMS and 2 log messages


@pytest.mark.parametrize(
    ("room", "words"),
    [
        ("B-101", ["【示例物业】", "B 栋停水检修", "请提前储水"]),
        ("B-102", ["[示例物业]", "B 栋停水检修"]),
    ],
)
def test_the_dispatcher_delivers_its_subject_and_text_through_the_log(
    db: Database, room: str, words: list[str]
) -> None:
    world = make_world(db)
    found, _ = send(db, world, scope_kind="rooms", scope_ids=[world.rooms[room]])
    asyncio.run(Dispatcher(db, ChannelRegistry(clock=db.clock)).drain())

    log_row = next(r for r in notice_rows(db, found["id"]) if r["channel"] == "log")
    assert log_row["status"] == "sent"
    with db.read() as conn:
        text = conn.execute(
            select(notification_log.c.detail).where(notification_log.c.outbox_id == log_row["id"])
        ).scalar_one()
    assert all(word in text for word in words), text
    shown = notices.get_notice(db, organisation_id=world.org, notice_id=found["id"])
    assert shown["delivery"]["sent"] >= 1
