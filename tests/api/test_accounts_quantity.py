"""Quantity credit (购量, decision 0006) through the API: opening with ``credit_unit``, the
balance's ``quantity`` object, recharge and refund answers saying the quantity left, presets
and the import's ``credit_unit`` column. The world's tariff is flat at 0.6537 per kWh, so a
purchase leaves a remainder that is part of a fen."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from apikit import T0, World, error_code, key

from meterdesk.billing.ingest import IncomingReading, Ingestor
from meterdesk.tariffs import service as tariffs


def opening(world: World, credit_unit: str, credit: str = "50") -> dict[str, Any]:
    return {
        "number": "Q-1",
        "customer_id": world.alpha.customer_id,
        "room_id": world.alpha.spare_room_id,
        "meters": [
            {
                "meter_id": world.alpha.spare_meter_id,
                "tariff_id": world.alpha.tariff_id,
                "reading": "0",
            }
        ],
        "initial_credit": credit,
        "credit_unit": credit_unit,
    }


def open_quantity_account(world: World) -> int:
    response = world.client.post(
        "/api/v1/accounts",
        json=opening(world, "quantity"),
        headers={**world.alpha.auth("admin"), **key("open-q")},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def desk(world: World, account_id: int, what: str, amount: str, name: str) -> dict[str, Any]:
    response = world.client.post(
        f"/api/v1/accounts/{account_id}/{what}",
        json={"amount": amount, "method": "cash"},
        headers={**world.alpha.auth("cashier"), **key(name)},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_a_quantity_account_shows_what_it_bought(world: World) -> None:
    account_id = open_quantity_account(world)
    auth = world.alpha.auth("readonly")

    account = world.client.get(f"/api/v1/accounts/{account_id}", headers=auth).json()
    balance = world.client.get(f"/api/v1/accounts/{account_id}/balance", headers=auth).json()

    assert account["credit_unit"] == "quantity"
    assert (balance["credit_unit"], balance["balance"]) == ("quantity", "50.00")
    # 50.00 at 0.6537 buys 76.48 kWh (rounded down), which cost 49.994976
    assert balance["quantity"] == {
        "unit": "kWh",
        "left": "76.48",
        "bought": "76.48",
        "used": "0.00",
        "remainder": "0.005024",
        "unused_value": "49.994976",
        "price": "0.6537",
        "lots": [{"quantity": "76.48", "price": "0.6537"}],
    }


def test_a_money_account_has_no_quantity(world: World) -> None:
    auth = world.alpha.auth("readonly")
    path = f"/api/v1/accounts/{world.alpha.account_id}"
    balance = world.client.get(f"{path}/balance", headers=auth).json()
    assert (balance["credit_unit"], balance["quantity"]) == ("money", None)
    assert world.client.get(path, headers=auth).json()["credit_unit"] == "money"
    recharged = desk(world, world.alpha.account_id, "recharge", "5", "money-r")
    assert recharged["quantity"] is None


def test_recharge_and_refund_say_the_quantity_left(world: World) -> None:
    account_id = open_quantity_account(world)

    recharged = desk(world, account_id, "recharge", "10", "q-r")
    # 10.00 + 0.005024 carried buys 15.30 kWh (10.00161), carrying 0.003414
    assert recharged["balance"] == "60.00"
    assert recharged["quantity"] == {"unit": "kWh", "left": "91.78", "remainder": "0.003414"}

    refunded = desk(world, account_id, "refund", "5", "q-f")
    # money: the 0.003414 carried first, then the newest kWh worth the rest at 0.6537
    assert refunded["balance"] == "55.00"
    assert refunded["quantity"]["remainder"] == "0.00"
    left = refunded["quantity"]["left"]
    balance = world.client.get(
        f"/api/v1/accounts/{account_id}/balance", headers=world.alpha.auth("readonly")
    ).json()
    assert balance["quantity"]["left"] == left == "84.136454"

    replay = world.client.post(
        f"/api/v1/accounts/{account_id}/refund",
        json={"amount": "5", "method": "cash"},
        headers={**world.alpha.auth("cashier"), **key("q-f")},
    )
    assert replay.status_code == 200 and replay.json() == refunded


def test_a_wrong_credit_unit_is_422_and_opens_nothing(world: World) -> None:
    headers = {**world.alpha.auth("admin"), **key("open-bad")}
    refused = world.client.post("/api/v1/accounts", json=opening(world, "litres"), headers=headers)
    assert refused.status_code == 422 and error_code(refused) == "validation_error"
    assert "credit_unit" in refused.text
    listed = world.client.get("/api/v1/accounts?q=Q-1", headers=world.alpha.auth()).json()
    assert listed["items"] == []


def test_quantity_credit_refuses_two_meters(world: World) -> None:
    body = opening(world, "quantity", credit="0")
    body["meters"].append(
        {"meter_id": world.alpha.preset_meter_id, "tariff_id": world.alpha.tariff_id}
    )
    refused = world.client.post(
        "/api/v1/accounts", json=body, headers={**world.alpha.auth("admin"), **key("open-2m")}
    )
    assert refused.status_code == 422, refused.text
    assert "holds one meter" in refused.json()["error"]["message"]


def test_a_preset_keeps_its_credit_unit(world: World) -> None:
    auth = world.alpha.auth("admin")
    body = {
        "account_number": "Q-PRE",
        "customer_name": "Pre Tenant",
        "site": "Alpha Park",
        "building": "Alpha B1",
        "floor": "Alpha F1",
        "room": "Alpha 102",
        "meter_numbers": ["Alpha-M3"],
        "tariffs": ["Alpha Flat"],
        "opening_readings": ["0"],
        "initial_credit": "10",
        "credit_unit": "quantity",
    }
    preset = world.client.post("/api/v1/account-presets", json=body, headers=auth).json()
    assert preset["data"]["credit_unit"] == "quantity"
    opened = world.client.post(
        f"/api/v1/account-presets/{preset['id']}/open", headers={**auth, **key("pq")}
    )
    assert opened.status_code == 201, opened.text
    balance = world.client.get(
        f"/api/v1/accounts/{opened.json()['id']}/balance", headers=auth
    ).json()
    assert balance["quantity"]["left"] == "15.29"  # 10.00 at 0.6537


CSV_HEADER = (
    "account_number,customer_name,site,building,floor,room,meter_numbers,tariffs,"
    "opening_readings,credit_unit"
)
PLACE = "Alpha Park,Alpha B1,Alpha F1,Alpha 102"


def test_the_import_reads_credit_unit_and_refuses_a_wrong_one(world: World) -> None:
    rows = [
        f"I-Q,Imported,{PLACE},Alpha-M3,Alpha Flat,0,quantity",
        f"I-BAD,Imported,{PLACE},Alpha-M3,Alpha Flat,0,litres",
        f"I-TWO,Imported,{PLACE},Alpha-M3;Alpha-M2,Alpha Flat,0;0,quantity",
    ]
    files = {"file": ("a.csv", "\n".join([CSV_HEADER, *rows, ""]).encode(), "text/csv")}
    headers = {**world.alpha.auth("operator"), **key("import-q")}
    response = world.client.post("/api/v1/account-imports", files=files, headers=headers)
    assert response.status_code == 201, response.text
    report = response.json()
    assert [(r["account_number"], r["ok"]) for r in report["rows"]] == [
        ("I-Q", True),
        ("I-BAD", False),
        ("I-TWO", False),
    ]
    assert "credit_unit: 'litres' is not 'money' or 'quantity'" in report["rows"][1]["message"]
    assert "holds one meter" in report["rows"][2]["message"]
    pending = world.client.get("/api/v1/account-presets", headers=headers).json()["items"]
    found = {p["account_number"]: p["data"].get("credit_unit") for p in pending}
    assert found == {"Alpha-ACC-2": "money", "I-Q": "quantity"}


def two_prices(world: World) -> tuple[int, int, int]:
    """A quantity account opened with 50.00 at 0.6537 (76.48 kWh, 0.005024 carried), then the
    price 0.80 from 2026-11-03 and 40.00 more (with the carried money: 50.00 kWh at 0.80)."""
    response = world.client.post(
        "/api/v1/accounts",
        json=opening(world, "quantity"),
        headers={**world.alpha.auth("admin"), **key("open-q")},
    )
    assert response.status_code == 201, response.text
    account_id, first = int(response.json()["id"]), int(response.json()["initial_transfer_id"])
    tariffs.add_version(
        world.db,
        organisation_id=world.alpha.id,
        tariff_id=world.alpha.tariff_id,
        version={"effective_from": "2026-11-03", "prices": {"flat": "0.80"}},
        actor="setup",
    )
    world.clock.now = T0 + timedelta(days=2)
    second = int(desk(world, account_id, "recharge", "40", "q-r")["transfer_id"])
    return account_id, first, second


def reverse(world: World, transfer_id: int, name: str) -> Any:
    return world.client.post(
        f"/api/v1/transfers/{transfer_id}/reversal",
        json={"memo": "wrong account"},
        headers={**world.alpha.auth("admin"), **key(name)},
    )


def lots_of(world: World, account_id: int) -> dict[str, Any]:
    balance = world.client.get(
        f"/api/v1/accounts/{account_id}/balance", headers=world.alpha.auth("readonly")
    ).json()
    return {"balance": balance["balance"], **balance["quantity"]}


def test_a_recharge_reversed_takes_back_its_own_lot(world: World) -> None:
    account_id, first, _ = two_prices(world)
    assert reverse(world, first, "v-1").status_code == 201
    held = lots_of(world, account_id)
    # the 76.48 kWh at 0.6537 it bought are gone; the 50 kWh at 0.80 stay
    assert held["lots"] == [{"quantity": "50.00", "price": "0.80"}]
    # its 0.005024 carried went into the second lot, which carried as much again: none left
    assert (held["balance"], held["left"], held["remainder"]) == ("40.00", "50.00", "0.00")
    again = reverse(world, first, "v-1")  # the same key: the first answer, nothing more
    assert again.status_code == 200 and lots_of(world, account_id) == held


def test_a_recharge_partly_used_is_refused_and_a_later_one_reversed(world: World) -> None:
    account_id, first, second = two_prices(world)
    meter = world.alpha.spare_meter_id
    Ingestor(world.db).ingest([IncomingReading(meter, world.clock.now, Decimal("10"))])
    before = lots_of(world, account_id)
    refused = reverse(world, first, "v-1")
    assert refused.status_code == 409 and error_code(refused) == "insufficient_funds"
    assert "has already used 10.00 kWh of the 76.48 kWh it bought" in refused.text
    assert lots_of(world, account_id) == before
    assert reverse(world, second, "v-2").status_code == 201
    held = lots_of(world, account_id)
    assert held["lots"] == [{"quantity": "76.48", "price": "0.6537"}]
    assert (held["left"], held["remainder"]) == ("66.48", "0.005024")
