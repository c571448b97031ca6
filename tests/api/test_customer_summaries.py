"""``PATCH /customers/{id}`` with ``"summaries"``: false for a tenant who asked for no deduction
summaries (扣费通知), true again; anything but a boolean is 422 and writes nothing."""

from __future__ import annotations

import pytest
from apikit import World


def test_the_api_sets_and_clears_a_customers_summaries_and_says_so(world: World) -> None:
    auth = world.alpha.auth("operator")
    path = f"/api/v1/customers/{world.alpha.customer_id}"
    assert world.client.get(path, headers=auth).json()["summaries"] is True

    off = world.client.patch(path, json={"summaries": False}, headers=auth)
    assert off.status_code == 200 and off.json()["summaries"] is False
    assert world.client.get(path, headers=auth).json()["summaries"] is False
    listed = world.client.get("/api/v1/customers", headers=auth).json()["items"]
    assert [c["summaries"] for c in listed if c["id"] == world.alpha.customer_id] == [False]

    on = world.client.patch(path, json={"summaries": True}, headers=auth)
    assert on.json()["summaries"] is True
    entries = world.client.get(
        "/api/v1/audit", params={"action": "customer.update"}, headers=world.alpha.auth("admin")
    ).json()["items"]
    assert [e["detail"]["changed"] for e in entries] == [["summaries_opt_out"]] * 2


@pytest.mark.parametrize("value", ["no", "false", 0, [False]])
def test_a_summaries_value_that_is_not_a_boolean_is_422_and_writes_nothing(
    world: World, value: object
) -> None:
    auth = world.alpha.auth("operator")
    path = f"/api/v1/customers/{world.alpha.customer_id}"
    before = world.client.get(path, headers=auth).json()

    answer = world.client.patch(path, json={"summaries": value, "name": "Changed"}, headers=auth)

    assert answer.status_code == 422, answer.text
    assert world.client.get(path, headers=auth).json() == before
