"""Deduction summaries (扣费通知) on SQLite and PostgreSQL: an account that used electricity and
water on a local day hears the day's quantity and money per utility and its balance — exactly
the lines whose interval ended in that day in the site's zone, not UTC's — once, only while the
organisation has summaries on, not when it used nothing; a quantity account hears its quantity
left; the dispatcher renders it through the log channel in the tenant's language."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from builders import (
    ACTOR,
    Org,
    flat_definition,
    local,
    make_meter,
    make_org,
    make_tariff,
    open_account,
    reading,
    wallet,
)
from sqlalchemy import event, select
from test_notifications_outbox import Scripted

from meterdesk.billing import summaries
from meterdesk.billing.accounts import OpenedAccount
from meterdesk.billing.ingest import Ingestor
from meterdesk.db.database import Database
from meterdesk.notifications import summary_settings
from meterdesk.notifications.channels.base import DeliveryResult, OutgoingMessage
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.configuration import configure_channel
from meterdesk.notifications.dispatcher import Dispatcher
from meterdesk.notifications.model import Channel
from meterdesk.notifications.tables import notification_outbox
from meterdesk.runtime import Runtime, RuntimeSettings
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.time import FakeClock
from meterdesk.sites.tables import customers, sites

pytestmark = pytest.mark.integration


class Park:
    """An organisation in Shanghai with a log channel (every event) and account A-1 on an
    electricity meter at 0.70 per kWh and a water meter at 3.00 per m³, opened with 100.00."""

    def __init__(self, db: Database, clock: FakeClock) -> None:
        self.db, self.clock = db, clock
        self.org: Org = make_org(db)
        configure_channel(
            db, organisation_id=self.org.id, channel="log", provider="log", actor=ACTOR
        )
        power = make_tariff(db, self.org, "power", flat_definition("0.70"))
        self.water_tariff = make_tariff(
            db, self.org, "water", flat_definition("3.00", utility="water")
        )
        self.power_meter = make_meter(db, self.org, "E1")
        self.water_meter = make_meter(db, self.org, "W1", utility="water")
        self.ingestor = Ingestor(db)
        self.account = open_account(
            db,
            self.org,
            "A-1",
            [(self.power_meter, power, "1000"), (self.water_meter, self.water_tariff, "100")],
            ingestor=self.ingestor,
        )

    def read(self, meter: int, at: str, total: str) -> None:
        self.clock.now = local(at)
        self.ingestor.ingest([reading(meter, self.clock.now, total)])

    def summaries_on(self, cadence: str = "daily") -> None:
        summary_settings.set_cadence(
            self.db, organisation_id=self.org.id, value=cadence, actor=ACTOR
        )

    def send_at(self, at: str) -> summaries.SummaryReport:
        self.clock.now = local(at)
        return summaries.send_due(self.db)

    def queued(self) -> list[dict[str, Any]]:
        return queued(self.db)

    def delivered(self) -> list[OutgoingMessage]:
        return delivered(self.db)


def queued(db: Database) -> list[dict[str, Any]]:
    table = notification_outbox
    with db.read() as conn:
        rows = conn.execute(
            select(table.c.event_key, table.c.account_id, table.c.params, table.c.urgency)
            .where(table.c.event_kind == "deduction_summary")
            .order_by(table.c.id)
        ).mappings()
        return [{**row, "params": json.loads(row["params"])} for row in rows]


def delivered(db: Database) -> list[OutgoingMessage]:
    """The summaries the dispatcher delivers now, rendered, through the log channel."""
    log = Scripted([DeliveryResult("log")])
    registry = ChannelRegistry(clock=db.clock, overrides={Channel.LOG: log})
    asyncio.run(Dispatcher(db, registry).drain())
    return [m for m in log.seen if m.event_kind == "deduction_summary"]


def a_day_of_use(park: Park) -> None:
    """On 2 November (Shanghai): 12.3 kWh (8.61) and 3 m³ (9.00); 00:01 on the 3rd — still the
    2nd in UTC — is the next day's."""
    park.read(park.power_meter, "2026-11-02 12:00", "1010")
    park.read(park.water_meter, "2026-11-02 20:00", "103")
    park.read(park.power_meter, "2026-11-02 23:59", "1012.3")
    park.read(park.power_meter, "2026-11-03 00:01", "1015")


def test_a_days_summary_names_each_utilitys_use_and_money_and_the_balance(
    db: Database, clock: FakeClock
) -> None:
    park = Park(db, clock)
    a_day_of_use(park)
    park.summaries_on()
    report = park.send_at("2026-11-03 01:00")
    assert (report.queued, report.already, report.skipped) == (1, 0, 0)
    (message,) = park.queued()
    assert message["event_key"] == f"summary:daily:{park.account.account_id}:2026-11-02"
    assert message["urgency"] == "normal"
    params = message["params"]
    assert params["period"] == "2026-11-02"
    assert (params["electricity_quantity"], params["electricity_amount"]) == ("12.30", "8.61")
    assert (params["water_quantity"], params["water_amount"]) == ("3.00", "9.00")
    # the balance now: the 00:01 reading's 1.89 is already deducted
    assert params["balance"] == f"{wallet(db, park.account):.2f}" == "80.50"

    (text,) = [m.text for m in park.delivered()]
    assert text == (
        "【Org A】尊敬的Li Lei，您的房间101 11月2日 用电 12.30 kWh，扣费 8.61 元；"
        "用水 3.00 m³，扣费 9.00 元，当前余额 80.50 元。"
    )


def test_nothing_is_sent_while_summaries_are_off_and_nothing_twice_when_on(
    db: Database, clock: FakeClock
) -> None:
    park = Park(db, clock)
    a_day_of_use(park)
    report = park.send_at("2026-11-03 01:00")  # off: the default, although the log takes all
    assert (report.queued, report.periods, park.queued()) == (0, [], [])
    with pytest.raises(ValidationError, match="off"):
        summaries.send(db, organisation_id=park.org.id)

    park.summaries_on()
    assert park.send_at("2026-11-03 01:00").queued == 1
    again = park.send_at("2026-11-03 02:00")  # a restart, a second process: nothing new
    assert (again.queued, again.already) == (0, 1)
    by_hand = summaries.send(db, organisation_id=park.org.id, period="2026-11-02")
    assert (by_hand.queued, by_hand.already) == (0, 1)
    assert len(park.queued()) == 1

    park.summaries_on("off")
    assert park.send_at("2026-11-04 01:00").periods == []


def test_an_account_with_nothing_deducted_hears_nothing(db: Database, clock: FakeClock) -> None:
    park = Park(db, clock)
    idle_meter = make_meter(db, park.org, "W2", utility="water")
    idle = open_account(db, park.org, "A-2", [(idle_meter, park.water_tariff, "50")])
    a_day_of_use(park)
    park.read(idle_meter, "2026-11-02 21:00", "50")  # read, but nothing used
    park.summaries_on()
    report = park.send_at("2026-11-03 01:00")
    assert (report.queued, report.skipped) == (1, 1)
    assert [m["account_id"] for m in park.queued()] == [park.account.account_id]
    assert idle.account_id != park.account.account_id
    # the 3rd had only the 00:01 reading so far; the 4th nothing: no message for either
    assert park.send_at("2026-11-04 01:00").queued == 1
    assert park.send_at("2026-11-05 01:00").queued == 0


def test_a_month_and_a_period_not_over_yet(db: Database, clock: FakeClock) -> None:
    park = Park(db, clock)
    a_day_of_use(park)
    park.summaries_on("monthly")
    assert park.send_at("2026-11-30 23:59").queued == 0  # October: nothing was used
    with pytest.raises(ValidationError, match="not over yet"):
        summaries.send(db, organisation_id=park.org.id, period="2026-11")
    report = park.send_at("2026-12-01 00:30")
    assert (report.queued, report.periods[0]["period"]) == (1, "2026-11")
    params = park.queued()[0]["params"]
    # the whole month: the 00:01 reading of the 3rd is in it too
    assert (params["electricity_quantity"], params["electricity_amount"]) == ("15.00", "10.50")
    assert "day" not in params
    (message,) = park.delivered()
    assert "2026年11月 用电 15.00 kWh，扣费 10.50 元" in message.text


def test_an_english_tenant_reads_it_in_english(db: Database, clock: FakeClock) -> None:
    park = Park(db, clock)
    with db.transaction() as conn:  # A-1's tenant chose English
        conn.execute(
            customers.update().where(customers.c.id == park.org.customer_id).values(language="en")
        )
    a_day_of_use(park)
    park.summaries_on()
    park.send_at("2026-11-03 01:00")
    (message,) = park.delivered()
    assert message.subject == "Usage and charges on 2026-11-02"
    assert message.text == (
        "[Org A] Dear Li Lei, your room 101 used 12.30 kWh of electricity (CNY 8.61) and "
        "3.00 m³ of water (CNY 9.00) on 2026-11-02. Balance: CNY 80.50."
    )


def test_a_quantity_account_hears_the_quantity_left(db: Database, clock: FakeClock) -> None:
    org = make_org(db, "Water Co")
    configure_channel(db, organisation_id=org.id, channel="log", provider="log", actor=ACTOR)
    tariff = make_tariff(db, org, "water", flat_definition("5.00", utility="water"))
    meter = make_meter(db, org, "W1", utility="water")
    ingestor = Ingestor(db)
    account: OpenedAccount = open_account(
        db, org, "Q-1", [(meter, tariff, "0")], credit="50", credit_unit="quantity"
    )  # 10 m³ bought
    clock.now = local("2026-11-02 18:00")
    ingestor.ingest([reading(meter, clock.now, "2")])
    summary_settings.set_cadence(db, organisation_id=org.id, value="daily", actor=ACTOR)
    clock.now = local("2026-11-03 08:00")
    assert summaries.send_due(db).queued == 1
    (found,) = queued(db)
    params = found["params"]
    assert found["account_id"] == account.account_id
    assert (params["quantity_left"], params["unit"], "balance" in params) == ("8.00", "m³", False)
    (message,) = delivered(db)
    assert "用水 2.00 m³，扣费 10.00 元，当前剩余水量 8.00 m³。" in message.text
    assert "余额" not in message.text


def test_a_run_process_does_not_read_a_summarised_period_again(
    db: Database, clock: FakeClock
) -> None:
    park = Park(db, clock)
    a_day_of_use(park)
    park.summaries_on()
    done: summaries.Done = set()
    clock.now = local("2026-11-03 01:00")
    first = summaries.send_due(db, done=done)
    assert (first.queued, [p["period"] for p in first.periods]) == (1, ["2026-11-02"])
    later = summaries.send_due(db, done=done)
    assert (later.queued, later.already, later.periods) == (0, 0, [])  # not read at all


def test_one_organisations_failure_does_not_stop_the_others(
    db: Database, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    broken = make_org(db, "Broken Co")  # first: its failure comes before the others' turn
    tariff = make_tariff(db, broken, "power", flat_definition("0.70"))
    open_account(db, broken, "B-1", [(make_meter(db, broken, "B1"), tariff, "0")])
    with db.transaction() as conn:  # its site names a zone the system no longer knows
        conn.execute(
            sites.update().where(sites.c.id == broken.site_id).values(timezone="Mars/Base")
        )
    park = Park(db, clock)
    a_day_of_use(park)
    summary_settings.set_cadence(db, organisation_id=broken.id, value="daily", actor=ACTOR)
    park.summaries_on()
    report = park.send_at("2026-11-03 01:00")
    assert (report.queued, report.failed) == (1, 1)
    assert "deduction summaries of organisation" in caplog.text


def test_meterdesk_runs_the_summaries_step(db: Database, clock: FakeClock) -> None:
    park = Park(db, clock)
    a_day_of_use(park)
    park.summaries_on()
    clock.now = local("2026-11-03 01:00")
    log = Scripted([DeliveryResult("log")])
    registry = ChannelRegistry(clock=clock, overrides={Channel.LOG: log})
    runtime = Runtime(db, RuntimeSettings(dispatch_idle_s=0.05), clock=clock, registry=registry)

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(runtime.run(stop))
        try:
            for _ in range(200):
                if any(m.event_kind == "deduction_summary" for m in log.seen):
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await running

    asyncio.run(scenario())
    assert (runtime.stats.summaries_queued, runtime.stats.summary_errors) == (1, 0)
    (message,) = [m for m in log.seen if m.event_kind == "deduction_summary"]
    assert "11月2日 用电 12.30 kWh" in message.text


def _statements_to_summarise(db: Database, clock: FakeClock, name: str, tenants: int) -> int:
    """Statements ``send`` runs for an organisation of ``tenants`` accounts that each used
    electricity on 2 November."""
    org = make_org(db, name)
    configure_channel(db, organisation_id=org.id, channel="log", provider="log", actor=ACTOR)
    tariff = make_tariff(db, org, "power", flat_definition("0.70"))
    ingestor = Ingestor(db)
    clock.now = local("2026-11-02 08:00")
    meters = [make_meter(db, org, f"{name}-{n}") for n in range(tenants)]
    for n, meter in enumerate(meters):
        open_account(db, org, f"{name}-A{n}", [(meter, tariff, "0")], ingestor=ingestor)
    clock.now = local("2026-11-02 20:00")
    ingestor.ingest([reading(meter, clock.now, "5") for meter in meters])
    summary_settings.set_cadence(db, organisation_id=org.id, value="daily", actor=ACTOR)
    clock.now = local("2026-11-03 01:00")
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        report = summaries.send(db, organisation_id=org.id)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert report.queued == tenants
    return len([statement for statement in seen if not statement.startswith("BEGIN")])


def test_summarising_more_accounts_costs_no_more_statements(db: Database, clock: FakeClock) -> None:
    few = _statements_to_summarise(db, clock, "Few", 2)
    many = _statements_to_summarise(db, clock, "Many", 12)
    assert few == many <= 20  # setting, zones, accounts; per batch 12 (meters, lines, …)
