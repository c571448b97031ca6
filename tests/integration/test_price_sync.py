"""Meters that bill themselves get their tariff's prices without anyone remembering (F-TAR-PUSH):
``price_sync.sync_prices`` (run hourly by ``meterdesk run``, and ``meterdesk command sync-prices``)
queues one ``write_prices`` per meter whose newest confirmed or open write is not the table of its
tariff in force today — after a tariff change, on the day a new version starts — and nothing for
meters that already have it, are billed by the platform, or cannot take a table."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from builders import ACTOR, Org, flat_definition, make_org, make_tariff, tou_tier_definition
from sqlalchemy import func, select
from test_commands import Meters, drain, executor
from typer.testing import CliRunner

from meterdesk.billing import accounts as account_service
from meterdesk.billing import corrections, tariff_change
from meterdesk.cli import common as cli_common
from meterdesk.cli.commands import command_cli
from meterdesk.db.database import Database
from meterdesk.devices import price_sync
from meterdesk.devices import service as devices
from meterdesk.devices.ports import DeviceRefusedError, MeterAddress
from meterdesk.devices.tables import commands
from meterdesk.metering import service as metering
from meterdesk.shared.time import FakeClock
from meterdesk.sites import service as sites
from meterdesk.tariffs import service as tariffs

pytestmark = pytest.mark.integration
D = Decimal
SLOTS = ("sharp", "peak", "flat", "valley")


def dlt645_line(db: Database, org: Org) -> int:
    """A DL/T 645 bus nobody answers on: the check only needs the meters to be on a line."""
    spec = devices.BusSpec("line-1", "dlt645", "tcp", "127.0.0.1:1")
    return devices.create_bus(db, organisation_id=org.id, spec=spec, actor=ACTOR)


def linked_meter(db: Database, org: Org, number: str, bus_id: int) -> int:
    spec = metering.MeterSpec(
        number=number, utility="electricity", kind="single_phase", room_id=org.room_id
    )
    meter_id = metering.create_meter(db, organisation_id=org.id, spec=spec, actor=ACTOR)
    devices.link_meter(
        db,
        organisation_id=org.id,
        meter_id=meter_id,
        bus_id=bus_id,
        address=number.rjust(12, "0"),
        actor=ACTOR,
    )
    return meter_id


def open_account(
    db: Database, org: Org, number: str, meter_id: int, tariff_id: int, mode: str
) -> int:
    request = account_service.OpenAccount(
        number=number,
        customer_id=org.customer_id,
        room_id=org.room_id,
        meters=[account_service.MeterOpening(meter_id, tariff_id, D("1000"))],
        billing_mode=mode,
        initial_credit="50",
    )
    return account_service.open_account(
        db, organisation_id=org.id, request=request, actor=ACTOR
    ).account_id


def price_writes(db: Database, meter_id: int) -> list[tuple[str, dict[str, str]]]:
    with db.read() as conn:
        rows = conn.execute(
            select(commands.c.status, commands.c.params)
            .where(commands.c.meter_id == meter_id, commands.c.kind == "write_prices")
            .order_by(commands.c.id)
        ).all()
    return [(str(status), json.loads(params)["prices"]) for status, params in rows]


def table(price: str) -> dict[str, str]:
    return dict.fromkeys(SLOTS, price)


def test_a_meter_that_bills_itself_follows_its_tariff(db: Database, clock: FakeClock) -> None:
    org = make_org(db)
    bus = dlt645_line(db, org)
    cheap = make_tariff(db, org, "cheap", flat_definition("0.6537"))
    dear = make_tariff(db, org, "dear", flat_definition("0.7100"))
    tiered = make_tariff(db, org, "tiered", tou_tier_definition())
    own = linked_meter(db, org, "1", bus)  # bills itself
    account = open_account(db, org, "A-1", own, cheap, "meter")
    platform = linked_meter(db, org, "2", bus)  # billed by the platform: prices stay here
    open_account(db, org, "A-2", platform, cheap, "platform")
    blocks = linked_meter(db, org, "3", bus)  # bills itself on a tariff no table can hold
    open_account(db, org, "A-3", blocks, tiered, "meter")
    unlinked = metering.create_meter(
        db,
        organisation_id=org.id,
        spec=metering.MeterSpec(
            number="4", utility="electricity", kind="single_phase", room_id=org.room_id
        ),
        actor=ACTOR,
    )  # on no line: nothing can reach it
    open_account(db, org, "A-4", unlinked, cheap, "meter")

    first = price_sync.sync_prices(db)
    assert (first.checked, first.in_step, [n for n, _ in first.queued]) == (2, 0, ["1"])
    assert [n for n, _ in first.not_writable] == ["3"]
    assert "tier" in first.not_writable[0][1]
    assert price_writes(db, own) == [("pending", table("0.6537"))]
    assert price_writes(db, platform) == price_writes(db, blocks) == []

    # Run again, in this process or another: the write on its way is the meter's table.
    again = price_sync.sync_prices(db)
    assert (again.in_step, again.queued) == (1, [])
    driver = Meters(clock)
    asyncio.run(drain(db, clock, executor(db, clock, driver)))
    assert driver.prices[own] == dict.fromkeys(SLOTS, D("0.6537"))
    assert price_sync.sync_prices(db).queued == []

    # The account moves to another tariff: the next run writes its prices.
    tariff_change.change_tariff(
        db,
        organisation_id=org.id,
        account_id=account,
        meter_id=own,
        tariff_id=dear,
        actor=ACTOR,
        idempotency_key="dearer",
    )
    assert [n for n, _ in price_sync.sync_prices(db).queued] == ["1"]
    asyncio.run(drain(db, clock, executor(db, clock, driver)))
    assert driver.prices[own]["flat"] == D("0.7100")

    # A new version written today for tomorrow changes nothing today, and is written tomorrow
    # (local midnight in the site's zone) — once.
    tomorrow = (clock.now + timedelta(hours=8)).date() + timedelta(days=1)
    tariffs.add_version(
        db,
        organisation_id=org.id,
        tariff_id=dear,
        version={"effective_from": tomorrow.isoformat(), "prices": {"flat": "0.7300"}},
        actor=ACTOR,
    )
    assert price_sync.sync_prices(db).queued == []
    clock.advance(timedelta(days=1))
    assert [n for n, _ in price_sync.sync_prices(db).queued] == ["1"]
    assert price_sync.sync_prices(db).queued == []
    assert [prices for _, prices in price_writes(db, own)] == [
        table("0.6537"),
        table("0.7100"),
        table("0.7300"),
    ]

    # The meter is swapped for a new device: it has its factory table, so it is written again.
    asyncio.run(drain(db, clock, executor(db, clock, driver)))
    clock.advance(timedelta(minutes=5))
    corrections.replace_meter(
        db,
        organisation_id=org.id,
        replacement=corrections.Replacement(own, clock.now, D("1000"), D("0")),
        actor=ACTOR,
    )
    clock.advance(timedelta(minutes=5))
    assert [n for n, _ in price_sync.sync_prices(db).queued] == ["1"]
    assert price_writes(db, own)[-1] == ("pending", table("0.7300"))


class Refusing(Meters):
    async def write_prices(self, meter: MeterAddress, prices: Mapping[str, Decimal]) -> None:
        raise DeviceRefusedError("the meter refused the price table (wrong password)")


def test_a_write_that_failed_is_tried_again_the_next_day_not_every_hour(
    db: Database, clock: FakeClock
) -> None:
    org = make_org(db)
    bus = dlt645_line(db, org)
    own = linked_meter(db, org, "1", bus)
    open_account(db, org, "A-1", own, make_tariff(db, org), "meter")
    [(_, command_id)] = price_sync.sync_prices(db).queued
    asyncio.run(drain(db, clock, executor(db, clock, Refusing(clock))))
    assert [status for status, _ in price_writes(db, own)] == ["failed"]

    for _ in range(3):  # the hourly runs of the same day
        clock.advance(timedelta(hours=1))
        report = price_sync.sync_prices(db)
        assert report.queued == [] and report.failed_today == [("1", command_id)]
    clock.advance(timedelta(days=1))
    assert [n for n, _ in price_sync.sync_prices(db).queued] == ["1"]
    with db.read() as conn:
        count = conn.execute(
            select(func.count()).where(commands.c.kind == "write_prices")
        ).scalar_one()
    assert count == 2


def test_meterdesk_command_sync_prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERDESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("METERDESK_DATABASE_URL", raising=False)
    cli_common.app.cache_clear()
    db = cli_common.app().db
    try:
        org = make_org(db)
        other = make_org(db, name="Org B")
        for each in (org, other):
            bus = dlt645_line(db, each)
            meter_id = linked_meter(db, each, "1", bus)
            open_account(db, each, "A-1", meter_id, make_tariff(db, each), "meter")
        runner = CliRunner()
        done = runner.invoke(command_cli, ["sync-prices", "--org", "Org A", "--json"])
        assert done.exit_code == 0, done.output
        report = json.loads(done.output)
        assert (report["checked"], len(report["queued"])) == (1, 1)  # Org B's meter untouched
        text = runner.invoke(command_cli, ["sync-prices", "--org", "Org A"]).output
        assert text.startswith(
            "meters that bill themselves on DL/T 645 or Modbus lines: 1; with today's prices: 1; "
            "writes queued: 0"
        )
        with db.read() as conn:
            assert (
                conn.execute(
                    select(func.count()).where(
                        commands.c.organisation_id == other.id, commands.c.kind == "write_prices"
                    )
                ).scalar_one()
                == 0
            )
        assert sites.organisation_by_name(db, name="Org B") == other.id
    finally:
        db.engine.dispose()
        cli_common.app.cache_clear()
