"""Quantity credit (购量) in the console: the room page shows the kWh left, the lots bought and
their prices beside the wallet money; the opening wizard asks money or quantity, carries the
choice to the review, and refuses anything else with a clear error and nothing opened."""

from __future__ import annotations

from decimal import Decimal

import pytest
from apikit import World, flat_tariff
from consolekit import Console

from meterdesk.billing import accounts
from meterdesk.tariffs import service as tariffs


def open_quantity_account(world: World) -> None:
    """The spare room's meter M3 on a 0.80 tariff, opened as quantity with 50.00: 62.50 kWh."""
    alpha = world.alpha
    tariff = tariffs.create_tariff(
        world.db,
        organisation_id=alpha.id,
        name="Quantity 0.80",
        definition=flat_tariff("0.80"),
        actor="test",
    )
    accounts.open_account(
        world.db,
        organisation_id=alpha.id,
        actor="test",
        request=accounts.OpenAccount(
            number="Q-1",
            customer_id=alpha.customer_id,
            room_id=alpha.spare_room_id,
            meters=[accounts.MeterOpening(alpha.spare_meter_id, tariff, Decimal(0))],
            initial_credit="50.00",
            credit_unit="quantity",
        ),
    )


def test_the_room_page_shows_quantity_left_lots_and_the_wallet_money(world: World) -> None:
    open_quantity_account(world)
    page = Console(world.client, world.alpha, "operator").get(f"/rooms/{world.alpha.spare_room_id}")
    assert page.status_code == 200, page.text
    text = page.text
    assert "Electricity left" in text
    assert "data-quantity-left>62.50 kWh<" in text
    assert "Wallet" in text and "50.00" in text  # the money stays visible as money
    assert 'data-credit-unit="quantity"' in text
    assert "62.50 kWh × " in text and "0.80" in text  # the lot and its price
    assert "data-last-price>" in text


def test_the_room_page_speaks_chinese_for_a_quantity_account(world: World) -> None:
    open_quantity_account(world)
    console = Console(world.client, world.alpha, "operator", locale="zh-CN")
    text = console.get(f"/rooms/{world.alpha.spare_room_id}/status").text
    assert "剩余电量" in text and "购量" in text and "钱包" in text


def test_a_money_accounts_room_page_keeps_its_money_balance(world: World) -> None:
    text = Console(world.client, world.alpha, "operator").get(f"/rooms/{world.alpha.room_id}").text
    assert "data-balance>" in text
    assert "data-quantity-left" not in text and "Lots bought" not in text


def _choice(world: World, credit_unit: str, number: str) -> dict[str, object]:
    alpha = world.alpha
    return {
        "room_id": alpha.spare_room_id,
        "customer_id": alpha.customer_id,
        "key": f"wizard-{number}-0000",
        "number": number,
        "billing_mode": "platform",
        "credit_unit": credit_unit,
        "overdraft_limit": "0",
        "meter": [alpha.spare_meter_id],
        "tariff": [str(alpha.tariff_id)],
        "reading": ["0"],
    }


def test_the_wizard_asks_money_or_quantity_and_carries_the_choice(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    step2 = console.post(
        "/accounts/open/step",
        {"room_id": world.alpha.spare_room_id, "customer_id": world.alpha.customer_id, "step": 1},
    )
    assert 'name="credit_unit"' in step2.text
    assert 'value="quantity"' in step2.text and "Quantity (kWh / m³)" in step2.text
    assert "supply is cut when the quantity is used up" in step2.text  # the hint
    step3 = console.post("/accounts/open/step", {**_choice(world, "quantity", "Q-2"), "step": 2})
    assert step3.status_code == 200, step3.text
    assert 'name="credit_unit" value="quantity"' in step3.text  # carried to the open
    assert 'data-credit-unit="quantity"' in step3.text  # and shown in the review


@pytest.mark.parametrize("path", ["/accounts/open/step", "/accounts/open"])
def test_the_wizard_refuses_an_unknown_credit_unit_and_opens_nothing(
    world: World, path: str
) -> None:
    console = Console(world.client, world.alpha, "admin")
    data = {**_choice(world, "litres", "Q-3"), "step": 2, "initial_credit": "0"}
    response = console.post(path, data)
    assert response.status_code == 422
    assert "credit_unit" in response.text and "&#39;quantity&#39;" in response.text
    assert console.client.get("/api/v1/accounts?q=Q-3").json()["items"] == []


def test_the_wizard_still_opens_a_money_account(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    opened = console.post(
        "/accounts/open", {**_choice(world, "money", "M-9"), "initial_credit": "0"}
    )
    assert opened.status_code == 200, opened.text
    found = console.client.get("/api/v1/accounts?q=M-9").json()["items"]
    assert [a["number"] for a in found] == ["M-9"]


def test_the_wizard_opens_a_quantity_account(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    data = {**_choice(world, "quantity", "Q-4"), "initial_credit": "0"}
    opened = console.post("/accounts/open", data)
    assert opened.status_code == 200, opened.text
    text = console.get(f"/rooms/{world.alpha.spare_room_id}/status").text
    assert "data-quantity-left>0.00 kWh<" in text


def test_the_policy_dialog_says_a_quantity_accounts_alarm_amounts_are_quantities(
    world: World,
) -> None:
    open_quantity_account(world)
    console = Console(world.client, world.alpha, "operator")
    dialog = console.get(f"/rooms/{world.alpha.spare_room_id}/dialog/policy").text
    assert "Alarm amount (kWh)" in dialog and "data-quantity-alarms" in dialog
    money = console.get(f"/rooms/{world.alpha.room_id}/dialog/policy").text
    assert "data-quantity-alarms" not in money and "Alarm amount (" not in money


def test_the_statement_of_a_quantity_account_names_its_unit_and_keeps_money_balances(
    world: World,
) -> None:
    open_quantity_account(world)
    console = Console(world.client, world.alpha, "operator")
    found = console.client.get("/api/v1/accounts?q=Q-1").json()["items"]
    text = console.get(f"/accounts/{found[0]['id']}/statement").text
    assert 'data-credit-unit="quantity"' in text
    assert "now 62.50 kWh left; the balances below are the wallet's money" in text
    money = console.get(f"/accounts/{world.alpha.account_id}/statement").text
    assert "data-credit-unit" not in money


def test_the_room_grid_shows_a_quantity_accounts_kwh_left(world: World) -> None:
    """The operators' one screen: a quantity account's tile (and table row, and the grid API)
    says what the tenant holds, 62.50 kWh; a money account's tile keeps its money."""
    open_quantity_account(world)
    console = Console(world.client, world.alpha, "operator")
    tiles = console.get("/rooms").text
    assert "data-quantity-left>62.50 kWh<" in tiles
    assert tiles.count("data-quantity-left") == 1  # only the quantity account's tile
    assert "62.50 kWh</span> ·" in console.get("/rooms?view=table").text
    found = console.client.get("/api/v1/monitor/rooms").json()["items"]
    by_room = {tile["room_id"]: tile for tile in found}
    spare, money = by_room[world.alpha.spare_room_id], by_room[world.alpha.room_id]
    assert (spare["quantity_left"], spare["quantity_unit"]) == ("62.50", "kWh")
    assert (money["quantity_left"], money["quantity_unit"]) == (None, None)
