"""Queueing a batch of notifications at once (what the control loop does for an ingest batch)
writes exactly the rows, in the order, that queueing them one by one writes — and fails the same
way — while reading the channel settings once per organisation instead of once per message; on
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from builders import flat_definition, make_meter, make_tariff
from sqlalchemy import Connection, event, func, select
from test_notifications_outbox import Place, enable, make_place, outbox_rows

from meterdesk.billing import accounts
from meterdesk.billing.control_send import MessageRequest
from meterdesk.billing.outbox import DatabaseOutbox
from meterdesk.db.database import Database
from meterdesk.notifications import configuration, queueing
from meterdesk.notifications.queueing import NewNotification
from meterdesk.notifications.tables import notification_outbox
from meterdesk.shared.errors import NotFoundError, ValidationError
from meterdesk.shared.time import FakeClock
from meterdesk.sites import service as sites

pytestmark = pytest.mark.integration
ACTOR = "test:operator"
NIGHT = datetime(2026, 11, 2, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai: quiet hours hold normal ones


@dataclass(frozen=True)
class World:
    main: Place  # sms, email (with operator addresses), push, webhook, log; quiet hours
    bare_account: int  # main's second account: a customer without addresses, in English
    bare_customer: int
    other: Place  # Berlin, log and sms, no quiet hours
    silent: Place  # no channels at all


def make_world(db: Database) -> World:
    main = make_place(db)
    enable(db, main, "sms", "aliyun", access_key_id="id", sign_name="s", templates={})
    enable(
        db,
        main,
        "email",
        "smtp",
        host="h",
        port=25,
        sender="n@example.com",
        operator_addresses=["ops@example.com", "boss@example.com"],
    )
    enable(db, main, "push", "http", url="http://127.0.0.1/push")
    enable(db, main, "webhook", "webhook", url="https://hooks.example.com/md")
    enable(db, main, "log", "log", events=["supply_cut", "alarm_level_1", "meter_offline"])
    configuration.set_quiet_hours(
        db, organisation_id=main.org.id, start="22:00", end="07:00", actor=ACTOR
    )
    bare = sites.create_customer(db, organisation_id=main.org.id, name="Anna", language="en")
    water = make_meter(db, main.org, "W1", utility="water")
    water_tariff = make_tariff(db, main.org, "water", flat_definition("3.5", utility="water"))
    opened = accounts.open_account(
        db,
        organisation_id=main.org.id,
        request=accounts.OpenAccount(
            number="B-2",
            customer_id=bare,
            meters=[accounts.MeterOpening(water, water_tariff, Decimal("20"))],
        ),
        actor=ACTOR,
    )
    other = make_place(db, timezone="Europe/Berlin", name="Other Co")
    enable(db, other, "log", "log")
    enable(db, other, "sms", "aliyun", access_key_id="id", sign_name="s", templates={})
    silent = make_place(db, name="Silent Co")
    return World(main, opened.account_id, bare, other, silent)


def mixed_batch(world: World) -> list[NewNotification]:
    main, other = world.main, world.other
    account = main.account_id

    def note(place: Place, event: str, key: str, **extra: Any) -> NewNotification:
        params = extra.pop("params", {"balance": "12.30"})
        return NewNotification(place.org.id, event, key, params, **extra)

    return [
        note(main, "alarm_level_1", "already-queued", account_id=account),
        note(main, "alarm_level_1", "k:alarm:1", account_id=account, channels=("sms",)),
        note(main, "alarm_level_3", "k:alarm:3", account_id=account, channels=("sms", "voice")),
        note(main, "supply_cut", "k:cut", account_id=world.bare_account),
        note(main, "supply_restored", "k:restore", account_id=world.bare_account, language="zh-CN"),
        note(main, "command_failed", "k:command", account_id=account, params={"command": "trip"}),
        note(main, "refund", "k:refund", customer_id=world.bare_customer, site_id=main.org.site_id),
        note(main, "meter_offline", "k:offline", params={"meter": "M1"}),
        note(
            main,
            "recharge_credited",
            "k:money",
            account_id=account,
            params={"amount": Decimal("50.00"), "paid_at": NIGHT, "at": "overridden"},
        ),
        note(other, "recharge_credited", "k:money", account_id=other.account_id),
        note(other, "alarm_level_2", "k:alarm:2", account_id=other.account_id, channels=("x",)),
        note(main, "alarm_level_1", "k:alarm:1", account_id=account, params={"balance": "1"}),
        note(world.silent, "alarm_level_1", "k:alarm:1", account_id=world.silent.account_id),
        note(main, "supply_cut", "k:cut:2", account_id=account, customer_id=world.bare_customer),
    ]


def one_by_one(notifications: Sequence[NewNotification]) -> Callable[[Connection], list[int]]:
    def queue(conn: Connection) -> list[int]:
        written: list[int] = []
        for notification in notifications:
            written += queueing.enqueue_in(conn, **asdict(notification), at=NIGHT)
        return written

    return queue


def together(notifications: Sequence[NewNotification]) -> Callable[[Connection], list[int]]:
    return lambda conn: queueing.enqueue_many_in(conn, notifications, NIGHT)


def rolled_back(db: Database, queue: Callable[[Connection], list[int]]) -> list[dict[str, Any]]:
    """The rows ``queue`` writes, read in its transaction, which then rolls back — so both ways
    start from the same database. Checks that the ids it returns are those rows', in order."""
    table = notification_outbox
    with db.engine.connect() as conn:
        transaction = conn.begin()
        before = conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one()
        written = queue(conn)
        rows = conn.execute(select(table).where(table.c.id > before).order_by(table.c.id))
        found = [dict(row) for row in rows.mappings()]
        transaction.rollback()
    assert written == [row.pop("id") for row in found]
    return found


@contextmanager
def statements(conn: Connection) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*arguments: Any) -> None:
        seen.append(str(arguments[2]))  # (conn, cursor, statement, parameters, context, many)

    event.listen(conn, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(conn, "before_cursor_execute", record)


def test_a_batch_writes_the_rows_queueing_one_by_one_writes(db: Database) -> None:
    world = make_world(db)
    first = mixed_batch(world)[0]
    queued_before = queueing.enqueue(db, **asdict(first), at=NIGHT)
    batch = mixed_batch(world)

    expected = rolled_back(db, one_by_one(batch))
    assert rolled_back(db, together(batch)) == expected

    # The batch covers what it claims to: people, operators and systems, held and urgent rows,
    # both organisations, a customer without addresses, a forced and a customer's language.
    assert {row["channel"] for row in expected} == {"sms", "email", "push", "webhook", "log"}
    assert {row["organisation_id"] for row in expected} == {world.main.org.id, world.other.org.id}
    assert {row["timezone"] for row in expected} == {"Asia/Shanghai", "Europe/Berlin"}
    assert {row["language"] for row in expected} == {"zh-CN", "en"}
    assert {row["next_attempt_at"] == NIGHT for row in expected} == {True, False}
    assert "already-queued" not in {row["event_key"] for row in expected}
    # k:alarm:1 went to sms, webhook and log; its repeat, unrestricted, adds email and push only.
    assert [row["event_key"] for row in expected].count("k:alarm:1") == 5
    assert [row["id"] for row in outbox_rows(db)] == queued_before  # both rolled back


def test_a_batch_fails_where_one_by_one_fails_and_writes_nothing(db: Database) -> None:
    world = make_world(db)
    main, other = world.main, world.other
    good = NewNotification(main.org.id, "alarm_level_1", "k", {}, account_id=main.account_id)
    foreign = NewNotification(main.org.id, "refund", "k", {}, account_id=other.account_id)
    unknown = NewNotification(main.org.id, "nope", "k", {})
    for batch, error, message in (
        ([good, foreign], NotFoundError, f"account {other.account_id} not found"),
        ([good, foreign, unknown], NotFoundError, "account"),  # the first failure wins
        ([good, unknown, foreign], ValidationError, "unknown notification event"),
        ([NewNotification(main.org.id, "refund", " ", {}, account_id=main.account_id)],
         ValidationError, "event key"),
    ):  # fmt: skip
        for queue in (one_by_one(batch), together(batch)):
            with pytest.raises(error, match=message):
                rolled_back(db, queue)
    with db.transaction() as conn:  # the caller goes on after the error: no row of the batch
        with pytest.raises(NotFoundError):
            queueing.enqueue_many_in(conn, [good, foreign], NIGHT)
        assert conn.execute(select(func.count()).select_from(notification_outbox)).scalar() == 0


def test_unknown_organisations_and_silent_ones_queue_nothing_either_way(db: Database) -> None:
    world = make_world(db)
    batch = [
        NewNotification(999_999, "alarm_level_1", "k", {}, account_id=999_999),
        NewNotification(world.silent.org.id, "alarm_level_1", "k", {}, account_id=999_999),
    ]
    assert rolled_back(db, one_by_one(batch)) == rolled_back(db, together(batch)) == []
    with db.transaction() as conn, statements(conn) as seen:
        queueing.enqueue_many_in(conn, batch * 50, NIGHT)
    assert len(seen) == 2  # their channel settings, once each: nothing else to read or write


def test_a_batch_reads_settings_once_per_organisation_and_inserts_once(
    db: Database, clock: FakeClock
) -> None:
    world = make_world(db)
    main, other = world.main, world.other
    batch = [
        NewNotification(
            place.org.id, "supply_cut", f"cut:{number}", {}, account_id=place.account_id
        )
        for number in range(30)
        for place in (main, other)
    ] + [NewNotification(main.org.id, "supply_cut", "bare", {}, account_id=world.bare_account)]

    with db.transaction() as conn, statements(conn) as seen:
        written = queueing.enqueue_many_in(conn, batch, clock())
    with db.transaction() as conn, statements(conn) as seen_one_by_one:
        for number, notification in enumerate(batch):
            again = {**asdict(notification), "key": f"again:{number}"}
            queueing.enqueue_in(conn, **again, at=clock())

    def count(found: list[str], table: str) -> int:
        return sum(table in statement for statement in found)

    assert len(written) == 30 * 5 + 30 * 2 + 3  # main: 5 channels; other: 2; bare: no sms/email
    assert count(seen, "FROM notification_channel_settings") == 2
    assert count(seen, "FROM notification_quiet_hours") == 1
    assert count(seen, "FROM accounts") == 1 and count(seen, "FROM customers") == 1
    assert count(seen, "INSERT INTO notification_outbox") == 1
    assert len(seen) <= 10, seen
    assert count(seen_one_by_one, "FROM notification_channel_settings") == len(batch)
    assert count(seen_one_by_one, "INSERT INTO notification_outbox") == len(batch)


def test_the_control_loops_port_queues_a_batch_of_messages(db: Database, clock: FakeClock) -> None:
    world = make_world(db)
    main = world.main
    port = DatabaseOutbox(clock)
    alarm = MessageRequest(
        main.org.id, main.account_id, "alarm_level_3", "control:1:4:alarm:3:0", {}, ("sms",)
    )
    cut = MessageRequest(main.org.id, world.bare_account, "supply_cut", "control:2:5:cut", {}, None)
    with db.transaction() as conn:
        port.send_messages(conn, [alarm, cut, alarm])  # the same decision twice: queued once
    sent = [(row["event_kind"], row["channel"]) for row in outbox_rows(db)]
    assert sent == [
        ("alarm_level_3", "sms"),
        ("alarm_level_3", "webhook"),
        ("supply_cut", "log"),
        ("supply_cut", "push"),
        ("supply_cut", "webhook"),
    ]
