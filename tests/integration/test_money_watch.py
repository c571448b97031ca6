"""Operators hear when a meter that bills itself disagrees with the ledger (``meter_money_differs``,
``devices/money_watch.py``): once per meter and day while it differs, in both languages, and
nothing for a meter that agrees, was never read or shares its account."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from builders import ACTOR, T0, minutes, reading
from test_commands import Meters, drain, executor, meter_billing_account, snapshot
from test_notifications_outbox import outbox_rows

from meterdesk.billing.ingest import Ingestor
from meterdesk.db.database import Database
from meterdesk.devices import money_watch, reconcile
from meterdesk.notifications import configuration
from meterdesk.notifications.rendering import Renderer
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration


def subscribe(db: Database, organisation_id: int) -> None:
    configuration.configure_channel(
        db,
        organisation_id=organisation_id,
        channel="log",
        provider="log",
        config={},
        events=["meter_money_differs"],
        actor=ACTOR,
    )


def told(db: Database) -> list[tuple[str, dict[str, Any]]]:
    return [(str(row["event_key"]), json.loads(row["params"])) for row in outbox_rows(db)]


def test_a_meter_whose_money_differs_is_announced_once_a_day(
    db: Database, clock: FakeClock
) -> None:
    org, meter_id, opened = meter_billing_account(db)
    subscribe(db, org.id)
    assert opened.initial_transfer_id is not None
    reconcile.push_recharge_for_transfer(db, opened.initial_transfer_id, ACTOR)
    asyncio.run(drain(db, clock, executor(db, clock, Meters(clock))))
    Ingestor(db).ingest([reading(meter_id, minutes(60), "1010")])  # 10 kWh × 0.6537 = 6.54

    reconcile.mirror(db, snapshot(meter_id, "93.46", 1, minutes(61)))
    agreed = money_watch.report_differences(db)
    assert (agreed.compared, agreed.differing, told(db)) == (1, [], [])

    reconcile.mirror(db, snapshot(meter_id, "80.00", 2, minutes(62)))  # a top-up elsewhere?
    first = money_watch.report_differences(db)
    assert [number for number, _ in first.differing] == ["M1"]
    for _ in range(3):  # the hourly runs of the day, and a restart
        clock.advance(timedelta(hours=1))
        money_watch.report_differences(db)
    [(key, params)] = told(db)
    assert key == f"meter:{meter_id}:money_differs:{clock.now.date().isoformat()}"
    assert (
        params
        | {
            "meter": "M1",
            "account": "A-1",
            "meter_money": "80.00",
            "expected": "93.46",
            "verdict": "purchases differ: meter 2, expected 1; money differs by -13.46",
            "purchases_meter": "2",
            "purchases_expected": "1",
        }
        == params
    )  # and the account's room and customer, for whoever reads it
    renderer, zone = Renderer(), ZoneInfo("Asia/Shanghai")
    english = renderer.render(template="meter_money_differs", language="en", params=params, tz=zone)
    assert "holds CNY 80.00, the platform expects CNY 93.46" in english.text
    assert "purchases on the meter 2, expected 1" in english.text
    chinese = renderer.render(
        template="meter_money_differs", language="zh-CN", params=params, tz=zone
    )
    assert "表内剩余金额 80.00 元，平台计算应为 93.46 元" in chinese.text

    clock.advance(timedelta(days=1))  # not settled: brought up again the next day
    money_watch.report_differences(db)
    assert len(told(db)) == 2


def test_the_runtime_clock_is_the_key_day(db: Database, clock: FakeClock) -> None:
    """The day in the key is the check's (UTC), whatever the meter's read time."""
    clock.now = T0 + timedelta(hours=23, minutes=59)
    org, meter_id, _ = meter_billing_account(db)
    subscribe(db, org.id)
    never_read = money_watch.report_differences(db)
    assert (never_read.compared, never_read.differing) == (1, [])  # nothing to compare yet
    reconcile.mirror(db, snapshot(meter_id, "1.00", 0, T0))
    money_watch.report_differences(db)
    clock.advance(timedelta(minutes=2))  # the next UTC day
    money_watch.report_differences(db)
    assert [key.rsplit(":", 1)[1] for key, _ in told(db)] == [
        T0.date().isoformat(),
        (T0 + timedelta(days=1)).date().isoformat(),
    ]
