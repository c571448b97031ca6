"""A customer's message language (issue 4: templates per event and language): stored on the
customer, set at creation and changed later (audited), and used by the notification outbox to
write each message in the language of the person who reads it — on SQLite and PostgreSQL."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select
from test_notifications_outbox import alarm, dispatcher, drain, enable, make_place, outbox_rows

from meterdesk.audit.tables import audit_log
from meterdesk.db.database import Database
from meterdesk.notifications import queueing
from meterdesk.notifications.channels.log import LogChannel
from meterdesk.notifications.model import Channel
from meterdesk.shared.errors import NotFoundError, ValidationError
from meterdesk.shared.time import FakeClock
from meterdesk.sites import service as sites
from meterdesk.sites.tables import customers

pytestmark = pytest.mark.integration
ACTOR = "test:operator"


def language_of(db: Database, customer_id: int) -> str:
    with db.read() as conn:
        found = conn.execute(select(customers.c.language).where(customers.c.id == customer_id))
        return str(found.scalar_one())


def to_english(db: Database, organisation_id: int, customer_id: int) -> None:
    sites.update_customer(
        db,
        organisation_id=organisation_id,
        customer_id=customer_id,
        change=sites.CustomerChange(language="en"),
        actor=ACTOR,
        source="10.0.0.7",
    )


def test_customers_read_zh_cn_unless_created_in_english(db: Database) -> None:
    org = sites.create_organisation(db, name="Org")
    default = sites.create_customer(db, organisation_id=org, name="张伟")
    english = sites.create_customer(db, organisation_id=org, name="Anna", language="en")
    assert (language_of(db, default), language_of(db, english)) == ("zh-CN", "en")


def test_an_update_changes_only_what_is_given_and_is_audited(db: Database) -> None:
    org = sites.create_organisation(db, name="Org")
    customer = sites.create_customer(db, organisation_id=org, name="张伟", phone="13900000000")
    to_english(db, org, customer)
    sites.update_customer(
        db,
        organisation_id=org,
        customer_id=customer,
        change=sites.CustomerChange(phone="", email="zw@example.com"),
        actor=ACTOR,
    )
    with db.read() as conn:
        row = conn.execute(select(customers).where(customers.c.id == customer)).mappings().one()
        audits = conn.execute(
            select(audit_log.c.actor, audit_log.c.action, audit_log.c.source)
            .where(audit_log.c.subject == f"customer:{customer}")
            .order_by(audit_log.c.id)
        ).all()
    assert (row["name"], row["phone"], row["email"], row["language"]) == (
        "张伟",
        None,
        "zw@example.com",
        "en",
    )
    assert [tuple(a) for a in audits] == [
        (ACTOR, "customer.update", "10.0.0.7"),
        (ACTOR, "customer.update", None),
    ]


def test_bad_changes_are_refused_and_change_nothing(db: Database) -> None:
    org = sites.create_organisation(db, name="Org")
    other = sites.create_organisation(db, name="Other")
    customer = sites.create_customer(db, organisation_id=org, name="张伟")
    with pytest.raises(ValidationError, match="language: 'fr' is not one of zh-CN, en"):
        sites.create_customer(db, organisation_id=org, name="X", language="fr")
    for change in (
        sites.CustomerChange(language="de"),
        sites.CustomerChange(name="  "),
        sites.CustomerChange(email="no-at-sign"),
        sites.CustomerChange(),
    ):
        with pytest.raises(ValidationError):
            sites.update_customer(
                db, organisation_id=org, customer_id=customer, change=change, actor=ACTOR
            )
    with pytest.raises(NotFoundError):
        to_english(db, other, customer)  # another organisation's customer
    assert language_of(db, customer) == "zh-CN"
    with db.read() as conn:
        assert conn.execute(select(audit_log.c.id)).all() == []


def test_customer_messages_are_written_in_the_customers_language(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    enable(db, place, "email", "smtp", host="h", port=25, sender="n@example.com")
    enable(db, place, "log", "log")
    with db.transaction() as conn:
        alarm(conn, place, clock(), key="before")
    to_english(db, place.org.id, place.customer_id)
    with db.transaction() as conn:
        alarm(conn, place, clock(), key="after")

    languages = [(r["event_key"], r["channel"], r["language"]) for r in outbox_rows(db)]
    assert languages == [
        ("before", "email", "zh-CN"),  # a queued message keeps the language it was queued in
        ("before", "log", "zh-CN"),
        ("after", "email", "en"),
        ("after", "log", "en"),  # what an integrator forwards is what the tenant would read
    ]


def test_operator_events_stay_in_zh_cn_and_a_callers_language_wins(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    to_english(db, place.org.id, place.customer_id)
    enable(
        db,
        place,
        "email",
        "smtp",
        host="h",
        port=25,
        sender="n@example.com",
        operator_addresses=["ops@example.com"],
    )
    with db.transaction() as conn:
        queueing.enqueue_in(
            conn,
            organisation_id=place.org.id,
            event="command_failed",
            key="command:1",
            params={"command": "relay_trip", "meter": "M1"},
            at=clock(),
            account_id=place.account_id,
        )
        alarm(conn, place, clock(), key="forced", language="zh-CN")

    rows = outbox_rows(db)
    assert [(r["address"], r["language"]) for r in rows] == [
        ("ops@example.com", "zh-CN"),
        ("zhang.wei@example.com", "zh-CN"),
    ]


def test_an_english_customer_receives_the_english_text(db: Database, clock: FakeClock) -> None:
    place = make_place(db)
    to_english(db, place.org.id, place.customer_id)
    enable(db, place, "log", "log")
    stream = io.StringIO()
    with db.transaction() as conn:
        alarm(conn, place, clock())

    assert drain(dispatcher(db, **{Channel.LOG: LogChannel(stream)})) == 1
    assert (
        "[示例物业] Dear 张伟, the electricity balance of your room A-105 is CNY 12.30, "
        "below the level 1 alarm amount of CNY 20.00. Please recharge soon."
    ) in stream.getvalue()
