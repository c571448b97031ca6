"""Reads of a meter's recent charge lines cost the same after a week or after years.

A meter read every 15 minutes has 35,000 lines a year. The queries that look at its recent
lines — superseding them for a late reading, the what-if report, the room's usage today — must
go through the (meter, interval end) index from their start, not read the meter's whole history
(they did: a batch with 100 late meters of a year's history spent 1.3 s on that one query).

The work is counted in SQLite virtual-machine steps (a progress handler), which grows with the
rows a statement visits and does not depend on the machine's speed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from builders import (
    ACTOR,
    T0,
    D,
    make_meter,
    make_org,
    make_tariff,
    one_meter_account,
    open_account,
    steady_stream,
)
from sqlalchemy import Connection, event, insert, select

from meterdesk.api.queries import audit as audit_queries
from meterdesk.api.queries.audit import AuditFilter
from meterdesk.api.queries.common import Window
from meterdesk.audit.service import Entry, record_many
from meterdesk.audit.tables import audit_log
from meterdesk.billing import control_tick, statements, supply_drift
from meterdesk.billing import repository as billing_repository
from meterdesk.billing.control_send import RecordingOutbox
from meterdesk.billing.ingest import Ingestor
from meterdesk.billing.tables import accounts
from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.db.metadata import load_all_tables
from meterdesk.devices.commands import device_state
from meterdesk.devices.commands import repository as command_repository
from meterdesk.devices.ports import Snapshot
from meterdesk.devices.tables import commands
from meterdesk.ledger.tables import transfers
from meterdesk.metering import service as metering
from meterdesk.notifications import service as notifications
from meterdesk.notifications.tables import notification_outbox
from meterdesk.reports import room_detail, whatif
from meterdesk.shared.money import from_fen
from meterdesk.shared.time import FakeClock
from meterdesk.sites import service as sites
from support.outbox import outbox_row

EVERY = timedelta(minutes=15)
SHORT, LONG = 100, 2_000  # intervals of history


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, tuple[Database, int]]]:
    """Two databases whose meter differs only in the length of its history."""
    made = {}
    for count in (SHORT, LONG):
        path = Path(tmp_path_factory.mktemp(f"history{count}")) / "db.sqlite3"
        engine = build_engine(f"sqlite:///{path}")
        load_all_tables().create_all(engine)
        clock = FakeClock(T0)
        db = Database(engine=engine, clock=clock)
        setup = one_meter_account(db, credit="100000", opening="1000")  # read at T0
        clock.advance(EVERY * (LONG + 10))
        stream = steady_stream(
            setup.meter_id, start_total=D("1000"), count=count, step=D("0.5"), every=EVERY
        )
        ingestor = Ingestor(db)
        for first in range(0, len(stream), 500):
            ingestor.ingest(stream[first : first + 500])
        made[count] = (db, setup.meter_id)
    yield made
    for db, _ in made.values():
        db.engine.dispose()


def _steps(db: Database, work: Callable[[Connection], Any]) -> tuple[int, Any]:
    """SQLite VM steps spent by ``work``, and what it returned (rolled back afterwards)."""
    counted = [0]

    def tick() -> int:
        counted[0] += 1
        return 0

    with db.engine.connect() as conn:
        driver = conn.connection.dbapi_connection
        assert driver is not None
        driver.set_progress_handler(tick, 10)
        try:
            with conn.begin() as transaction:
                result = work(conn)
                transaction.rollback()
        finally:
            driver.set_progress_handler(None, 10)
    return counted[0], result


def _last_two_hours(count: int) -> tuple[datetime, datetime]:
    end = T0 + EVERY * count
    return end - timedelta(hours=2), end


def _cost_of(
    worlds: dict[int, tuple[Database, int]],
    work: Callable[[Connection, int, datetime, datetime], Any],
) -> tuple[dict[int, int], dict[int, Any]]:
    cost, found = {}, {}
    for count, (db, meter_id) in worlds.items():
        start, end = _last_two_hours(count)
        cost[count], found[count] = _steps(
            db, lambda conn, m=meter_id, s=start, e=end: work(conn, m, s, e)
        )
    return cost, found


def _assert_flat(cost: dict[int, int]) -> None:
    # 20× the history; a statement that read it all would cost ≈ 20× as much
    assert cost[LONG] < 2 * cost[SHORT], cost


def test_superseding_recent_lines_does_not_read_the_meters_history(
    worlds: dict[int, tuple[Database, int]],
) -> None:
    cost, found = _cost_of(
        worlds, lambda conn, m, start, end: billing_repository.supersede_lines(conn, {m: start})
    )
    assert len(found[SHORT]) == len(found[LONG]) == 8  # the lines of the last two hours
    _assert_flat(cost)


def test_the_what_if_report_does_not_read_the_meters_history(
    worlds: dict[int, tuple[Database, int]],
) -> None:
    cost, found = _cost_of(
        worlds, lambda conn, m, start, end: whatif.usages(conn, m, start, end, False)
    )
    assert len(found[SHORT][0]) == len(found[LONG][0]) == 8
    _assert_flat(cost)


def test_a_rooms_usage_today_does_not_read_the_meters_history(
    worlds: dict[int, tuple[Database, int]],
) -> None:
    def usage(conn: Connection, meter_id: int, start: datetime, end: datetime) -> Any:
        view = SimpleNamespace(id=meter_id, today_quantity=Decimal(0), today_cost=Decimal(0))
        room_detail.add_usage(conn, [view], start, end)  # type: ignore[list-item]
        return view

    cost, found = _cost_of(worlds, usage)
    assert found[SHORT].today_quantity > 0 and found[LONG].today_quantity > 0
    _assert_flat(cost)


@pytest.fixture(scope="module")
def ledger_worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Database]]:
    """Two databases whose account differs only in the length of its ledger history: readings
    arrive an hour at a time, so each hour's deductions are posted at that hour."""
    made = {}
    for count in (SHORT, LONG):
        path = Path(tmp_path_factory.mktemp(f"ledger{count}")) / "db.sqlite3"
        engine = build_engine(f"sqlite:///{path}")
        load_all_tables().create_all(engine)
        clock = FakeClock(T0)
        db = Database(engine=engine, clock=clock)
        setup = one_meter_account(db, credit="100000", opening="1000")
        stream = steady_stream(
            setup.meter_id, start_total=D("1000"), count=count, step=D("0.5"), every=EVERY
        )
        ingestor = Ingestor(db)
        for first in range(0, count, 4):
            clock.advance(T0 + EVERY * (first + 4) - clock())
            ingestor.ingest(stream[first : first + 4])
        made[count] = db
    yield made
    for db in made.values():
        db.engine.dispose()


def test_a_statements_opening_balance_does_not_read_the_accounts_history(
    ledger_worlds: dict[int, Database],
) -> None:
    """The room page's 30-day chart and every statement: the opening balances are worked back
    from the stored ones through the period's entries, not summed over the whole history."""
    cost, found = {}, {}
    for count, db in ledger_worlds.items():
        start, end = _last_two_hours(count)
        with db.read() as conn:
            org, wallet_id, arrears_id = conn.execute(
                select(accounts.c.organisation_id, accounts.c.wallet_id, accounts.c.arrears_id)
            ).one()
            entries = conn.execute(select(transfers)).mappings().all()
        cost[count], found[count] = _db_steps(
            db,
            lambda d=db, o=org, s=start, e=end: statements.statement(
                d, organisation_id=o, number="A-1", start=s, end=e
            ),
        )

        def before(ledger_account: int, s: datetime = start, rows: Any = entries) -> int:
            return sum(
                (row["amount_fen"] if row["credit_account_id"] == ledger_account else 0)
                - (row["amount_fen"] if row["debit_account_id"] == ledger_account else 0)
                for row in rows
                if row["created_at"] < s  # summed forwards
            )

        made = found[count]
        assert made.opening_balance == from_fen(before(wallet_id))
        assert made.opening_arrears == from_fen(-before(arrears_id))
        assert made.opening_balance < 100_000  # the history was deducted before the period
        in_period = [
            row["id"]
            for row in entries
            if start <= row["created_at"] < end
            and {wallet_id, arrears_id} & {row["debit_account_id"], row["credit_account_id"]}
        ]
        assert [line.transfer_id for line in made.lines] == sorted(in_period) and in_period
    _assert_flat(cost)


def test_a_rooms_orders_do_not_read_the_accounts_deductions(
    ledger_worlds: dict[int, Database],
) -> None:
    """The room page's orders (recharges, refunds …) are found by reason, not by walking back
    through every deduction the account ever had."""
    cost, found = {}, {}
    for count, db in ledger_worlds.items():
        with db.read() as conn:
            account_id = conn.execute(select(accounts.c.id)).scalar_one()
        cost[count], found[count] = _steps(
            db, lambda conn, a=account_id: room_detail.orders(conn, a)
        )
    assert [row["reason"] for row in found[SHORT]] == ["recharge"]  # the opening credit
    assert [row["reason"] for row in found[LONG]] == ["recharge"]
    _assert_flat(cost)


# --- the days-of-credit forecast ----------------------------------------------------------------

FORECAST_SHORT_DAYS, FORECAST_LONG_DAYS = 8, 40  # history; the forecast looks back 7 days


@pytest.fixture(scope="module")
def forecast_worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Database]]:
    """Two databases whose account has 8 or 40 days of hourly deductions, one batch an hour."""
    made = {}
    for days in (FORECAST_SHORT_DAYS, FORECAST_LONG_DAYS):
        path = Path(tmp_path_factory.mktemp(f"forecast{days}")) / "db.sqlite3"
        engine = build_engine(f"sqlite:///{path}")
        load_all_tables().create_all(engine)
        clock = FakeClock(T0)
        db = Database(engine=engine, clock=clock)
        setup = one_meter_account(db, credit="100000", opening="1000")
        hour = timedelta(hours=1)
        stream = steady_stream(
            setup.meter_id, start_total=D("1000"), count=days * 24, step=D("2"), every=hour
        )
        ingestor = Ingestor(db)
        for item in stream:
            clock.advance(item.measured_at - clock())
            ingestor.ingest([item])
        made[days] = db
    yield made
    for db in made.values():
        db.engine.dispose()


def test_the_days_of_credit_forecast_reads_its_week_not_the_accounts_history(
    forecast_worlds: dict[int, Database],
) -> None:
    """Every control tick forecasts from the last 7 days of deductions: by wallet and time, not
    through the account's every transfer (the account index holds no deductions)."""
    cost, found = {}, {}
    for days, db in forecast_worlds.items():
        with db.read() as conn:
            account_id = conn.execute(select(accounts.c.id)).scalar_one()
        at = T0 + timedelta(days=days)
        cost[days], found[days] = _steps(
            db, lambda conn, a=account_id, t=at: control_tick.days_left(conn, {a: 100_000}, t)
        )
        with db.read() as conn:  # the same forecast summed by hand over every transfer
            rows = conn.execute(
                select(transfers.c.reason, transfers.c.amount_fen, transfers.c.created_at)
            ).all()
        week = [
            (reason, fen)
            for reason, fen, created in rows
            if created >= at - control_tick.FORECAST_WINDOW
            and reason in ("deduction", "deduction_correction")
        ]
        used = sum(fen if reason == "deduction" else -fen for reason, fen in week)
        assert found[days] == {account_id: 100_000 / (used / 7)}
    # 5× the history; a query through every transfer of the account would cost ≈ 5× as much
    assert cost[FORECAST_LONG_DAYS] < 2 * cost[FORECAST_SHORT_DAYS], cost


# --- the audit log's pages ---------------------------------------------------------------------

AUDIT_SHORT, AUDIT_LONG = 200, 4_000  # entries of history


@pytest.fixture(scope="module")
def audit_worlds(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[int, tuple[Database, int]]]:
    """Two databases whose organisation differs only in the length of its audit log (and a
    second organisation's entries interleaved, which no page may show)."""
    made = {}
    for count in (AUDIT_SHORT, AUDIT_LONG):
        path = Path(tmp_path_factory.mktemp(f"audit{count}")) / "db.sqlite3"
        engine = build_engine(f"sqlite:///{path}")
        load_all_tables().create_all(engine)
        db = Database(engine=engine, clock=FakeClock(T0))
        ours = make_org(db, "Org A").id
        theirs = make_org(db, "Org B").id
        entries = [
            Entry(org, "test:operator", action, f"account:{i % 7}", T0 + timedelta(minutes=i))
            for i in range(count)
            for org, action in ((ours, "recharge" if i % 3 else "refund"), (theirs, "recharge"))
        ]
        with db.transaction() as conn:
            record_many(conn, entries)
        made[count] = (db, ours)
    yield made
    for db, _ in made.values():
        db.engine.dispose()


@pytest.mark.parametrize(
    "where",
    [AuditFilter(), AuditFilter(action="refund"), AuditFilter(actor="test:operator")],
    ids=["all", "action", "actor"],
)
def test_a_page_of_the_audit_log_does_not_sort_the_organisations_history(
    audit_worlds: dict[int, tuple[Database, int]], where: AuditFilter
) -> None:
    cost, found = {}, {}
    for count, (db, org) in audit_worlds.items():
        cost[count], found[count] = _steps(
            db, lambda conn, o=org: audit_queries.list_entries(conn, o, where, Window(None, 50))
        )
    for count, (db, org) in audit_worlds.items():
        rows, cursor = found[count]
        with db.read() as conn:  # the newest 50 of the organisation's matching entries
            expected = [
                dict(row)
                for row in conn.execute(
                    select(audit_log.c.id, audit_log.c.action, audit_log.c.actor)
                    .where(audit_log.c.organisation_id == org)
                    .order_by(audit_log.c.id.desc())
                ).mappings()
                if where.action in (None, row["action"]) and where.actor in (None, row["actor"])
            ][:50]
        assert [{k: r[k] for k in ("id", "action", "actor")} for r in rows] == expected
        assert cursor == str(expected[-1]["id"])
    assert cost[AUDIT_LONG] < 2 * cost[AUDIT_SHORT], cost


def _db_steps(db: Database, work: Callable[[], Any]) -> tuple[int, Any]:
    """SQLite VM steps spent by ``work``, which opens its own connections (a service call)."""
    counted = [0]

    def tick() -> int:
        counted[0] += 1
        return 0

    def count(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.set_progress_handler(tick, 10)

    def stop(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.set_progress_handler(None, 10)

    event.listen(db.engine, "checkout", count)
    event.listen(db.engine, "checkin", stop)
    try:
        result = work()
    finally:
        event.remove(db.engine, "checkout", count)
        event.remove(db.engine, "checkin", stop)
    return counted[0], result


# --- the notification outbox and the command list ----------------------------------------------

OUTBOX_SHORT, OUTBOX_LONG = 200, 4_000  # messages (and commands) of history
QUIET = 12  # the quiet customer's and account's messages, all at the start of history


@dataclass(frozen=True)
class Outbox:
    db: Database
    org: int
    customer_id: int  # the quiet customer
    account_id: int  # the quiet account


def _finished_command(organisation_id: int, meter_id: int, i: int) -> dict[str, Any]:
    """The ``i``-th command of a history, a minute apart: every third failed, the rest confirmed."""
    at = T0 + timedelta(minutes=i)
    return dict(
        organisation_id=organisation_id,
        meter_id=meter_id,
        kind="relay_trip",
        params="{}",
        status="failed" if i % 3 == 0 else "confirmed",
        attempts=1,
        max_attempts=3,
        next_attempt_at=at,
        deadline_at=at,
        idempotency_key=f"{organisation_id}.{i}",
        created_by="test:operator",
        created_at=at,
        sent_at=at,
        finished_at=at,
    )


@pytest.fixture(scope="module")
def outbox_worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Outbox]]:
    """Two databases whose organisation differs only in the length of its outbox and command
    history; a second organisation's rows are interleaved, and a quiet customer and account
    have a dozen old messages in both."""
    made = {}
    for count in (OUTBOX_SHORT, OUTBOX_LONG):
        path = Path(tmp_path_factory.mktemp(f"outbox{count}")) / "db.sqlite3"
        engine = build_engine(f"sqlite:///{path}")
        load_all_tables().create_all(engine)
        db = Database(engine=engine, clock=FakeClock(T0))
        ours = one_meter_account(db)
        theirs = make_org(db, "Org B")
        their_meter = make_meter(db, theirs, "M9")
        quiet = sites.create_customer(
            db, organisation_id=ours.org.id, name="Han Mei", phone="13800138000"
        )
        messages, orders = [], []
        for i in range(count):
            at = T0 + timedelta(minutes=i)
            status = "failed" if i % 3 == 0 else "sent"
            for org, customer, meter in (
                (ours.org, ours.org.customer_id, ours.meter_id),
                (theirs, theirs.customer_id, their_meter),
            ):
                is_quiet = org is ours.org and i < QUIET
                messages.append(
                    outbox_row(
                        org.id,
                        f"{org.id}.{i}",
                        at,
                        customer_id=quiet if is_quiet else customer,
                        account_id=ours.account.account_id if is_quiet else None,
                        status=status,
                    )
                )
                orders.append(_finished_command(org.id, meter, i))
        with db.transaction() as conn:
            conn.execute(insert(notification_outbox), messages)
            conn.execute(insert(commands), orders)
        made[count] = Outbox(db, ours.org.id, quiet, ours.account.account_id)
    yield made
    for world in made.values():
        world.db.engine.dispose()


@pytest.mark.parametrize(
    "where",
    [{}, {"status": "sent"}, {"status": "failed"}, {"customer_id": 0}, {"account_id": 0}],
    ids=["all", "sent", "failed", "customer", "account"],
)
def test_a_page_of_notifications_does_not_sort_the_organisations_outbox(
    outbox_worlds: dict[int, Outbox], where: dict[str, Any]
) -> None:
    cost = {}
    for count, world in outbox_worlds.items():
        chosen = {  # the quiet customer's or account's id for their filters
            key: {"customer_id": world.customer_id, "account_id": world.account_id}.get(key, value)
            for key, value in where.items()
        }
        cost[count], found = _db_steps(
            world.db,
            lambda w=world, c=chosen: notifications.list_notifications(
                w.db, organisation_id=w.org, limit=50, **c
            ),
        )
        with world.db.read() as conn:  # the newest 50 of the organisation's matching messages
            expected = [
                row.id
                for row in conn.execute(
                    select(notification_outbox)
                    .where(notification_outbox.c.organisation_id == world.org)
                    .order_by(notification_outbox.c.id.desc())
                )
                if all(getattr(row, key) == value for key, value in chosen.items())
            ][:50]
        assert [row["id"] for row in found] == expected
        assert len(expected) == (QUIET if {"customer_id", "account_id"} & set(where) else 50)
    # The customer's and account's dozen messages are found through their own indexes, not by
    # walking the organisation's outbox from its newest message.
    assert cost[OUTBOX_LONG] < 2 * cost[OUTBOX_SHORT], cost


@pytest.mark.parametrize(
    "status", [None, "confirmed", "failed"], ids=["all", "confirmed", "failed"]
)
def test_a_page_of_commands_does_not_sort_every_command_of_a_status(
    outbox_worlds: dict[int, Outbox], status: str | None
) -> None:
    cost = {}
    for count, world in outbox_worlds.items():
        cost[count], found = _steps(
            world.db,
            lambda conn, w=world: command_repository.select_commands(
                conn, organisation_id=w.org, status=status, limit=50
            ),
        )
        with world.db.read() as conn:
            expected = [
                row.id
                for row in conn.execute(
                    select(commands.c.id, commands.c.status)
                    .where(commands.c.organisation_id == world.org)
                    .order_by(commands.c.id.desc())
                )
                if status in (None, row.status)
            ][:50]
        assert [command.id for command in found] == expected and len(expected) == 50
    assert cost[OUTBOX_LONG] < 2 * cost[OUTBOX_SHORT], cost


@pytest.fixture(scope="module")
def crowded_worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Outbox]]:
    """Two databases where a quiet organisation has the same dozen old commands, and another
    organisation's command history after them is short in one and long in the other."""
    made = {}
    for count in (OUTBOX_SHORT, OUTBOX_LONG):
        path = Path(tmp_path_factory.mktemp(f"crowded{count}")) / "db.sqlite3"
        engine = build_engine(f"sqlite:///{path}")
        load_all_tables().create_all(engine)
        db = Database(engine=engine, clock=FakeClock(T0))
        quiet = one_meter_account(db)
        busy = make_org(db, "Org B")
        busy_meter = make_meter(db, busy, "M9")
        orders = [
            _finished_command(org.id, meter, i)
            for i, (org, meter) in enumerate(
                [(quiet.org, quiet.meter_id)] * QUIET + [(busy, busy_meter)] * count
            )
        ]
        with db.transaction() as conn:
            conn.execute(insert(commands), orders)
        made[count] = Outbox(db, quiet.org.id, quiet.org.customer_id, quiet.account.account_id)
    yield made
    for world in made.values():
        world.db.engine.dispose()


@pytest.mark.parametrize(
    "status", [None, "confirmed", "failed"], ids=["all", "confirmed", "failed"]
)
def test_a_quiet_organisations_commands_do_not_walk_another_organisations(
    crowded_worlds: dict[int, Outbox], status: str | None
) -> None:
    """With many organisations, the list of one is read through its own (organisation, …, id)
    index, not by walking every newer command of every organisation."""
    cost = {}
    for count, world in crowded_worlds.items():
        cost[count], found = _steps(
            world.db,
            lambda conn, w=world: command_repository.select_commands(
                conn, organisation_id=w.org, status=status, limit=50
            ),
        )
        expected = {None: QUIET, "confirmed": QUIET - QUIET // 3, "failed": QUIET // 3}[status]
        assert len(found) == expected
        assert all(c.status == status for c in found if status is not None)
        assert [c.id for c in found] == sorted((c.id for c in found), reverse=True)
    assert cost[OUTBOX_LONG] < 2 * cost[OUTBOX_SHORT], cost


# --- a notification list bounded in time -------------------------------------------------------

TIME_BOUNDED = ["until", "since-until", "since", "until-failed", "until-customer"]


def _time_bounds(name: str, count: int, customer_id: int) -> dict[str, Any]:
    """A list's filters in a world of ``count`` messages a minute apart: ``until`` leaves out
    the newest 5 and keeps the whole history before them."""
    until = T0 + timedelta(minutes=count - 5)
    return {
        "until": {"until": until},
        "since-until": {"since": T0, "until": until},
        "since": {"since": T0},
        "until-failed": {"until": until, "status": "failed"},
        "until-customer": {"until": until, "customer_id": customer_id},
    }[name]


def _newest_first(db: Database, org: int, where: dict[str, Any]) -> list[int]:
    """The ids of the organisation's messages that ``where`` matches, newest first by (queued
    at, id), worked out here from every row."""
    with db.read() as conn:
        rows = conn.execute(
            select(notification_outbox).where(notification_outbox.c.organisation_id == org)
        ).all()
    return [
        row.id
        for row in sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True)
        if where.get("since", row.created_at) <= row.created_at
        and ("until" not in where or row.created_at < where["until"])
        and where.get("status", row.status) == row.status
        and where.get("customer_id", row.customer_id) == row.customer_id
    ]


@pytest.mark.parametrize("page", [1, 2], ids=["first-page", "next-page"])
@pytest.mark.parametrize("bounds", TIME_BOUNDED)
def test_a_time_bounded_page_of_notifications_does_not_sort_the_history_before_it(
    outbox_worlds: dict[int, Outbox], bounds: str, page: int
) -> None:
    """``until`` (alone or with ``since``) leaves the whole history before it in the range: a
    page is read down (organisation, created at, id) from the end of the range, or from the
    previous page's last message, and stops after its rows (it sorted the range: 643 -> 11,283
    VM steps for ``until`` with 200 -> 4,000 messages)."""
    cost = {}
    for count, world in outbox_worlds.items():
        where = _time_bounds(bounds, count, world.customer_id)
        expected = _newest_first(world.db, world.org, where)
        assert (len(expected) == QUIET) if bounds == "until-customer" else (len(expected) > 50)
        # The next page: 20 after the first 20 (the quiet customer's: 6 after 6), full in both.
        start, limit = (0, 50) if page == 1 else (min(20, len(expected) // 2), 20)
        before = {"before_id": expected[start - 1]} if start else {}
        cost[count], found = _db_steps(
            world.db,
            lambda w=world, c={**where, **before}, n=limit: notifications.list_notifications(
                w.db, organisation_id=w.org, limit=n, **c
            ),
        )
        assert [row["id"] for row in found] == expected[start : start + limit]
    assert cost[OUTBOX_LONG] < 2 * cost[OUTBOX_SHORT], cost


@pytest.mark.parametrize("bounds", ["until", "since-until", "until-failed"])
def test_a_deep_page_of_notifications_costs_what_the_second_does(
    outbox_worlds: dict[int, Outbox], bounds: str
) -> None:
    """A next page is read down from its cursor's message, not from ``until`` past the pages
    before it: 20 after the first 1,000 matching messages cost what 20 after the first 20 do
    (561 against 69 VM steps when ``until`` was the end of the index range)."""
    world = outbox_worlds[OUTBOX_LONG]
    where = _time_bounds(bounds, OUTBOX_LONG, world.customer_id)
    expected = _newest_first(world.db, world.org, where)
    start_deep = min(1_000, len(expected) - 20)
    cost = {}
    for start in (20, start_deep):
        cost[start], found = _db_steps(
            world.db,
            lambda w=world, c={**where, "before_id": expected[start - 1]}: (
                notifications.list_notifications(w.db, organisation_id=w.org, limit=20, **c)
            ),
        )
        assert [row["id"] for row in found] == expected[start : start + 20]
    assert start_deep > 500
    assert cost[start_deep] < 2 * cost[20], cost


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_a_time_bounded_page_of_notifications_is_an_index_range_on_postgresql(
    db: Database,
) -> None:
    """PostgreSQL's plan for the same pages, with the statistics of 4,000 messages of each of
    two organisations: a backward scan of (organisation, created at, id) under the limit, no
    sort."""
    ours, theirs = make_org(db, "Org A"), make_org(db, "Org B")
    rows = [
        outbox_row(org.id, f"{org.id}.{i}", T0 + timedelta(minutes=i), customer_id=org.customer_id)
        for i in range(OUTBOX_LONG)
        for org in (ours, theirs)
    ]
    with db.transaction() as conn:
        conn.execute(insert(notification_outbox), rows)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE notification_outbox")
    for bounds in ("until", "since-until", "since"):
        where = _time_bounds(bounds, OUTBOX_LONG, ours.customer_id)
        expected = _newest_first(db, ours.id, where)
        for start in (0, 50):
            before = {"before_id": expected[start - 1]} if start else {}
            plans, found = _pg_plans(
                db,
                lambda w={**where, **before}: notifications.list_notifications(
                    db, organisation_id=ours.id, limit=50, **w
                ),
            )
            assert [row["id"] for row in found] == expected[start : start + 50]
            (plan,) = (plan for statement, plan in plans if "ORDER BY" in statement)
            nodes = list(_plan_nodes(plan))
            assert nodes[0]["Node Type"] == "Limit", (bounds, start, plan)
            assert not [n for n in nodes if "Sort" in n["Node Type"]], (bounds, start, plan)
            (scan,) = (n for n in nodes if "Scan" in n["Node Type"])
            assert scan["Node Type"] == "Index Scan", (bounds, start, plan)
            assert scan["Index Name"] == "ix_notification_outbox_org_created_id", plan
            assert scan["Scan Direction"] == "Backward", (bounds, start, plan)


def _pg_plans(db: Database, work: Callable[[], Any]) -> tuple[list[tuple[str, Any]], Any]:
    """PostgreSQL's plan for every statement ``work`` ran (EXPLAIN of the same statement with
    the same parameters, afterwards), and what ``work`` returned."""
    ran: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        ran.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        result = work()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    plans = []
    with db.read() as conn:
        for statement, parameters in ran:
            explained = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
            plans.append((statement, explained.scalar_one()[0]["Plan"]))
    return plans, result


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _plan_nodes(child)


# --- the audit log bounded in time -------------------------------------------------------------

AUDIT_TIME_BOUNDED = ["until", "since-until", "since", "until-action"]


def _audit_bounds(name: str, count: int) -> AuditFilter:
    """A list's filters in an audit world of ``count`` entries a minute apart: ``until`` leaves
    out the newest 5 and keeps the whole history before them."""
    until = T0 + timedelta(minutes=count - 5)
    return {
        "until": AuditFilter(until=until),
        "since-until": AuditFilter(since=T0, until=until),
        "since": AuditFilter(since=T0),
        "until-action": AuditFilter(until=until, action="refund"),
    }[name]


def _audit_newest_first(db: Database, org: int, where: AuditFilter) -> list[int]:
    """The ids of the organisation's entries that ``where`` matches, newest first by (at, id),
    worked out here from every row."""
    with db.read() as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.organisation_id == org)).all()
    return [
        row.id
        for row in sorted(rows, key=lambda r: (r.at, r.id), reverse=True)
        if (where.since is None or where.since <= row.at)
        and (where.until is None or row.at < where.until)
        and where.action in (None, row.action)
    ]


@pytest.mark.parametrize("page", [1, 2], ids=["first-page", "next-page"])
@pytest.mark.parametrize("bounds", AUDIT_TIME_BOUNDED)
def test_a_time_bounded_page_of_the_audit_log_does_not_sort_the_history_before_it(
    audit_worlds: dict[int, tuple[Database, int]], bounds: str, page: int
) -> None:
    """``until`` (alone, with ``since`` or with an action) leaves the whole history before it in
    the range: a page is read down (organisation, at, id) from the end of the range, or from the
    previous page's last entry, and stops after its rows."""
    cost = {}
    for count, (db, org) in audit_worlds.items():
        where = _audit_bounds(bounds, count)
        expected = _audit_newest_first(db, org, where)
        assert len(expected) > 60  # a full page, and a full next page after 20
        start, limit = (0, 50) if page == 1 else (20, 20)
        window = Window(expected[start - 1] if start else None, limit)
        cost[count], (rows, cursor) = _steps(
            db, lambda conn, o=org, w=where, n=window: audit_queries.list_entries(conn, o, w, n)
        )
        assert [row["id"] for row in rows] == expected[start : start + limit]
        assert cursor == str(expected[start + limit - 1])
    assert cost[AUDIT_LONG] < 2 * cost[AUDIT_SHORT], cost


@pytest.mark.parametrize("bounds", ["until", "since-until", "until-action"])
def test_a_deep_page_of_the_audit_log_costs_what_the_second_does(
    audit_worlds: dict[int, tuple[Database, int]], bounds: str
) -> None:
    """A next page is read down from its cursor's entry, not from ``until`` past the pages
    before it: 20 after the first 1,000 matching entries cost what 20 after the first 20 do."""
    db, org = audit_worlds[AUDIT_LONG]
    where = _audit_bounds(bounds, AUDIT_LONG)
    expected = _audit_newest_first(db, org, where)
    cost = {}
    for start in (20, 1_000):
        window = Window(expected[start - 1], 20)
        cost[start], (rows, _) = _steps(
            db, lambda conn, n=window: audit_queries.list_entries(conn, org, where, n)
        )
        assert [row["id"] for row in rows] == expected[start : start + 20]
    assert cost[1_000] < 2 * cost[20], cost


@pytest.mark.parametrize("bounds", ["until", "since-until", "until-action"])
def test_a_time_bounded_audit_export_stops_at_its_limit(
    audit_worlds: dict[int, tuple[Database, int]], bounds: str
) -> None:
    """The CSV export of a range is its oldest entries up to the limit, read up (organisation,
    at, id) from the start of the range, not the whole range sorted by id."""
    cost = {}
    for count, (db, org) in audit_worlds.items():
        where = _audit_bounds(bounds, count)
        cost[count], rows = _steps(
            db, lambda conn, o=org, w=where: list(audit_queries.export_rows(conn, o, w, 50))
        )
        assert [row["id"] for row in rows] == _audit_newest_first(db, org, where)[::-1][:50]
    assert cost[AUDIT_LONG] < 2 * cost[AUDIT_SHORT], cost


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_a_time_bounded_page_of_the_audit_log_is_an_index_range_on_postgresql(
    db: Database,
) -> None:
    """PostgreSQL's plan for the same pages, with the statistics of 4,000 entries of each of
    two organisations: a backward scan of (organisation, at, id) under the limit, no sort (and
    a forward one for the CSV export of the range)."""
    ours, theirs = make_org(db, "Org A").id, make_org(db, "Org B").id
    entries = [
        Entry(org, "test:operator", action, f"account:{i % 7}", T0 + timedelta(minutes=i))
        for i in range(AUDIT_LONG)
        for org, action in ((ours, "recharge" if i % 3 else "refund"), (theirs, "recharge"))
    ]
    with db.transaction() as conn:
        record_many(conn, entries)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE audit_log")
    for bounds in AUDIT_TIME_BOUNDED:
        where = _audit_bounds(bounds, AUDIT_LONG)
        expected = _audit_newest_first(db, ours, where)
        for start in (0, 50):
            window = Window(expected[start - 1] if start else None, 50)

            def work(w: AuditFilter = where, n: Window = window) -> Any:
                with db.read() as conn:
                    return audit_queries.list_entries(conn, ours, w, n)

            plans, (rows, _) = _pg_plans(db, work)
            assert [row["id"] for row in rows] == expected[start : start + 50]
            (plan,) = (plan for statement, plan in plans if "ORDER BY" in statement)
            nodes = list(_plan_nodes(plan))
            assert nodes[0]["Node Type"] == "Limit", (bounds, start, plan)
            assert not [n for n in nodes if "Sort" in n["Node Type"]], (bounds, start, plan)
            (scan,) = (n for n in nodes if "Scan" in n["Node Type"])
            assert scan["Node Type"] == "Index Scan", (bounds, start, plan)
            assert scan["Index Name"] == "ix_audit_org_at_id", (bounds, start, plan)
            assert scan["Scan Direction"] == "Backward", (bounds, start, plan)

        def export(w: AuditFilter = where) -> Any:  # the oldest 50 of the range
            with db.read() as conn:
                return list(audit_queries.export_rows(conn, ours, w, 50))

        plans, rows = _pg_plans(db, export)
        assert [row["id"] for row in rows] == expected[::-1][:50]
        ((_, plan),) = plans
        nodes = list(_plan_nodes(plan))
        assert nodes[0]["Node Type"] == "Limit", (bounds, plan)
        assert not [n for n in nodes if "Sort" in n["Node Type"]], (bounds, plan)
        (scan,) = (n for n in nodes if "Scan" in n["Node Type"])
        assert scan["Index Name"] == "ix_audit_org_at_id", (bounds, plan)
        assert scan["Scan Direction"] == "Forward", (bounds, plan)


# --- supply drift --------------------------------------------------------------------------------

DRIFT_SHORT, DRIFT_LONG = 100, 2_000  # hourly re-asserts of one drifting meter


def _reassert_command(organisation_id: int, meter_id: int, i: int) -> dict[str, Any]:
    """The ``i``-th hourly re-assert of a meter whose relay keeps opening: each confirmed."""
    at = T0 + timedelta(hours=i)
    return dict(
        organisation_id=organisation_id,
        meter_id=meter_id,
        kind="relay_close",
        params='{"reason": "reassert"}',
        status="confirmed",
        attempts=1,
        max_attempts=3,
        next_attempt_at=at,
        deadline_at=at + timedelta(minutes=15),
        idempotency_key=f"{organisation_id}:reassert:{meter_id}:{i}",
        created_by="system:control",
        created_at=at,
        sent_at=at,
        finished_at=at + timedelta(minutes=1),
    )


@pytest.fixture(scope="module")
def drift_worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Database]]:
    """Two databases whose drifting meter differs only in the length of its re-assert history:
    supply on, the relay read open after the last re-assert (half an hour ago) was confirmed."""
    made = {}
    for count in (DRIFT_SHORT, DRIFT_LONG):
        path = Path(tmp_path_factory.mktemp(f"drift{count}")) / "db.sqlite3"
        engine = build_engine(f"sqlite:///{path}")
        load_all_tables().create_all(engine)
        db = Database(engine=engine, clock=FakeClock(T0))
        org = make_org(db)
        spec = metering.MeterSpec(
            number="M1", utility="electricity", kind="single_phase", protocol="dlt645",
            address="000000000001", room_id=org.room_id,
        )  # fmt: skip
        meter_id = metering.create_meter(db, organisation_id=org.id, spec=spec, actor=ACTOR)
        open_account(db, org, "A-1", [(meter_id, make_tariff(db, org), "0")], credit="100")
        history = [_reassert_command(org.id, meter_id, i) for i in range(count)]
        seen = T0 + timedelta(hours=count - 1, minutes=20)
        with db.transaction() as conn:
            conn.execute(insert(commands), history)
            device_state.save_snapshot(conn, Snapshot(meter_id, seen, relay="open"), seen)
        made[count] = db
    yield made
    for db in made.values():
        db.engine.dispose()


@pytest.mark.parametrize(
    ("after", "sent"), [(timedelta(minutes=30), 0), (timedelta(minutes=61), 1)], ids=["wait", "due"]
)
def test_the_drift_step_does_not_read_the_meters_command_history(
    drift_worlds: dict[int, Database], after: timedelta, sent: int
) -> None:
    """Every tick looks at every drifting meter: within the interval it only finds that it
    waits, an hour after its last re-assert it sends the next one — both without reading the
    meter's months of earlier re-asserts (the step aggregated them all, and locked and re-read
    the meters it would then leave alone)."""
    cost = {}
    for count, db in drift_worlds.items():
        at = T0 + timedelta(hours=count - 1) + after
        outbox = RecordingOutbox()
        cost[count], reasserted = _db_steps(
            db,
            lambda d=db, o=outbox, a=at: supply_drift.reassert(
                d, outbox=o, at=a, interval=timedelta(hours=1)
            ),
        )
        assert (reasserted, len(outbox.commands)) == (sent, sent), cost
    assert cost[DRIFT_LONG] < 2 * cost[DRIFT_SHORT], cost


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_the_drift_step_reads_commands_by_index_on_postgresql(db: Database) -> None:
    """PostgreSQL's plans for the drift step (the meters due again), with the statistics of 20
    meters of 2,000 re-asserts each: every read of ``commands`` is an index scan that visits a
    handful of rows per meter (the last day's re-asserts at most), not the meter's history.
    (With two meters only, PostgreSQL rightly walks the primary key down for a meter's newest
    command: half the rows are the meter's.)"""
    org = make_org(db)
    tariff = make_tariff(db, org)
    meter_ids = []
    for n in range(1, 21):
        spec = metering.MeterSpec(
            number=f"M{n}", utility="electricity", kind="single_phase", protocol="dlt645",
            address=f"{n:012d}", room_id=org.room_id,
        )  # fmt: skip
        meter_ids.append(metering.create_meter(db, organisation_id=org.id, spec=spec, actor=ACTOR))
        open_account(db, org, f"A-{n}", [(meter_ids[-1], tariff, "0")], credit="100")
    seen = T0 + timedelta(hours=DRIFT_LONG - 1, minutes=20)
    with db.transaction() as conn:
        for meter_id in meter_ids:
            history = [_reassert_command(org.id, meter_id, i) for i in range(DRIFT_LONG)]
            conn.execute(insert(commands), history)
            device_state.save_snapshot(conn, Snapshot(meter_id, seen, relay="open"), seen)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE commands")
    at = T0 + timedelta(hours=DRIFT_LONG)
    ran: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM commands" in statement and statement.lstrip().startswith("SELECT"):
            ran.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        sent = supply_drift.reassert(
            db, outbox=RecordingOutbox(), at=at, interval=timedelta(hours=1)
        )
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert sent == len(meter_ids) and ran
    with db.read() as conn:
        plans = [
            conn.exec_driver_sql(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters
            ).scalar_one()[0]
            for statement, parameters in ran
        ]
    for plan in (explained["Plan"] for explained in plans):
        scans = [n for n in _plan_nodes(plan) if n.get("Relation Name") == "commands"]
        assert scans and all("Index" in n["Node Type"] for n in scans), plan
        for scan in scans:
            visited = scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0)
            # per meter (loop): at most the last day's re-asserts
            assert visited <= 30, json.dumps({k: v for k, v in scan.items() if k != "Plans"})
