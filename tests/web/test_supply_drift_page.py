"""The room page says so when a meter's last read contradicts the platform's supply decision
(the demo's grid showed "supply on" for days over tripped meters), in both languages, with the
command that puts the decision back once there is one."""

from __future__ import annotations

from apikit import World
from consolekit import Console
from sqlalchemy import update

from meterdesk.billing.tables import accounts
from meterdesk.devices.commands import device_state
from meterdesk.devices.commands import service as commands
from meterdesk.devices.ports import Snapshot
from meterdesk.devices.tables import commands as device_commands
from meterdesk.metering.tables import meters


def _meter_shows(world: World, relay: str) -> None:
    at = world.clock.now
    with world.db.transaction() as conn:
        device_state.save_snapshot(conn, Snapshot(world.alpha.meter_id, at, relay=relay), at)


def _status(world: World, locale: str) -> str:
    console = Console(world.client, world.alpha, "operator", locale=locale)
    page = console.get(f"/rooms/{world.alpha.room_id}")
    assert page.status_code == 200, page.text[:300]
    status = console.get(f"/rooms/{world.alpha.room_id}/status")
    assert status.status_code == 200
    return str(status.text)


def test_a_tripped_meter_under_supply_on_is_a_warning_in_both_languages(world: World) -> None:
    _meter_shows(world, "closed")
    assert "data-drift" not in _status(world, "en")
    _meter_shows(world, "open")
    english = _status(world, "en")
    assert 'data-drift="relay_close"' in english
    assert "Meter shows relay open; supply should be on." in english
    assert "Not corrected yet" in english
    chinese = _status(world, "zh-CN")
    assert "电表显示已拉闸，但平台决定应供电。" in chinese and "尚未纠正" in chinese

    sent = commands.send_command(
        world.db, organisation_id=world.alpha.id, meter_id=world.alpha.meter_id,
        kind="relay_close", params=None, actor="system:control", idempotency_key="reassert:x",
    )  # fmt: skip
    english = _status(world, "en")
    assert "Command sent:" in english and f'href="/commands/{sent.command.id}"' in english
    assert "已下发指令" in _status(world, "zh-CN")
    commands.cancel(world.db, organisation_id=world.alpha.id, command_id=sent.command.id, actor="t")
    assert "Command sent:" in _status(world, "en")  # cancelled: still the one to look at
    with world.db.transaction() as conn:  # confirmed, yet the meter shows open again
        conn.execute(update(device_commands).values(status="confirmed"))
    assert "Not corrected yet" in _status(world, "en")


def test_on_meter_billing_the_meters_own_trip_is_no_warning(world: World) -> None:
    with world.db.transaction() as conn:
        conn.execute(
            update(accounts)
            .where(accounts.c.id == world.alpha.account_id)
            .values(billing_mode="meter")
        )
    _meter_shows(world, "open")
    assert "data-drift" not in _status(world, "en")


def _meter_rows(world: World, query: str, locale: str = "en") -> str:
    console = Console(world.client, world.alpha, "readonly", locale=locale)
    page = console.get(f"/meters?{query}")
    assert page.status_code == 200, page.text[:300]
    return str(page.text)


def test_the_meter_list_finds_the_meters_that_disagree_with_their_account(world: World) -> None:
    """``/meters?drift=1``: every meter whose relay or valve contradicts its account's decision,
    the ones the control tick puts back (a tripped relay across a site, found without opening
    every room)."""
    with world.db.transaction() as conn:  # on a line: the tick can command it
        conn.execute(
            update(meters).where(meters.c.id == world.alpha.meter_id).values(protocol="dlt645")
        )
    row = "<td>Alpha-M1</td>"
    _meter_shows(world, "closed")
    assert row not in _meter_rows(world, "drift=1")
    assert "Disagrees with the account's supply (0)" in _meter_rows(world, "")
    _meter_shows(world, "open")  # supply on, relay open
    page = _meter_rows(world, "drift=1")
    assert row in page and "Disagrees with the account's supply (1)" in page
    assert "<td>Alpha-M2</td>" not in page
    assert "与账户供电状态不一致（1）" in _meter_rows(world, "", "zh-CN")
    bravo = Console(world.client, world.bravo, "readonly").get("/meters?drift=1").text
    assert row not in bravo and "Disagrees with the account's supply (0)" in bravo
