"""A quantity account's (购量) tenant messages speak quantity, on SQLite and PostgreSQL: its water
runs down through ingest, the control loop warns and closes the valve, and the messages the
dispatcher renders (and the values an SMS or voice provider would get) say "剩余水量 … m³", never
a money balance in 元 — while a money account's messages stay as they were."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from test_notifications_outbox import Scripted

from meterdesk.billing import accounts, cashier, control_admin
from meterdesk.billing.ingest import IncomingReading, Ingestor
from meterdesk.billing.outbox import DatabaseOutbox
from meterdesk.db.database import Database
from meterdesk.metering import service as metering
from meterdesk.notifications import configuration
from meterdesk.notifications.channels.base import DeliveryResult, OutgoingMessage
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.dispatcher import Dispatcher
from meterdesk.notifications.model import Channel
from meterdesk.notifications.rendering import Renderer
from meterdesk.notifications.tables import notification_outbox
from meterdesk.shared.time import FakeClock
from meterdesk.sites import service as sites
from meterdesk.tariffs import service as tariffs

pytestmark = pytest.mark.integration

WATER_5_YUAN = {
    "utility": "water",
    "versions": [{"effective_from": "2026-01-01", "prices": {"flat": "5.00"}}],
}
# A quantity account's alarm amounts are quantities: 6.00 and 3.00 m³ left.
LEVELS = [
    {"level": 1, "amount": "6.00", "channels": ["email"]},
    {"level": 2, "amount": "3.00", "channels": ["email"]},
]
SHANGHAI = ZoneInfo("Asia/Shanghai")


class WaterRoom:
    """A shop with a remotely closable water valve, its account opened with 50.00 at 5.00 per m³
    (10.00 m³), an alarm plan and an e-mail channel; decisions leave through the database."""

    def __init__(self, db: Database, clock: FakeClock, credit_unit: str) -> None:
        self.db, self.clock = db, clock
        self.org = sites.create_organisation(db, name="Water Co")
        site = sites.create_site(
            db, organisation_id=self.org, name="Park", timezone="Asia/Shanghai"
        )
        building = sites.create_building(db, organisation_id=self.org, site_id=site, name="A")
        floor = sites.create_floor(
            db, organisation_id=self.org, building_id=building, name="1F", level=1
        )
        room = sites.create_room(
            db, organisation_id=self.org, floor_id=floor, name="101", kind="shop"
        )
        customer = sites.create_customer(
            db, organisation_id=self.org, name="张伟", email="zhang@example.com"
        )
        tariff = tariffs.create_tariff(
            db, organisation_id=self.org, name="water", definition=WATER_5_YUAN, actor="t"
        )
        spec = metering.MeterSpec(
            number="W1",
            utility="water",
            kind="water",
            protocol="cjt188",
            address="00000000000001",
            room_id=room,
        )
        self.meter = metering.create_meter(db, organisation_id=self.org, spec=spec, actor="t")
        self.pipeline = Ingestor(db)
        self.account_id = accounts.open_account(
            db,
            organisation_id=self.org,
            actor="t",
            ingestor=self.pipeline,
            request=accounts.OpenAccount(
                number="W-1",
                customer_id=customer,
                room_id=room,
                meters=[accounts.MeterOpening(self.meter, tariff, Decimal(0))],
                initial_credit="50.00",
                credit_unit=credit_unit,
            ),
        ).account_id
        control_admin.create_alarm_plan(
            db, organisation_id=self.org, name="water", levels=LEVELS, actor="op"
        )
        control_admin.set_account_policy(
            db,
            organisation_id=self.org,
            number="W-1",
            actor="op",
            outbox=DatabaseOutbox(),
            change=control_admin.PolicyChange(alarm_plan="water"),
        )
        configuration.configure_channel(
            db,
            organisation_id=self.org,
            channel="email",
            provider="smtp",
            config={"host": "127.0.0.1", "port": 25, "sender": "n@example.com"},
            secret_refs={},
            events=None,
            actor="op",
        )
        self.register = Decimal(0)

    def use(self, m3: str) -> None:
        self.clock.advance(timedelta(minutes=15))
        self.register += Decimal(m3)
        self.pipeline.ingest([IncomingReading(self.meter, self.clock.now, self.register)])

    def recharge(self, amount: str, key: str) -> None:
        cashier.recharge(
            self.db,
            organisation_id=self.org,
            account_id=self.account_id,
            amount=amount,
            method="cash",
            actor="cashier",
            idempotency_key=key,
        )

    def delivered(self) -> list[OutgoingMessage]:
        mail = Scripted([DeliveryResult("mail")])
        registry = ChannelRegistry(clock=self.db.clock, overrides={Channel.EMAIL: mail})
        asyncio.run(Dispatcher(self.db, registry).drain())
        return mail.seen

    def outbox_params(self) -> dict[str, dict[str, object]]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(notification_outbox.c.event_kind, notification_outbox.c.params).order_by(
                    notification_outbox.c.id
                )
            ).all()
        return {str(row.event_kind): json.loads(row.params) for row in rows}


def test_a_quantity_accounts_alarms_and_cut_speak_cubic_metres(
    db: Database, clock: FakeClock
) -> None:
    room = WaterRoom(db, clock, "quantity")
    for _ in range(5):
        room.use("2")  # 10 → 8 → 6 (L1) → 4 → 2 (L2) → 0 m³ (valve closes)
    seen = {message.event_kind: message for message in room.delivered()}
    assert list(seen) == ["alarm_level_1", "alarm_level_2", "supply_cut"]

    alarm = seen["alarm_level_1"]
    assert alarm.subject == "剩余水量一级告警"
    assert "剩余水量为 6.00 m³，已低于一级告警量 6.00 m³" in alarm.text
    assert "元" not in alarm.text
    assert "6.00立方米" in alarm.voice_text
    # What an SMS or voice provider receives: the quantity with its unit, no money balance.
    assert (alarm.values["quantity_left"], alarm.values["unit"]) == ("6.00", "m³")
    assert "balance" not in alarm.values and "threshold" not in alarm.values
    assert "剩余水量为 2.00 m³" in seen["alarm_level_2"].text
    cut = seen["supply_cut"].text
    assert "因剩余水量已用完（剩余水量 0.00 m³）" in cut and "关阀停水" in cut
    assert "元" not in cut

    english = Renderer().render(
        template="supply_cut",
        language="en",
        params={**room.outbox_params()["supply_cut"], "utility": "water"},
        tz=SHANGHAI,
    )
    assert "because the quantity bought was used up (0.00 m³ left)" in english.text

    room.recharge("20.00", "r-1")  # 4.00 m³: the valve opens
    restored = {m.event_kind: m for m in room.delivered()}["supply_restored"]
    assert "当前剩余水量 4.00 m³" in restored.text and "元" not in restored.text
    credited = room.outbox_params()["recharge_credited"]  # the desk's own message
    assert (credited["quantity_left"], credited["unit"], "balance" in credited) == (
        "4.00",
        "m³",
        False,
    )
    words = Renderer().render(
        template="recharge_credited",
        language="zh-CN",
        params={**credited, "utility": "water"},
        tz=SHANGHAI,
    )
    assert "当前剩余水量 4.00 m³" in words.text


def test_a_money_accounts_messages_still_speak_yuan(db: Database, clock: FakeClock) -> None:
    room = WaterRoom(db, clock, "money")  # the same plan read as money: 6.00 and 3.00 元
    for _ in range(10):
        room.use("1")  # 5.00 元 a step: 50 → 45 → … → 5 (L1) → 0 (cut)
    seen = {message.event_kind: message for message in room.delivered()}
    assert "水费余额为 5.00 元，已低于一级告警金额 6.00 元" in seen["alarm_level_1"].text
    assert "因余额不足（当前余额 0.00 元）" in seen["supply_cut"].text
    assert seen["supply_cut"].values["balance"] == "0.00"
    assert "quantity_left" not in seen["supply_cut"].values
