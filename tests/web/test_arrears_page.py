"""A closed account still owing money: its statement page offers cashiers the arrears payment
(欠费补缴), posted through the API's handler; other roles see the debt but no form."""

from __future__ import annotations

from apikit import World, key
from consolekit import Console


def close_owing(world: World) -> str:
    closed = world.client.post(
        f"/api/v1/accounts/{world.alpha.account_id}/close",
        json={
            "final_readings": [{"meter_id": world.alpha.meter_id, "total": "1200"}],
            "refund_method": "cash",
        },
        headers={**world.alpha.auth("operator"), **key("close-owing")},
    )
    assert closed.status_code == 201, closed.text
    return str(closed.json()["arrears"])


def test_a_cashier_collects_arrears_from_the_statement(world: World) -> None:
    owed = close_owing(world)
    path = f"/accounts/{world.alpha.account_id}/statement"
    console = Console(world.client, world.alpha, "cashier")
    shown = console.get(path)
    assert 'data-card="arrears"' in shown.text and f'value="{owed}"' in shown.text
    paid = console.post(
        f"/accounts/{world.alpha.account_id}/arrears-payment",
        {"amount": owed, "method": "cash", "idempotency_key": "arrears-12345678"},
    )
    assert paid.status_code == 204, paid.text
    assert paid.headers["HX-Redirect"] == f"{path}?detail=entries"
    after = console.get(f"{path}?detail=entries").text
    assert 'data-card="arrears"' not in after  # nothing owed any more
    balance = world.client.get(
        f"/api/v1/accounts/{world.alpha.account_id}/balance", headers=world.alpha.auth()
    ).json()
    assert balance["arrears"] == "0.00"


def test_other_roles_see_the_debt_without_the_form(world: World) -> None:
    close_owing(world)
    path = f"/accounts/{world.alpha.account_id}/statement"
    readonly = Console(world.client, world.alpha, "readonly").get(path).text
    assert 'data-card="arrears"' in readonly and "arrears-payment" not in readonly
    refused = Console(world.client, world.alpha, "operator").post(
        f"/accounts/{world.alpha.account_id}/arrears-payment",
        {"amount": "1", "method": "cash", "idempotency_key": "arrears-87654321"},
    )
    assert refused.status_code == 403
    too_much = Console(world.client, world.alpha, "cashier").post(
        f"/accounts/{world.alpha.account_id}/arrears-payment",
        {"amount": "999999", "method": "cash", "idempotency_key": "arrears-11111111"},
    )
    assert too_much.status_code == 409 and 'class="alert error"' in too_much.text
