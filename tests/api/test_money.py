"""The desk: recharge, refund, reversal — idempotency replays and conflicts, money as strings,
roles, and the audit entry with the caller's address."""

from __future__ import annotations

from typing import Any

import pytest
from apikit import World, error_code, key


def recharge(
    world: World, amount: object, name: str, role: str = "cashier", **extra: object
) -> Any:
    return world.client.post(
        f"/api/v1/accounts/{world.alpha.account_id}/recharge",
        json={"amount": amount, "method": "cash", **extra},
        headers={**world.alpha.auth(role), **key(name)},
    )


def test_recharge_credits_the_account(world: World) -> None:
    response = recharge(world, "50.5", "r-1", reference="receipt 7")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["amount"] == "50.50" and body["balance"] == "150.50" and body["arrears"] == "0.00"
    assert isinstance(body["transfer_id"], int)


def test_a_replay_answers_the_first_body_and_moves_money_once(world: World) -> None:
    first = recharge(world, "10", "r-2")
    recharge(world, "5", "r-3")  # the balance moves on in between
    replay = recharge(world, "10", "r-2")
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replay"] == "true"
    assert replay.json() == first.json()
    balance = world.client.get(
        f"/api/v1/accounts/{world.alpha.account_id}/balance", headers=world.alpha.auth()
    )
    assert balance.json()["balance"] == "115.00"


def test_the_same_key_for_a_different_request_is_409(world: World) -> None:
    recharge(world, "10", "r-4")
    response = recharge(world, "11", "r-4")
    assert response.status_code == 409 and error_code(response) == "idempotency_conflict"
    refund = world.client.post(
        f"/api/v1/accounts/{world.alpha.account_id}/refund",
        json={"amount": "10", "method": "cash"},
        headers={**world.alpha.auth("cashier"), **key("r-4")},
    )
    assert refund.status_code == 409


def test_idempotency_keys_are_per_organisation(world: World) -> None:
    recharge(world, "10", "shared-key")
    other = world.client.post(
        f"/api/v1/accounts/{world.bravo.account_id}/recharge",
        json={"amount": "10", "method": "cash"},
        headers={**world.bravo.auth("cashier"), **key("shared-key")},
    )
    assert other.status_code == 201


def test_a_missing_key_is_400_and_changes_nothing(world: World) -> None:
    response = world.client.post(
        f"/api/v1/accounts/{world.alpha.account_id}/recharge",
        json={"amount": "10", "method": "cash"},
        headers=world.alpha.auth("cashier"),
    )
    assert response.status_code == 400 and "Idempotency-Key" in response.json()["error"]["message"]


@pytest.mark.parametrize("amount", [10, 10.5, "10.001", "-5", "0", "ten", None])
def test_money_must_be_a_positive_decimal_string_of_whole_fen(world: World, amount: object) -> None:
    response = recharge(world, amount, f"bad-{amount}")
    assert response.status_code == 422, response.text


def test_refund_and_insufficient_funds(world: World) -> None:
    path = f"/api/v1/accounts/{world.alpha.account_id}/refund"
    headers = world.alpha.auth("cashier")
    done = world.client.post(
        path, json={"amount": "30", "method": "cash"}, headers={**headers, **key("f-1")}
    )
    assert done.status_code == 201 and done.json()["balance"] == "70.00"
    too_much = world.client.post(
        path, json={"amount": "70.01", "method": "cash"}, headers={**headers, **key("f-2")}
    )
    assert too_much.status_code == 409 and error_code(too_much) == "insufficient_funds"


def test_operators_and_readonly_cannot_move_money(world: World) -> None:
    for role in ("operator", "readonly"):
        assert recharge(world, "1", f"role-{role}", role=role).status_code == 403


def test_money_on_another_organisations_account_is_404(world: World) -> None:
    response = world.client.post(
        f"/api/v1/accounts/{world.bravo.account_id}/recharge",
        json={"amount": "10", "method": "cash"},
        headers={**world.alpha.auth("cashier"), **key("x")},
    )
    assert response.status_code == 404


def test_reversal_by_an_admin(world: World) -> None:
    made = recharge(world, "25", "to-reverse").json()
    path = f"/api/v1/transfers/{made['transfer_id']}/reversal"
    headers = {**world.alpha.auth("admin"), **key("rev-1")}
    response = world.client.post(path, json={"memo": "typed twice"}, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["transfer_id"] == made["transfer_id"]
    assert world.client.post(path, json={"memo": "typed twice"}, headers=headers).status_code == 200
    again = world.client.post(
        path, json={"memo": "typed twice"}, headers={**headers, **key("rev-2")}
    )
    assert again.status_code == 409
    balance = world.client.get(
        f"/api/v1/accounts/{world.alpha.account_id}/balance", headers=headers
    )
    assert balance.json()["balance"] == "100.00"


def test_a_cashier_cannot_reverse(world: World) -> None:
    path = f"/api/v1/transfers/{world.alpha.transfer_id}/reversal"
    response = world.client.post(
        path, json={}, headers={**world.alpha.auth("cashier"), **key("rev")}
    )
    assert response.status_code == 403


def test_reversing_an_unknown_transfer_is_404(world: World) -> None:
    response = world.client.post(
        "/api/v1/transfers/99999/reversal", json={}, headers={**world.alpha.auth(), **key("rev-x")}
    )
    assert response.status_code == 404


def test_every_money_action_is_audited_with_who_and_from_where(world: World) -> None:
    recharge(world, "12", "audit-me")
    entries = world.client.get(
        "/api/v1/audit?action=api.money.recharge", headers=world.alpha.auth()
    ).json()["items"]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["actor"] == "alpha-cashier/token:3" and entry["source"] == "testclient"
    assert (
        entry["subject"] == "account:Alpha-ACC-1"
        and entry["detail"]["idempotency_key"] == "audit-me"
    )
    assert entry["detail"]["result"]["amount"] == "12.00"
    recharge(world, "12", "audit-me")  # a replay is not a second action
    again = world.client.get(
        "/api/v1/audit?action=api.money.recharge", headers=world.alpha.auth()
    ).json()
    assert len(again["items"]) == 1


def test_arrears_of_a_closed_account_are_paid_at_the_desk(world: World) -> None:
    account = world.alpha.account_id
    pay_path = f"/api/v1/accounts/{account}/arrears-payment"
    cashier = world.alpha.auth("cashier")
    open_answer = world.client.post(
        pay_path, json={"amount": "1", "method": "cash"}, headers={**cashier, **key("a-0")}
    )
    assert open_answer.status_code == 409 and "recharge it" in open_answer.text
    body = {"final_readings": [{"meter_id": world.alpha.meter_id, "total": "1200"}]}
    closed = world.client.post(
        f"/api/v1/accounts/{account}/close",
        json={**body, "refund_method": "cash"},
        headers={**world.alpha.auth("operator"), **key("close-owing")},
    )
    assert closed.status_code == 201, closed.text
    owed = closed.json()["arrears"]
    assert owed != "0.00"
    paid = world.client.post(
        pay_path, json={"amount": "10", "method": "wechat"}, headers={**cashier, **key("a-1")}
    )
    assert paid.status_code == 201, paid.text
    assert paid.json()["balance"] == "0.00" and paid.json()["amount"] == "10.00"
    replay = world.client.post(
        pay_path, json={"amount": "10", "method": "wechat"}, headers={**cashier, **key("a-1")}
    )
    assert replay.status_code == 200 and replay.json() == paid.json()
    too_much = world.client.post(
        pay_path, json={"amount": owed, "method": "cash"}, headers={**cashier, **key("a-2")}
    )
    assert too_much.status_code == 409 and "pay at most that" in too_much.text
    operator = world.client.post(
        pay_path,
        json={"amount": "1", "method": "cash"},
        headers={**world.alpha.auth("operator"), **key("a-3")},
    )
    assert operator.status_code == 403
    audit = world.client.get("/api/v1/audit?limit=500", headers=world.alpha.auth()).json()
    assert "api.money.arrears_payment" in {entry["action"] for entry in audit["items"]}
