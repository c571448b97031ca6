"""A smaller set on both databases (SQLite and, when it answers, PostgreSQL): login, money with
idempotency, another organisation's ids, and the stored replay under a concurrent twin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from apikit import World, key, password_of

pytestmark = pytest.mark.integration


def test_login_and_a_session_change(any_world: World) -> None:
    username = any_world.alpha.username("operator")
    login = any_world.client.post(
        "/api/v1/session", json={"username": username, "password": password_of(username)}
    )
    assert login.status_code == 200
    site = any_world.client.post(
        "/api/v1/sites",
        json={"name": "PG Park", "timezone": "Asia/Shanghai"},
        headers={"X-CSRF-Token": login.json()["csrf_token"]},
    )
    assert site.status_code == 201


def test_recharge_replay_conflict_and_refund(any_world: World) -> None:
    path = f"/api/v1/accounts/{any_world.alpha.account_id}"
    headers = {**any_world.alpha.auth("cashier"), **key("pg-1")}
    first = any_world.client.post(f"{path}/recharge", json={"amount": "20.05"}, headers=headers)
    assert first.status_code == 201 and first.json()["balance"] == "120.05"
    replay = any_world.client.post(f"{path}/recharge", json={"amount": "20.05"}, headers=headers)
    assert replay.status_code == 200 and replay.json() == first.json()
    conflict = any_world.client.post(f"{path}/recharge", json={"amount": "1"}, headers=headers)
    assert conflict.status_code == 409
    refund = any_world.client.post(
        f"{path}/refund", json={"amount": "500"}, headers={**headers, **key("pg-2")}
    )
    assert refund.status_code == 409 and refund.json()["error"]["code"] == "insufficient_funds"


def test_another_organisations_ids_are_404(any_world: World) -> None:
    bravo, auth = any_world.bravo, any_world.alpha.auth("admin")
    for path in (
        f"/api/v1/accounts/{bravo.account_id}/balance",
        f"/api/v1/meters/{bravo.meter_id}/readings",
        f"/api/v1/tariffs/{bravo.tariff_id}",
        f"/api/v1/rooms/{bravo.room_id}",
    ):
        assert any_world.client.get(path, headers=auth).status_code == 404, path


def test_open_and_close_an_account(any_world: World) -> None:
    alpha = any_world.alpha
    body = {
        "number": "PG-1",
        "customer_id": alpha.customer_id,
        "meters": [
            {"meter_id": alpha.spare_meter_id, "tariff_id": alpha.tariff_id, "reading": "0"}
        ],
        "initial_credit": "30",
    }
    opened = any_world.client.post(
        "/api/v1/accounts", json=body, headers={**alpha.auth(), **key("pg-open")}
    )
    assert opened.status_code == 201, opened.text
    any_world.clock.advance(timedelta(minutes=30))
    close = {"final_readings": [{"meter_id": alpha.spare_meter_id, "total": "10"}]}
    closed = any_world.client.post(
        f"/api/v1/accounts/{opened.json()['id']}/close",
        json=close,
        headers={**alpha.auth(), **key("pg-close")},
    )
    assert closed.status_code == 201, closed.text
    assert closed.json()["refunded"] == "23.46"
