"""Accounts: open, list, get, balance, statement, close; presets; bulk import with a report."""

from __future__ import annotations

import io
from typing import Any

from apikit import World, error_code, key
from openpyxl import Workbook


def opening(world: World, number: str = "A-NEW", credit: str = "0") -> dict[str, Any]:
    return {
        "number": number,
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
    }


def test_open_an_account_with_initial_credit(world: World) -> None:
    headers = {**world.alpha.auth("admin"), **key("open-1")}
    response = world.client.post(
        "/api/v1/accounts", json=opening(world, credit="50"), headers=headers
    )
    assert response.status_code == 201, response.text
    opened = response.json()
    assert opened["meter_ids"] == [world.alpha.spare_meter_id] and opened["initial_transfer_id"]
    account = world.client.get(f"/api/v1/accounts/{opened['id']}", headers=headers).json()
    assert (
        account["balance"] == "50.00"
        and account["status"] == "open"
        and account["customer"] == "Alpha Customer"
    )


def test_opening_replays_and_refuses_a_reused_key(world: World) -> None:
    headers = {**world.alpha.auth("operator"), **key("open-2")}
    first = world.client.post("/api/v1/accounts", json=opening(world), headers=headers)
    replay = world.client.post("/api/v1/accounts", json=opening(world), headers=headers)
    assert replay.status_code == 200 and replay.json() == first.json()
    other = world.client.post(
        "/api/v1/accounts", json=opening(world, number="A-OTHER"), headers=headers
    )
    assert other.status_code == 409 and error_code(other) == "idempotency_conflict"


def test_an_operator_opens_without_credit_but_not_with_it(world: World) -> None:
    headers = {**world.alpha.auth("operator"), **key("open-3")}
    refused = world.client.post(
        "/api/v1/accounts", json=opening(world, credit="10"), headers=headers
    )
    assert refused.status_code == 403
    assert (
        world.client.post("/api/v1/accounts", json=opening(world), headers=headers).status_code
        == 201
    )


def test_opening_needs_a_key_and_refuses_a_meter_already_held(world: World) -> None:
    body = opening(world)
    missing = world.client.post("/api/v1/accounts", json=body, headers=world.alpha.auth())
    assert missing.status_code == 400
    body["meters"][0]["meter_id"] = world.alpha.meter_id
    held = world.client.post(
        "/api/v1/accounts", json=body, headers={**world.alpha.auth(), **key("o4")}
    )
    assert held.status_code == 409


def test_list_accounts_with_filters(world: World) -> None:
    auth = world.alpha.auth("readonly")
    items = world.client.get("/api/v1/accounts?status=open", headers=auth).json()["items"]
    assert [(a["number"], a["balance"], a["arrears"]) for a in items] == [
        ("Alpha-ACC-1", "100.00", "0.00")
    ]
    assert world.client.get("/api/v1/accounts?status=closed", headers=auth).json()["items"] == []
    assert (
        world.client.get("/api/v1/accounts?q=ACC-1", headers=auth).json()["items"][0]["id"]
        == world.alpha.account_id
    )
    assert world.client.get("/api/v1/accounts?status=frozen", headers=auth).status_code == 422


def test_get_unknown_account_is_404(world: World) -> None:
    assert world.client.get("/api/v1/accounts/999", headers=world.alpha.auth()).status_code == 404


def test_balance(world: World) -> None:
    response = world.client.get(
        f"/api/v1/accounts/{world.alpha.account_id}/balance", headers=world.alpha.auth("cashier")
    )
    assert response.json() == {
        "account_id": world.alpha.account_id,
        "number": "Alpha-ACC-1",
        "status": "open",
        "billing_mode": "platform",
        "balance": "100.00",
        "arrears": "0.00",
        "overdraft_limit": "0.00",
        "meters": ["Alpha-M1"],
        "credit_unit": "money",
        "quantity": None,  # a quantity-credit account's: tests/api/test_accounts_quantity.py
    }
    assert (
        world.client.get("/api/v1/accounts/999/balance", headers=world.alpha.auth()).status_code
        == 404
    )


def test_statement_for_a_period(world: World) -> None:
    path = f"/api/v1/accounts/{world.alpha.account_id}/statement"
    response = world.client.get(
        f"{path}?start=2026-11-01T00:00:00Z&end=2026-11-03T00:00:00Z",
        headers=world.alpha.auth("cashier"),
    )
    assert response.status_code == 200
    statement = response.json()
    assert statement["opening_balance"] == "0.00" and statement["closing_balance"] == "100.00"
    assert [(line["reason"], line["balance_change"]) for line in statement["lines"]] == [
        ("recharge", "100.00")
    ]
    assert statement["totals"] == {"recharge": "100.00"}
    default = world.client.get(path, headers=world.alpha.auth()).json()
    assert default["closing_balance"] == "100.00"
    naive = world.client.get(f"{path}?start=2026-11-01T00:00:00", headers=world.alpha.auth())
    assert naive.status_code == 422


def test_close_settles_and_refunds_the_credit(world: World) -> None:
    body = {
        "final_readings": [{"meter_id": world.alpha.meter_id, "total": "1010"}],
        "refund_method": "cash",
    }
    headers = {**world.alpha.auth("operator"), **key("close-1")}
    path = f"/api/v1/accounts/{world.alpha.account_id}/close"
    response = world.client.post(path, json=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["refunded"] == "93.46" and response.json()["arrears"] == "0.00"
    replay = world.client.post(path, json=body, headers=headers)
    assert replay.status_code == 200 and replay.json() == response.json()
    again = world.client.post(path, json=body, headers={**headers, **key("close-2")})
    assert again.status_code == 409


def test_close_needs_a_final_reading_per_meter(world: World) -> None:
    body = {"final_readings": [{"meter_id": world.alpha.spare_meter_id, "total": "1"}]}
    response = world.client.post(
        f"/api/v1/accounts/{world.alpha.account_id}/close",
        json=body,
        headers={**world.alpha.auth(), **key("c")},
    )
    assert response.status_code == 422


def test_presets_add_list_get_and_open(world: World) -> None:
    auth = world.alpha.auth("admin")
    body = {
        "account_number": "A-PRE",
        "customer_name": "Pre Tenant",
        "site": "Alpha Park",
        "building": "Alpha B1",
        "floor": "Alpha F1",
        "room": "Alpha 102",
        "meter_numbers": ["Alpha-M3"],
        "tariffs": ["Alpha Flat"],
        "opening_readings": ["0"],
        "initial_credit": "20",
    }
    created = world.client.post("/api/v1/account-presets", json=body, headers=auth)
    assert created.status_code == 201, created.text
    preset = created.json()
    assert preset["status"] == "pending" and preset["data"]["initial_credit"] == "20"
    assert (
        world.client.get(f"/api/v1/account-presets/{preset['id']}", headers=auth).json() == preset
    )
    pending = world.client.get("/api/v1/account-presets", headers=auth).json()["items"]
    assert {p["account_number"] for p in pending} == {"Alpha-ACC-2", "A-PRE"}
    opened = world.client.post(
        f"/api/v1/account-presets/{preset['id']}/open", headers={**auth, **key("p1")}
    )
    assert opened.status_code == 201, opened.text
    assert (
        opened.json()["meter_ids"] == [world.alpha.spare_meter_id]
        and opened.json()["initial_transfer_id"]
    )
    balance = world.client.get(
        f"/api/v1/accounts/{opened.json()['id']}/balance", headers=auth
    ).json()
    assert balance["balance"] == "20.00"
    assert (
        world.client.get("/api/v1/account-presets?status=opened", headers=auth).json()["items"][0][
            "id"
        ]
        == preset["id"]
    )


def test_a_preset_naming_an_unknown_room_is_404(world: World) -> None:
    body = {
        "account_number": "A-X",
        "customer_name": "X",
        "site": "Alpha Park",
        "building": "Alpha B1",
        "floor": "Alpha F1",
        "room": "nowhere",
        "meter_numbers": ["Alpha-M3"],
        "tariffs": ["Alpha Flat"],
    }
    assert (
        world.client.post(
            "/api/v1/account-presets", json=body, headers=world.alpha.auth()
        ).status_code
        == 404
    )


def test_opening_a_preset_twice_is_409_and_unknown_404(world: World) -> None:
    headers = world.alpha.auth("operator")
    path = f"/api/v1/account-presets/{world.alpha.preset_id}/open"
    assert world.client.post(path, headers={**headers, **key("a")}).status_code == 201
    assert world.client.post(path, headers={**headers, **key("b")}).status_code == 409
    assert world.client.get("/api/v1/account-presets/999", headers=headers).status_code == 404


CSV_HEADER = (
    "account_number,customer_name,site,building,floor,room,meter_numbers,tariffs,opening_readings"
)


def test_import_csv_reports_every_row(world: World) -> None:
    good = "I-1,Imported,Alpha Park,Alpha B1,Alpha F1,Alpha 102,Alpha-M3,Alpha Flat,0"
    bad = "I-2,Imported,Alpha Park,Alpha B1,Alpha F1,nowhere,Alpha-M3,Alpha Flat,0"
    files = {"file": ("accounts.csv", f"{CSV_HEADER}\n{good}\n{bad}\n".encode(), "text/csv")}
    headers = {**world.alpha.auth("operator"), **key("import-1")}
    response = world.client.post(
        "/api/v1/account-imports", files=files, data={"open_now": "true"}, headers=headers
    )
    assert response.status_code == 201, response.text
    report = response.json()
    assert (report["opened"], report["ok"], report["failed"]) == (True, 1, 1)
    assert report["rows"][0] == {
        "row": 2,
        "account_number": "I-1",
        "ok": True,
        "message": "opened",
        "phone_warning": None,
    }
    assert report["rows"][1]["row"] == 3 and "not found" in report["rows"][1]["message"]
    replay = world.client.post(
        "/api/v1/account-imports", files=files, data={"open_now": "true"}, headers=headers
    )
    assert replay.status_code == 200 and replay.json() == report


def test_import_xlsx_pre_enters(world: World) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(CSV_HEADER.split(","))
    sheet.append(
        [
            "X-1",
            "Excel Tenant",
            "Alpha Park",
            "Alpha B1",
            "Alpha F1",
            "Alpha 102",
            "Alpha-M3",
            "Alpha Flat",
            "0",
        ]
    )
    content = io.BytesIO()
    book.save(content)
    files = {"file": ("accounts.xlsx", content.getvalue(), "application/octet-stream")}
    headers = {**world.alpha.auth("operator"), **key("import-2")}
    response = world.client.post("/api/v1/account-imports", files=files, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["rows"] == [
        {
            "row": 2,
            "account_number": "X-1",
            "ok": True,
            "message": "pre-entered",
            "phone_warning": None,
        }
    ]


def test_import_refuses_other_file_kinds_and_credit_without_the_money_role(world: World) -> None:
    headers = {**world.alpha.auth("operator"), **key("import-3")}
    files = {"file": ("accounts.txt", b"hello", "text/plain")}
    assert (
        world.client.post("/api/v1/account-imports", files=files, headers=headers).status_code
        == 422
    )
    row = "I-9,Imported,Alpha Park,Alpha B1,Alpha F1,Alpha 102,Alpha-M3,Alpha Flat,0,5"
    files = {"file": ("a.csv", f"{CSV_HEADER},initial_credit\n{row}\n".encode(), "text/csv")}
    response = world.client.post(
        "/api/v1/account-imports", files=files, data={"open_now": "true"}, headers=headers
    )
    assert response.status_code == 403
