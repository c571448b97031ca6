"""The notification outbox in real transactions, on SQLite and PostgreSQL: rows are written with
the caller's change or not at all, queued once per event/recipient/channel, routed to the right
channels and addresses, held through quiet hours, and delivered, retried, suppressed or failed
by the dispatcher with every attempt logged."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from builders import Org, make_meter, make_tariff, open_account
from sqlalchemy import Connection, func, insert, select

from meterdesk.audit.tables import audit_log
from meterdesk.billing.outbox import DatabaseOutbox
from meterdesk.db.database import Database
from meterdesk.notifications import configuration, queueing, service
from meterdesk.notifications.channels.base import (
    DeliveryResult,
    OutgoingMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from meterdesk.notifications.channels.log import LogChannel
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.dispatcher import Dispatcher
from meterdesk.notifications.model import Channel, Urgency
from meterdesk.notifications.tables import notification_log, notification_outbox
from meterdesk.shared.errors import ConflictError, NotFoundError, ValidationError
from meterdesk.shared.time import FakeClock
from meterdesk.sites import service as sites
from support.outbox import write_tied_history

pytestmark = pytest.mark.integration
ACTOR = "test:operator"


@dataclass(frozen=True)
class Place:
    org: Org
    account_id: int
    customer_id: int


def make_place(db: Database, *, timezone: str = "Asia/Shanghai", name: str = "示例物业") -> Place:
    org_id = sites.create_organisation(db, name=name, timezone=timezone)
    site = sites.create_site(db, organisation_id=org_id, name="Park", timezone=timezone)
    building = sites.create_building(db, organisation_id=org_id, site_id=site, name="A")
    floor = sites.create_floor(db, organisation_id=org_id, building_id=building, name="1F", level=1)
    room = sites.create_room(db, organisation_id=org_id, floor_id=floor, name="A-105", kind="shop")
    customer = sites.create_customer(
        db,
        organisation_id=org_id,
        name="张伟",
        phone="13900000000",
        email="zhang.wei@example.com",
        wechat_openid="oOPENID-zhangwei",
    )
    org = Org(org_id, site, room, customer, name)
    meter = make_meter(db, org)
    opened = open_account(db, org, "A-1", [(meter, make_tariff(db, org), "1000")])
    return Place(org, opened.account_id, customer)


def enable(db: Database, place: Place, channel: str, provider: str, **config: Any) -> None:
    events = config.pop("events", None)
    refs = config.pop("secret_refs", {})
    configuration.configure_channel(
        db,
        organisation_id=place.org.id,
        channel=channel,
        provider=provider,
        config=config,
        secret_refs=refs,
        events=events,
        actor=ACTOR,
    )


def alarm(conn: Connection, place: Place, at: datetime, **overrides: Any) -> list[int]:
    arguments: dict[str, Any] = {
        "organisation_id": place.org.id,
        "event": "alarm_level_1",
        "key": "control:1:1:alarm:1:0",
        "params": {"balance": "12.30", "threshold": "20.00", "level": 1},
        "at": at,
        "account_id": place.account_id,
    }
    arguments.update(overrides)
    return queueing.enqueue_in(conn, **arguments)


def outbox_rows(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(select(notification_outbox).order_by(notification_outbox.c.id))
        return [dict(row) for row in rows.mappings()]


@dataclass
class Scripted:
    """A channel adapter that answers from a script: a DeliveryResult, or an exception."""

    script: list[Any]
    seen: list[OutgoingMessage] = field(default_factory=list)

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        self.seen.append(message)
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, DeliveryResult)
        return answer


def dispatcher(db: Database, **overrides: Any) -> Dispatcher:
    return Dispatcher(db, ChannelRegistry(clock=db.clock, overrides=overrides))


def drain(worker: Dispatcher) -> int:
    return asyncio.run(worker.drain())


# --- writing inside the caller's transaction -----------------------------------------------------


def test_outbox_rows_roll_back_with_the_callers_transaction(db: Database, clock: FakeClock) -> None:
    place = make_place(db)
    enable(db, place, "sms", "aliyun", access_key_id="id", sign_name="示例物业", templates={})

    class BoomError(Exception):
        pass

    with pytest.raises(BoomError), db.transaction() as conn:
        assert len(alarm(conn, place, clock())) == 1
        raise BoomError

    assert outbox_rows(db) == []


def test_enqueue_resolves_the_customer_room_utility_and_zone(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    enable(db, place, "sms", "aliyun", access_key_id="id", sign_name="示例物业", templates={})
    enable(db, place, "email", "smtp", host="127.0.0.1", port=25, sender="n@example.com")
    enable(db, place, "wechat", "wechat", app_id="wx1", templates={})
    enable(db, place, "push", "http", url="http://127.0.0.1/push")

    with db.transaction() as conn:
        written = alarm(conn, place, clock())

    rows = outbox_rows(db)
    assert len(written) == 4
    assert {(r["channel"], r["address"]) for r in rows} == {
        ("sms", "+8613900000000"),
        ("email", "zhang.wei@example.com"),
        ("wechat", "oOPENID-zhangwei"),
        ("push", str(place.customer_id)),
    }
    row = rows[0]
    assert row["customer_id"] == place.customer_id and row["account_id"] == place.account_id
    assert (row["status"], row["attempts"], row["urgency"]) == ("pending", 0, "normal")
    assert (row["timezone"], row["language"], row["template_key"]) == (
        "Asia/Shanghai",
        "zh-CN",
        "balance_alarm",
    )
    params = json.loads(row["params"])
    assert params["customer"] == "张伟" and params["room"] == "A-105"
    assert params["organisation"] == "示例物业" and params["utility"] == "electricity"
    assert params["balance"] == "12.30" and params["account"] == "A-1"


def test_the_same_event_is_queued_once_per_recipient_and_channel(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    enable(db, place, "sms", "aliyun", access_key_id="id", sign_name="s", templates={})
    with db.transaction() as conn:
        first = alarm(conn, place, clock())
    with db.transaction() as conn:
        again = alarm(conn, place, clock() + timedelta(minutes=1), params={"balance": "11.00"})
        repeat = alarm(conn, place, clock(), key="control:1:1:alarm:1:1")

    assert len(first) == 1 and again == [] and len(repeat) == 1
    assert len(outbox_rows(db)) == 2


def test_a_callers_channel_choice_restricts_person_channels_not_system_ones(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    enable(db, place, "sms", "aliyun", access_key_id="id", sign_name="s", templates={})
    enable(db, place, "email", "smtp", host="h", port=25, sender="n@example.com")
    enable(db, place, "webhook", "webhook", url="https://hooks.example.com/md")
    enable(db, place, "log", "log", events=["supply_cut"])

    with db.transaction() as conn:
        alarm(conn, place, clock(), channels=("sms",))
        queueing.enqueue_in(
            conn,
            organisation_id=place.org.id,
            event="supply_cut",
            key="control:1:2:cut",
            params={"balance": "-0.20"},
            at=clock(),
            account_id=place.account_id,
            channels=("voice",),
        )

    sent = {(r["event_kind"], r["channel"]) for r in outbox_rows(db)}
    assert sent == {
        ("alarm_level_1", "sms"),
        ("alarm_level_1", "webhook"),
        ("supply_cut", "webhook"),
        ("supply_cut", "log"),
    }


def test_operator_events_go_to_the_channels_operator_addresses(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    enable(
        db,
        place,
        "email",
        "smtp",
        host="h",
        port=25,
        sender="n@example.com",
        operator_addresses=["ops@example.com", "boss@example.com"],
    )
    enable(db, place, "sms", "aliyun", access_key_id="id", sign_name="s", templates={})
    with db.transaction() as conn:
        written = queueing.enqueue_in(
            conn,
            organisation_id=place.org.id,
            event="command_failed",
            key="command:77",
            params={"command": "relay_trip", "meter": "M1", "error": "no read-back"},
            at=clock(),
            account_id=place.account_id,
        )

    rows = outbox_rows(db)
    assert len(written) == 2
    assert {r["address"] for r in rows} == {"ops@example.com", "boss@example.com"}
    assert {r["customer_id"] for r in rows} == {None}
    assert {r["urgency"] for r in rows} == {"urgent"}


def test_customers_without_an_address_fail_visibly_and_disabled_channels_get_no_row(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    bare = sites.create_customer(db, organisation_id=place.org.id, name="王芳")
    enable(db, place, "sms", "aliyun", access_key_id="id", sign_name="s", templates={})
    configuration.configure_channel(
        db,
        organisation_id=place.org.id,
        channel="email",
        provider="smtp",
        enabled=False,
        config={"host": "h", "port": 25, "sender": "n@example.com"},
        actor=ACTOR,
    )
    with db.transaction() as conn:
        assert len(alarm(conn, place, clock(), account_id=None, customer_id=bare)) == 1
        assert len(alarm(conn, place, clock())) == 1  # sms only: email is switched off
    unreachable = outbox_rows(db)[0]
    assert (unreachable["channel"], unreachable["status"], unreachable["address"]) == (
        "sms",
        "failed",
        "",
    )


def test_normal_messages_queued_in_quiet_hours_wait_for_the_morning(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    enable(db, place, "sms", "aliyun", access_key_id="id", sign_name="s", templates={})
    configuration.set_quiet_hours(
        db, organisation_id=place.org.id, start="22:00", end="07:00", actor=ACTOR
    )
    night = datetime(2026, 11, 2, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai
    with db.transaction() as conn:
        alarm(conn, place, night)
        alarm(conn, place, night, event="alarm_level_3", key="control:1:2:alarm:3:0")

    due = {r["event_kind"]: r["next_attempt_at"] for r in outbox_rows(db)}
    assert due["alarm_level_1"] == datetime(2026, 11, 2, 23, 0, tzinfo=UTC)  # 07:00 local
    assert due["alarm_level_3"] == night  # urgent


def test_a_caller_can_hurry_a_normal_event_but_not_hold_an_urgent_one(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    enable(db, place, "sms", "aliyun", access_key_id="id", sign_name="s", templates={})
    configuration.set_quiet_hours(
        db, organisation_id=place.org.id, start="22:00", end="07:00", actor=ACTOR
    )
    night = datetime(2026, 11, 2, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai
    with db.transaction() as conn:
        alarm(conn, place, night, event="alarm_level_2", urgency=Urgency.URGENT)
        alarm(conn, place, night, event="alarm_level_3", key="k:3", urgency=Urgency.NORMAL)

    found = {r["event_kind"]: (r["urgency"], r["next_attempt_at"]) for r in outbox_rows(db)}
    assert found == {"alarm_level_2": ("urgent", night), "alarm_level_3": ("urgent", night)}


def test_bad_input_is_refused_and_changes_nothing(db: Database, clock: FakeClock) -> None:
    place = make_place(db)
    enable(db, place, "sms", "aliyun", access_key_id="id", sign_name="s", templates={})
    other = make_place(db, name="Other Co")
    with pytest.raises(ValidationError, match="unknown notification event"):
        queueing.enqueue(db, organisation_id=place.org.id, event="nope", key="k", params={})
    with pytest.raises(NotFoundError, match="account"):
        queueing.enqueue(
            db,
            organisation_id=place.org.id,
            event="refund",
            key="k",
            params={},
            account_id=other.account_id,
        )
    with pytest.raises(ValidationError, match="looks like a secret"):
        enable(db, place, "webhook", "webhook", url="https://x", secret="plain-text")  # noqa: S106
    with pytest.raises(ValidationError, match="environment variable"):
        enable(db, place, "webhook", "webhook", url="https://x", secret_refs={"secret": "abc123"})
    assert outbox_rows(db) == []


def test_the_control_loops_outbox_port_queues_its_alarm_messages(
    db: Database, clock: FakeClock
) -> None:
    """``DatabaseOutbox.message`` takes exactly what ``billing.control`` sends."""
    place = make_place(db)
    enable(db, place, "sms", "aliyun", access_key_id="id", sign_name="s", templates={})
    enable(db, place, "voice", "aliyun", access_key_id="id", templates={})
    port = DatabaseOutbox(clock)
    with db.transaction() as conn:
        for _ in range(2):  # the same decision twice: queued once
            port.message(
                conn,
                organisation_id=place.org.id,
                account_id=place.account_id,
                event="alarm_level_3",
                key=f"control:{place.account_id}:4:alarm:3:0",
                params={
                    "balance": "4.50",
                    "at": clock().isoformat(),
                    "level": 3,
                    "repeat": 0,
                    "threshold": None,
                    "days_left": 1.5,
                },
                channels=("sms", "voice"),
            )
    assert sorted(r["channel"] for r in outbox_rows(db)) == ["sms", "voice"]


# --- delivery ------------------------------------------------------------------------------------


def test_dispatcher_renders_at_delivery_sends_and_logs(db: Database, clock: FakeClock) -> None:
    place = make_place(db)
    enable(db, place, "log", "log")
    stream = io.StringIO()
    with db.transaction() as conn:
        alarm(conn, place, clock())

    assert drain(dispatcher(db, **{Channel.LOG: LogChannel(stream)})) == 1

    row = outbox_rows(db)[0]
    assert (row["status"], row["attempts"], row["sent_at"]) == ("sent", 1, clock())
    assert row["provider_message_id"] == f"log-{row['id']}"
    expected = (
        "【示例物业】尊敬的张伟，您的房间A-105电费余额为 12.30 元，"
        "已低于一级告警金额 20.00 元，请及时充值。"
    )
    assert expected in stream.getvalue()
    attempts = service.notification_attempts(db, organisation_id=place.org.id, outbox_id=row["id"])
    assert [(a["attempt"], a["result"], a["detail"]) for a in attempts] == [(1, "sent", expected)]
    assert drain(dispatcher(db, **{Channel.LOG: LogChannel(stream)})) == 0  # nothing twice


def test_a_failing_channel_retries_with_backoff_then_fails_with_the_error(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    enable(db, place, "push", "http", url="http://127.0.0.1:9/push")
    flaky = Scripted([TransientDeliveryError("push: HTTP 503")])
    worker = dispatcher(db, **{Channel.PUSH: flaky})
    worker.max_attempts = 3
    with db.transaction() as conn:
        alarm(conn, place, clock())

    assert drain(worker) == 1
    row = outbox_rows(db)[0]
    assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 1, "push: HTTP 503")
    first_wait = row["next_attempt_at"] - clock()
    assert timedelta(seconds=27) <= first_wait <= timedelta(seconds=33)
    assert drain(worker) == 0  # not due yet

    clock.advance(first_wait)
    assert drain(worker) == 1
    second_wait = outbox_rows(db)[0]["next_attempt_at"] - clock()
    assert second_wait > first_wait

    clock.advance(second_wait)
    assert drain(worker) == 1
    row = outbox_rows(db)[0]
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert row["last_error"] == "gave up after 3 attempts: push: HTTP 503"
    results = service.notification_attempts(db, organisation_id=place.org.id, outbox_id=row["id"])
    assert [r["result"] for r in results] == ["retry", "retry", "failed"]
    assert len(flaky.seen) == 3 and {m.idempotency_key for m in flaky.seen} == {f"md{row['id']}"}


def test_a_permanent_error_fails_at_once_and_an_operator_can_retry(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    enable(db, place, "push", "http", url="http://127.0.0.1:9/push")
    adapter = Scripted([PermanentDeliveryError("push: HTTP 400: unknown device")])
    with db.transaction() as conn:
        alarm(conn, place, clock())
    drain(dispatcher(db, **{Channel.PUSH: adapter}))
    row = outbox_rows(db)[0]
    assert (row["status"], row["attempts"]) == ("failed", 1)

    service.retry_notification(db, organisation_id=place.org.id, outbox_id=row["id"], actor=ACTOR)
    with pytest.raises(ConflictError):
        service.retry_notification(
            db, organisation_id=place.org.id, outbox_id=row["id"], actor=ACTOR
        )
    adapter.script = [DeliveryResult("p-1")]
    drain(dispatcher(db, **{Channel.PUSH: adapter}))
    row = outbox_rows(db)[0]
    assert (row["status"], row["provider_message_id"], row["last_error"]) == ("sent", "p-1", None)
    with db.read() as conn:
        actions = conn.execute(select(audit_log.c.action)).scalars().all()
    assert "notifications.retry" in actions


def test_a_broken_template_fails_the_message_with_the_reason(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    enable(db, place, "log", "log")
    with db.transaction() as conn:
        queueing.enqueue_in(
            conn,
            organisation_id=place.org.id,
            event="supply_cut",
            key="control:1:9:cut",
            params={},  # no balance: the template cannot be filled
            at=clock(),
            account_id=place.account_id,
        )
    drain(dispatcher(db, **{Channel.LOG: LogChannel(io.StringIO())}))
    row = outbox_rows(db)[0]
    assert row["status"] == "failed" and "balance" in row["last_error"]


def test_messages_for_a_channel_switched_off_after_queueing_are_suppressed(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    enable(db, place, "log", "log")
    with db.transaction() as conn:
        alarm(conn, place, clock())
    configuration.configure_channel(
        db, organisation_id=place.org.id, channel="log", provider="log", enabled=False, actor=ACTOR
    )
    drain(dispatcher(db))
    row = outbox_rows(db)[0]
    assert (row["status"], row["last_error"]) == ("suppressed", "channel log is not enabled")


def test_quiet_hours_set_after_queueing_still_hold_normal_messages(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    enable(db, place, "log", "log")
    clock.now = datetime(2026, 11, 2, 14, 30, tzinfo=UTC)  # 22:30 in Shanghai
    with db.transaction() as conn:
        alarm(conn, place, clock())
    configuration.set_quiet_hours(
        db, organisation_id=place.org.id, start="22:00", end="07:00", actor=ACTOR
    )
    stream = io.StringIO()
    drain(dispatcher(db, **{Channel.LOG: LogChannel(stream)}))
    row = outbox_rows(db)[0]
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert row["next_attempt_at"] == datetime(2026, 11, 2, 23, 0, tzinfo=UTC)

    clock.now = datetime(2026, 11, 2, 23, 0, tzinfo=UTC)
    drain(dispatcher(db, **{Channel.LOG: LogChannel(stream)}))
    assert outbox_rows(db)[0]["status"] == "sent"
    results = service.notification_attempts(db, organisation_id=place.org.id, outbox_id=row["id"])
    assert [r["result"] for r in results] == ["deferred", "sent"]


def test_a_claim_left_by_a_dead_worker_is_taken_again_after_its_lease(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    enable(db, place, "log", "log")
    with db.transaction() as conn:
        alarm(conn, place, clock())
        conn.execute(
            notification_outbox.update().values(
                status="sending", attempts=1, next_attempt_at=clock() + timedelta(minutes=5)
            )
        )
    stream = io.StringIO()
    assert drain(dispatcher(db, **{Channel.LOG: LogChannel(stream)})) == 0
    clock.advance(timedelta(minutes=5))
    assert drain(dispatcher(db, **{Channel.LOG: LogChannel(stream)})) == 1
    row = outbox_rows(db)[0]
    assert (row["status"], row["attempts"]) == ("sent", 2)


def test_listing_filters_and_pages_for_operators(db: Database, clock: FakeClock) -> None:
    place = make_place(db)
    enable(db, place, "sms", "aliyun", access_key_id="id", sign_name="s", templates={})
    enable(db, place, "log", "log")
    with db.transaction() as conn:
        for n in range(3):
            alarm(conn, place, clock(), key=f"control:1:{n}:alarm:1:0")

    everything = service.list_notifications(db, organisation_id=place.org.id)
    assert len(everything) == 6 and everything[0]["id"] > everything[-1]["id"]
    sms = service.list_notifications(db, organisation_id=place.org.id, channel="sms", limit=2)
    assert [row["channel"] for row in sms] == ["sms", "sms"]
    rest = service.list_notifications(
        db, organisation_id=place.org.id, channel="sms", before_id=sms[-1]["id"]
    )
    assert len(rest) == 1 and rest[0]["params"]["room"] == "A-105"
    assert service.status_counts(db, organisation_id=place.org.id) == {"pending": 6}
    other = make_place(db, name="Other Co")
    assert service.list_notifications(db, organisation_id=other.org.id) == []
    with pytest.raises(NotFoundError):
        service.notification_attempts(db, organisation_id=other.org.id, outbox_id=rest[0]["id"])


def page_through(db: Database, organisation_id: int, size: int, **where: Any) -> list[int]:
    """Every page of the list, following ``before_id`` from the last id of each."""
    listed: list[int] = []
    while True:
        before = {"before_id": listed[-1]} if listed else {}
        page = service.list_notifications(
            db, organisation_id=organisation_id, limit=size, **where, **before
        )
        listed += [int(row["id"]) for row in page]
        if len(page) < size:
            return listed


@pytest.mark.parametrize(
    ("since", "until"),
    [(None, 6), (0, 6), (1, 4), (2, None)],
    ids=["until", "both", "inside", "since"],
)
def test_a_time_bounded_list_pages_through_equal_times_once_each_newest_first(
    db: Database, clock: FakeClock, since: int | None, until: int | None
) -> None:
    """Ids and times out of step, four messages at one instant: every page goes on after the
    last message's (queued at, id), so each message comes once, newest first, ties by id."""
    place, other = make_place(db), make_place(db, name="Other Co")
    history = write_tied_history(db, place.org.id, clock(), others=[other.org.id])
    bounds = {
        name: clock() + timedelta(minutes=value)
        for name, value in (("since", since), ("until", until))
        if value is not None
    }
    expected = [
        id_
        for at, id_ in history
        if bounds.get("since", at) <= at and ("until" not in bounds or at < bounds["until"])
    ]
    assert len(expected) > 4 and expected != sorted(expected, reverse=True)  # out of step
    for size in (1, 2, 3, 4, 50):
        assert page_through(db, place.org.id, size, **bounds) == expected, size
    # A status filter keeps the order; another organisation's messages never show.
    assert page_through(db, place.org.id, 2, status="sent", **bounds) == expected
    assert page_through(db, place.org.id, 2, status="failed", **bounds) == []


def test_a_time_bounded_page_starts_only_after_a_message_of_the_organisation(
    db: Database, clock: FakeClock
) -> None:
    """A time-bounded page goes on after ``before_id``'s own time, so that must be a message of
    the organisation (another's would tell its time); an unbounded one is below any id."""
    place, other = make_place(db), make_place(db, name="Other Co")
    history = write_tied_history(db, place.org.id, clock(), others=[other.org.id])
    theirs = service.list_notifications(db, organisation_id=other.org.id, limit=1)[0]["id"]
    until = clock() + timedelta(hours=1)
    for unknown in (theirs, 10**9):
        with pytest.raises(ValidationError, match="no message"):
            service.list_notifications(
                db, organisation_id=place.org.id, until=until, before_id=unknown
            )
    # Without a time bound, before_id stays a plain id bound: any number pages.
    listed = service.list_notifications(db, organisation_id=place.org.id, before_id=10**9)
    assert [row["id"] for row in listed] == sorted((id_ for _, id_ in history), reverse=True)


def test_two_workers_never_claim_the_same_message(db: Database, clock: FakeClock) -> None:
    """On PostgreSQL the second claim skips the rows the first holds; on SQLite it waits."""
    place = make_place(db)
    enable(db, place, "log", "log")
    with db.transaction() as conn:
        for n in range(10):
            alarm(conn, place, clock(), key=f"k{n}")
    if db.dialect != "postgresql":
        pytest.skip("SQLite runs a single worker")
    from meterdesk.notifications import outbox

    with db.engine.begin() as first, db.engine.begin() as second:
        mine = outbox.claim_due(first, now=clock(), limit=6, lease=timedelta(minutes=5))
        theirs = outbox.claim_due(second, now=clock(), limit=6, lease=timedelta(minutes=5))
    assert len(mine) == 6 and len(theirs) == 4
    assert not {m.id for m in mine} & {t.id for t in theirs}
    with db.read() as conn:
        log_rows = conn.execute(select(func.count()).select_from(notification_log)).scalar_one()
    assert log_rows == 0


def test_the_log_table_accepts_only_known_results(db: Database, clock: FakeClock) -> None:
    from sqlalchemy.exc import IntegrityError

    place = make_place(db)
    enable(db, place, "log", "log")
    with db.transaction() as conn:
        outbox_id = alarm(conn, place, clock())[0]
    with pytest.raises(IntegrityError), db.transaction() as conn:
        conn.execute(
            insert(notification_log).values(
                outbox_id=outbox_id,
                organisation_id=place.org.id,
                attempt=1,
                at=clock(),
                channel="log",
                result="maybe",
            )
        )


def test_the_sites_zone_is_used_and_unknown_channel_names_match_nothing(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db, timezone="Europe/Berlin")
    enable(db, place, "sms", "aliyun", access_key_id="id", sign_name="s", templates={})
    with db.transaction() as conn:
        assert len(alarm(conn, place, clock(), channels=("sms", "fax"))) == 1
        assert alarm(conn, place, clock(), key="other", channels=("fax",)) == []
    assert outbox_rows(db)[0]["timezone"] == "Europe/Berlin"


def test_a_message_queued_while_the_dispatcher_idles_is_sent_without_waiting_for_idle_s(
    db: Database, clock: FakeClock
) -> None:
    """The queueing transaction wakes the dispatcher at commit: with a 60 s idle poll, the
    message still leaves well within 10 s (only the wake can do that)."""
    place = make_place(db)
    enable(db, place, "log", "log")
    worker = dispatcher(db, **{Channel.LOG: LogChannel(io.StringIO())})

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop, idle_s=60.0))
        await asyncio.sleep(0.05)  # nothing due: the dispatcher is in its idle wait

        def queue() -> None:
            with db.transaction() as conn:
                alarm(conn, place, clock())

        await asyncio.to_thread(queue)  # committed from another thread, as the ingest does

        async def sent() -> None:
            while not [r for r in outbox_rows(db) if r["status"] == "sent"]:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(sent(), 10)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    assert [row["status"] for row in outbox_rows(db)] == ["sent"]


def test_one_recipients_messages_of_a_batch_leave_in_the_order_they_were_queued(
    db: Database, clock: FakeClock
) -> None:
    """A batch that crossed alarm levels 1 and 2 queues both; sent at once, the slower first
    send let level 2 reach the tenant before level 1 (seen in the e2e test under load). Another
    recipient's message still goes alongside."""
    place = make_place(db)
    enable(db, place, "email", "smtp", host="127.0.0.1", port=25, sender="n@example.com")
    other = sites.create_customer(
        db, organisation_id=place.org.id, name="李娜", email="li.na@example.com"
    )
    with db.transaction() as conn:
        alarm(conn, place, clock(), key="k-1")
        alarm(conn, place, clock(), event="alarm_level_2", key="k-2",
              params={"balance": "8.00", "threshold": "10.00", "level": 2})  # fmt: skip
        queueing.enqueue_in(
            conn, organisation_id=place.org.id, event="alarm_level_1", key="k-3",
            params={"balance": "1.00", "threshold": "20.00", "level": 1}, at=clock(),
            customer_id=other,
        )  # fmt: skip

    class SlowFirst:
        """The tenant's level 1 alarm takes a while to send; the others answer at once."""

        def __init__(self) -> None:
            self.finished: list[tuple[str, str]] = []

        async def send(self, message: OutgoingMessage) -> DeliveryResult:
            if (message.address, message.event_kind) == ("zhang.wei@example.com", "alarm_level_1"):
                await asyncio.sleep(0.2)
            self.finished.append((message.address, message.event_kind))
            return DeliveryResult(f"id-{len(self.finished)}")

    mail = SlowFirst()
    assert drain(dispatcher(db, **{Channel.EMAIL: mail})) == 3
    tenant = [event for address, event in mail.finished if address == "zhang.wei@example.com"]
    assert tenant == ["alarm_level_1", "alarm_level_2"]
    assert mail.finished[0] == ("li.na@example.com", "alarm_level_1")  # not held behind
