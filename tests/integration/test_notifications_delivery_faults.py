"""Notifications that must not get lost, stuck or hidden, on SQLite and PostgreSQL: an SMTP
server's "try again later" on a recipient is retried; a message whose every attempt took the
worker down gives up visibly instead of coming back for ever; a tenant nobody can reach on the
chosen channels is a visible failure; a device command that fails tells the operators; an
alarm level notifications cannot name is refused when the plan is made, not at every reading."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from test_notifications_channels import (
    Inbox,
    Server,
    configure,
    deliver,
    free_port,
    http_server,
    rows,
)
from test_notifications_outbox import (
    Place,
    Scripted,
    alarm,
    dispatcher,
    drain,
    enable,
    make_place,
    outbox_rows,
)

from meterdesk.audit.tables import audit_log
from meterdesk.billing import control_admin
from meterdesk.db.database import Database
from meterdesk.notifications import outbox, service
from meterdesk.notifications.channels.base import (
    DeliveryResult,
    OutgoingMessage,
    PermanentDeliveryError,
)
from meterdesk.notifications.channels.log import LogChannel
from meterdesk.notifications.model import Channel
from meterdesk.notifications.tables import notification_outbox
from meterdesk.shared.errors import ConflictError, ValidationError
from meterdesk.shared.time import FakeClock
from meterdesk.sites import service as sites

pytestmark = pytest.mark.integration
__all__ = ["http_server"]  # the fixture, imported for pytest


# --- SMTP answers per recipient ----------------------------------------------------------------


class RefusingInbox(Inbox):
    """An SMTP server that answers every RCPT with ``answer`` (greylisting, an unknown user)."""

    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer

    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        return self.answer


def _mail_to_refusing_server(db: Database, clock: FakeClock, answer: str) -> dict[str, Any]:
    place = make_place(db)
    port = free_port()
    controller = Controller(RefusingInbox(answer), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        configure(
            db, place, "email", "smtp", host="127.0.0.1", port=port, sender="n@x.example",
            security="none",
        )  # fmt: skip
        with db.transaction() as conn:
            alarm(conn, place, clock())
        deliver(db)
    finally:
        controller.stop()
    return rows(db)[0]


def test_a_greylisted_recipient_smtp_4xx_is_retried_not_failed(
    db: Database, clock: FakeClock
) -> None:
    row = _mail_to_refusing_server(db, clock, "450 4.7.1 Greylisted, please try again later")
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert "450" in row["last_error"] and row["next_attempt_at"] > clock()


def test_a_recipient_the_smtp_server_does_not_know_5xx_fails_with_the_reason(
    db: Database, clock: FakeClock
) -> None:
    row = _mail_to_refusing_server(db, clock, "550 5.1.1 No such user")
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "550" in row["last_error"] and "No such user" in row["last_error"]


# --- a worker that dies during every attempt ---------------------------------------------------


def test_a_message_whose_attempts_all_took_the_worker_down_gives_up_visibly(
    db: Database, clock: FakeClock
) -> None:
    """Each claim here is a worker that died before recording anything (killed, out of memory,
    a crash in a provider library). The attempt counter must stop that after max_attempts:
    a message stuck in 'sending' for ever is one nobody sees failing."""
    place = make_place(db)
    enable(db, place, "log", "log")
    with db.transaction() as conn:
        alarm(conn, place, clock())
    lease = timedelta(minutes=5)
    worker = dispatcher(db, **{Channel.LOG: LogChannel(io.StringIO())})
    worker.max_attempts = 3
    for _ in range(3):
        with db.transaction() as conn:
            assert len(outbox.claim_due(conn, now=clock(), limit=10, lease=lease)) == 1
        clock.advance(lease)

    assert drain(worker) == 0
    row = outbox_rows(db)[0]
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert row["last_error"].startswith("gave up after 3 attempts")
    results = service.notification_attempts(db, organisation_id=place.org.id, outbox_id=row["id"])
    assert [(r["attempt"], r["result"]) for r in results] == [(3, "failed")]


def test_a_claim_that_expired_before_the_last_attempt_is_still_tried_again(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    enable(db, place, "log", "log")
    with db.transaction() as conn:
        alarm(conn, place, clock())
    lease = timedelta(minutes=5)
    worker = dispatcher(db, **{Channel.LOG: LogChannel(io.StringIO())})
    worker.max_attempts = 3
    for _ in range(2):
        with db.transaction() as conn:
            outbox.claim_due(conn, now=clock(), limit=10, lease=lease)
        clock.advance(lease)

    assert drain(worker) == 1
    assert (outbox_rows(db)[0]["status"], outbox_rows(db)[0]["attempts"]) == ("sent", 3)


# --- a claim that runs out while its batch waits -----------------------------------------------


@dataclass
class SlowProvider:
    """Takes ``took`` per message (the fake clock moves); meanwhile a second worker claims
    whatever it can, as one would on PostgreSQL when a claim's lease has run out."""

    db: Database
    clock: FakeClock
    took: timedelta
    sent: list[int] = field(default_factory=list)
    taken_by_the_other: set[int] = field(default_factory=set)

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        self.clock.advance(self.took)
        with self.db.transaction() as conn:
            other = outbox.claim_due(conn, now=self.clock(), limit=10, lease=timedelta(hours=1))
        self.taken_by_the_other.update(item.id for item in other)
        self.sent.append(message.outbox_id)
        return DeliveryResult()


def test_a_message_whose_claim_would_run_out_mid_send_is_released_not_sent(
    db: Database, clock: FakeClock
) -> None:
    """One at a time, 50 s each, a 2 min lease and a 60 s send timeout: the third message would
    still be sending when its claim expires and another worker may take (and send) it too."""
    place = make_place(db)
    enable(db, place, "log", "log")
    with db.transaction() as conn:
        for n in range(3):
            alarm(conn, place, clock(), key=f"control:1:{n}:alarm:1:0")
    provider = SlowProvider(db, clock, timedelta(seconds=50))
    worker = dispatcher(db, **{Channel.LOG: provider})
    worker.batch_size, worker.concurrency, worker.lease = 3, 1, timedelta(minutes=2)

    asyncio.run(worker.run_once())
    first, second, third = (row["id"] for row in outbox_rows(db))
    assert provider.sent == [first, second]
    assert not provider.taken_by_the_other
    released = outbox_rows(db)[2]
    assert (released["status"], released["attempts"]) == ("pending", 0)
    assert released["next_attempt_at"] == clock()

    asyncio.run(worker.run_once())
    assert provider.sent == [first, second, third] and not provider.taken_by_the_other
    assert {row["status"] for row in outbox_rows(db)} == {"sent"}


# --- one bad message among good ones ----------------------------------------------------------


@dataclass
class BrokenFor:
    """Sends every message but the ``bad`` one, for which it raises an unexpected exception."""

    bad: int
    sent: list[int] = field(default_factory=list)

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        if message.outbox_id == self.bad:
            raise RuntimeError("provider library bug")
        self.sent.append(message.outbox_id)
        return DeliveryResult()


def _three_alarms(db: Database, clock: FakeClock) -> list[int]:
    place = make_place(db)
    enable(db, place, "log", "log")
    with db.transaction() as conn:
        return [alarm(conn, place, clock(), key=f"control:1:{n}:alarm:1:0")[0] for n in range(3)]


def test_an_adapter_that_raises_something_unexpected_holds_up_only_its_message(
    db: Database, clock: FakeClock
) -> None:
    first, bad, last = _three_alarms(db, clock)
    adapter = BrokenFor(bad)
    drain(dispatcher(db, **{Channel.LOG: adapter}))
    assert sorted(adapter.sent) == [first, last]
    row = {r["id"]: r for r in outbox_rows(db)}[bad]
    assert (row["status"], row["last_error"]) == (
        "pending",
        "unexpected RuntimeError: provider library bug",
    )


@pytest.mark.parametrize(
    ("spoiled", "named"),
    [
        ({"params": '{"balance": "12.30", "level": 1, "days_left": "soon"}'}, "soon"),
        ({"timezone": "Mars/Olympus_Mons"}, "Mars/Olympus_Mons"),
    ],
    ids=["params-a-template-cannot-show", "a-zone-this-system-does-not-know"],
)
def test_a_message_spoilt_by_one_field_fails_alone_at_once(
    db: Database, clock: FakeClock, spoiled: dict[str, str], named: str
) -> None:
    """A parameter its template cannot show, or a time zone this system does not know: that
    message fails at once with the value named, the others of its batch go."""
    first, bad, last = _three_alarms(db, clock)
    with db.transaction() as conn:
        conn.execute(
            notification_outbox.update().where(notification_outbox.c.id == bad).values(**spoiled)
        )
    adapter = BrokenFor(0)
    drain(dispatcher(db, **{Channel.LOG: adapter}))
    assert sorted(adapter.sent) == [first, last]
    row = {r["id"]: r for r in outbox_rows(db)}[bad]
    assert row["status"] == "failed" and named in row["last_error"]


# --- nobody to send to -------------------------------------------------------------------------


def test_a_tenant_without_an_address_on_any_chosen_channel_is_a_visible_failure(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    bare = sites.create_customer(db, organisation_id=place.org.id, name="王芳")
    enable(db, place, "sms", "aliyun", access_key_id="id", sign_name="s", templates={})
    enable(db, place, "log", "log")
    with db.transaction() as conn:
        written = alarm(conn, place, clock(), account_id=None, customer_id=bare)
        again = alarm(conn, place, clock(), account_id=None, customer_id=bare)

    assert len(written) == 2 and again == []  # the log line, and the SMS nobody could get
    failed = [row for row in outbox_rows(db) if row["channel"] == "sms"]
    assert [(r["status"], r["customer_id"], r["address"]) for r in failed] == [("failed", bare, "")]
    assert failed[0]["last_error"] == f"customer {bare} has no phone for sms"
    assert service.status_counts(db, organisation_id=place.org.id) == {"pending": 1, "failed": 1}
    # The dispatcher sends the rest and leaves the failure as it is.
    worker = dispatcher(db, **{Channel.LOG: LogChannel(io.StringIO())})
    assert drain(worker) == 1
    assert {r["channel"]: r["status"] for r in outbox_rows(db)} == {"sms": "failed", "log": "sent"}


def test_a_tenant_reached_on_one_chosen_channel_gets_no_failure_for_the_others(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    phone_only = sites.create_customer(
        db, organisation_id=place.org.id, name="王芳", phone="13800000000"
    )
    enable(db, place, "sms", "aliyun", access_key_id="id", sign_name="s", templates={})
    enable(db, place, "email", "smtp", host="h", port=25, sender="n@example.com")
    with db.transaction() as conn:
        alarm(conn, place, clock(), account_id=None, customer_id=phone_only)

    assert [(r["channel"], r["status"]) for r in outbox_rows(db)] == [("sms", "pending")]


def _unreachable_sms(db: Database, clock: FakeClock) -> tuple[Place, int, dict[str, Any]]:
    """A place with SMS on, and an alarm for a customer without a phone: one failed row."""
    place = make_place(db)
    bare = sites.create_customer(db, organisation_id=place.org.id, name="王芳")
    enable(db, place, "sms", "aliyun", access_key_id="id", sign_name="s", templates={})
    with db.transaction() as conn:
        alarm(conn, place, clock(), account_id=None, customer_id=bare)
    (row,) = outbox_rows(db)
    assert (row["status"], row["address"], row["customer_id"]) == ("failed", "", bare)
    return place, bare, row


def _retries(db: Database, organisation_id: int) -> list[Any]:
    with db.read() as conn:
        found = conn.execute(
            select(audit_log.c.detail).where(
                audit_log.c.organisation_id == organisation_id,
                audit_log.c.action == "notifications.retry",
            )
        )
        return [json.loads(detail) for detail in found.scalars()]


def test_retrying_a_no_address_failure_sends_to_the_address_the_customer_has_now(
    db: Database, clock: FakeClock
) -> None:
    """The retry kept the empty address, so a message an operator retried after adding the
    tenant's phone failed again; it is addressed again from the customer as queueing would."""
    place, bare, row = _unreachable_sms(db, clock)
    sites.update_customer(
        db,
        organisation_id=place.org.id,
        customer_id=bare,
        change=sites.CustomerChange(phone="13700000000"),
        actor="op",
    )
    service.retry_notification(db, organisation_id=place.org.id, outbox_id=row["id"], actor="op")

    (again,) = outbox_rows(db)
    assert (again["status"], again["address"], again["attempts"]) == (
        "pending",
        "+8613700000000",
        0,
    )
    assert again["dedupe_key"] == row["dedupe_key"] and again["next_attempt_at"] == clock()
    assert _retries(db, place.org.id) == [{"was": "failed", "readdressed": "phone"}]
    sms = Scripted([DeliveryResult("sms-1")])
    assert drain(dispatcher(db, **{Channel.SMS: sms})) == 1
    assert [message.address for message in sms.seen] == ["+8613700000000"]
    assert (outbox_rows(db)[0]["status"], outbox_rows(db)[0]["last_error"]) == ("sent", None)


def test_retrying_a_no_address_failure_while_the_customer_still_has_none_is_refused(
    db: Database, clock: FakeClock
) -> None:
    place, bare, row = _unreachable_sms(db, clock)
    sites.update_customer(  # an e-mail is no use to an SMS
        db,
        organisation_id=place.org.id,
        customer_id=bare,
        change=sites.CustomerChange(email="wang.fang@example.com"),
        actor="op",
    )
    with pytest.raises(ConflictError, match=f"customer {bare} has no phone for sms"):
        service.retry_notification(
            db, organisation_id=place.org.id, outbox_id=row["id"], actor="op"
        )
    assert outbox_rows(db) == [row]
    assert _retries(db, place.org.id) == []


def _refused_sms(db: Database, clock: FakeClock) -> tuple[Place, dict[str, Any]]:
    """A place with SMS on and an alarm the provider refused for the customer's number."""
    place = make_place(db)
    enable(db, place, "sms", "aliyun", access_key_id="id", sign_name="s", templates={})
    with db.transaction() as conn:
        alarm(conn, place, clock())
    refusing = Scripted([PermanentDeliveryError("sms: invalid number")])
    drain(dispatcher(db, **{Channel.SMS: refusing}))
    (row,) = outbox_rows(db)
    assert (row["status"], row["address"]) == ("failed", "+8613900000000")
    return place, row


def _change_phone(db: Database, place: Place, phone: str) -> None:
    sites.update_customer(
        db,
        organisation_id=place.org.id,
        customer_id=place.customer_id,
        change=sites.CustomerChange(phone=phone),
        actor="op",
    )


def test_retrying_a_refused_message_goes_to_the_number_corrected_since(
    db: Database, clock: FakeClock
) -> None:
    """The retry kept the address the provider had refused, so an operator who corrected the
    tenant's number and pressed Retry sent the message to the wrong number again."""
    place, row = _refused_sms(db, clock)
    _change_phone(db, place, "13911111111")
    service.retry_notification(db, organisation_id=place.org.id, outbox_id=row["id"], actor="op")

    (again,) = outbox_rows(db)
    assert (again["status"], again["address"], again["attempts"]) == (
        "pending",
        "+8613911111111",
        0,
    )
    assert _retries(db, place.org.id) == [{"was": "failed", "readdressed": "phone"}]
    sms = Scripted([DeliveryResult("sms-2")])
    assert drain(dispatcher(db, **{Channel.SMS: sms})) == 1
    assert [message.address for message in sms.seen] == ["+8613911111111"]


def test_retrying_a_refused_message_with_the_number_unchanged_keeps_it(
    db: Database, clock: FakeClock
) -> None:
    place, row = _refused_sms(db, clock)
    service.retry_notification(db, organisation_id=place.org.id, outbox_id=row["id"], actor="op")

    (again,) = outbox_rows(db)
    assert (again["status"], again["address"], again["attempts"]) == (
        "pending",
        "+8613900000000",
        0,
    )
    assert _retries(db, place.org.id) == [{"was": "failed"}]


def test_retrying_when_the_tenant_removed_the_number_is_refused(
    db: Database, clock: FakeClock
) -> None:
    """The retry sent to the number the tenant had removed (it may be someone else's now)."""
    place, row = _refused_sms(db, clock)
    _change_phone(db, place, "")
    with pytest.raises(ConflictError, match=f"customer {place.customer_id} has no phone for sms"):
        service.retry_notification(
            db, organisation_id=place.org.id, outbox_id=row["id"], actor="op"
        )
    assert outbox_rows(db) == [row]
    assert _retries(db, place.org.id) == []


# --- a failed device command -------------------------------------------------------------------


def test_a_device_command_that_fails_tells_the_operators(db: Database, clock: FakeClock) -> None:
    from test_commands import Meters, executor, meter, trip
    from test_commands import drain as drain_commands

    from meterdesk.devices.tables import commands

    place = make_place(db)
    enable(db, place, "log", "log")
    meter_id = meter(db, place.org, "M9")
    command_id = trip(db, place.org, meter_id, "op:trip:1")
    meters = Meters(clock)
    meters.lose_next_send = 1000  # the meter never answers
    asyncio.run(drain_commands(db, clock, executor(db, clock, meters)))

    with db.read() as conn:
        reason = conn.execute(
            select(commands.c.status, commands.c.reason).where(commands.c.id == command_id)
        ).one()
    assert reason.status == "failed"
    [row] = [r for r in outbox_rows(db) if r["event_kind"] == "command_failed"]
    assert (row["urgency"], row["channel"], row["status"]) == ("urgent", "log", "pending")
    params = service.list_notifications(db, organisation_id=place.org.id)[0]["params"]
    assert (params["command"], params["meter"], params["error"]) == (
        "relay_trip",
        "M9",
        reason.reason,
    )
    stream = io.StringIO()
    drain(dispatcher(db, **{Channel.LOG: LogChannel(stream)}))
    assert "M9" in stream.getvalue() and "拉闸" in stream.getvalue()


# --- an alarm level notifications have no event for ----------------------------------------------


def test_an_alarm_level_without_a_notification_event_is_refused_when_the_plan_is_made(
    db: Database, clock: FakeClock
) -> None:
    """A level 4 was accepted (1 to 9), and when an account crossed it the control loop queued
    "alarm_level_4", which queueing refuses: the ValidationError failed the ingest batch, so the
    meter's readings (and everyone else's in the batch) were refused at every try."""
    place = make_place(db)
    levels = [{"level": 1, "amount": "20.00"}, {"level": 4, "amount": "2.00"}]
    with pytest.raises(ValidationError, match=r"levels\[1\]\.level: a number from 1 to 3"):
        control_admin.create_alarm_plan(
            db, organisation_id=place.org.id, name="deep", levels=levels, actor="op"
        )


# --- two dispatchers at once -------------------------------------------------------------------


@dataclass
class Counting:
    """Counts sends per message, across threads; each send yields so the workers interleave."""

    sends: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        await asyncio.sleep(0.001)
        with self.lock:
            self.sends[message.outbox_id] += 1
        return DeliveryResult()


def test_two_dispatchers_side_by_side_send_every_message_exactly_once(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    enable(db, place, "log", "log")
    with db.transaction() as conn:
        for n in range(40):
            alarm(conn, place, clock(), key=f"control:1:{n}:alarm:1:0")
    adapter = Counting()
    workers = [dispatcher(db, **{Channel.LOG: adapter}) for _ in range(2)]
    for worker in workers:
        worker.batch_size = 5
    threads = [threading.Thread(target=drain, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert {row["status"] for row in outbox_rows(db)} == {"sent"}
    assert sorted(adapter.sends.values()) == [1] * 40


# --- HTTP answers that mean "later" ------------------------------------------------------------


@pytest.mark.parametrize(("status", "result"), [(408, "pending"), (400, "failed")])
def test_a_webhook_receiver_that_timed_out_reading_the_request_is_retried(
    db: Database,
    clock: FakeClock,
    http_server: Callable[..., Server],
    status: int,
    result: str,
) -> None:
    place = make_place(db)
    server = http_server(lambda request: (status, {"error": "slow"}))
    configure(
        db, place, "webhook", "webhook", url=server.url,
        secret_refs={"secret": "TEST_WEBHOOK_SECRET"},
    )  # fmt: skip
    with db.transaction() as conn:
        alarm(conn, place, clock())
    deliver(db)
    row = rows(db)[0]
    assert (row["status"], row["attempts"]) == (result, 1)
    assert str(status) in row["last_error"]


def test_a_second_retry_at_once_does_not_put_back_a_message_being_sent(
    db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two retries of one failed message at once (a double click): the second read the row as
    failed before the first committed, then reset it to pending after a dispatcher had claimed
    it, so a second worker sent it again while the first was sending it."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("a race between transactions: PostgreSQL (SQLite has one writer at a time)")
    place, bare, row = _unreachable_sms(db, clock)
    sites.update_customer(
        db,
        organisation_id=place.org.id,
        customer_id=bare,
        change=sites.CustomerChange(phone="13700000000"),
        actor="op",
    )
    has_read, go_on = threading.Event(), threading.Event()
    real = service.model.channel

    def channel(value: str) -> Channel:  # the second retry waits after reading the row
        if threading.current_thread().name == "second":
            has_read.set()
            go_on.wait(5)
        return real(value)

    monkeypatch.setattr(service.model, "channel", channel)
    errors: list[Exception] = []

    def retry() -> None:
        try:
            service.retry_notification(
                db, organisation_id=place.org.id, outbox_id=row["id"], actor="op"
            )
        except ConflictError as error:
            errors.append(error)

    second = threading.Thread(target=retry, name="second")
    second.start()
    has_read.wait(5)
    first = threading.Thread(target=retry, name="first")
    first.start()
    first.join(1)  # done, or waiting for the second (it holds the row)
    with db.transaction() as conn:
        claimed = outbox.claim_due(conn, now=clock(), limit=10, lease=timedelta(minutes=5))
    go_on.set()
    second.join(5)
    first.join(5)
    (now,) = outbox_rows(db)
    if claimed:  # a worker holds the claim: no retry may have put the row back
        assert (now["status"], now["attempts"]) == ("sending", claimed[0].attempts)
    else:
        assert (now["status"], now["attempts"]) == ("pending", 0)
    assert len(errors) == 1 and len(_retries(db, place.org.id)) == 1
