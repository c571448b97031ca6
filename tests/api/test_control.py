"""The control loop's settings through the API: alarm plans, friendly-hours profiles, a site's
holidays, an account's supply policy (evaluated at once: a cut, protect, a restore) and
emergency credit (once, idempotent, audited with the caller's address)."""

from __future__ import annotations

from typing import Any

import pytest
from apikit import World, error_code, key

API = "/api/v1"


def get(world: World, path: str) -> Any:
    response = world.client.get(f"{API}{path}", headers=world.alpha.auth("readonly"))
    assert response.status_code == 200, response.text
    return response.json()


def post(world: World, path: str, body: dict[str, Any], role: str = "operator") -> Any:
    return world.client.post(f"{API}{path}", json=body, headers=world.alpha.auth(role))


PLAN = {
    "name": "Shops",
    "levels": [
        {"level": 2, "amount": "10", "channels": ["sms", "email"]},
        {"level": 1, "days_left": 3, "repeat_count": 2, "repeat_interval_hours": 12},
    ],
}


def test_an_alarm_plan_is_created_and_read_back_in_level_order(world: World) -> None:
    made = post(world, "/alarm-plans", PLAN)
    assert made.status_code == 201, made.text
    plan = made.json()
    assert [level["level"] for level in plan["levels"]] == [1, 2]
    first, second = plan["levels"]
    assert first["days_left"] == 3 and first["amount"] is None and first["repeat_count"] == 2
    assert first["repeat_interval_hours"] == 12 and first["channels"] == ["sms"]
    assert second["amount"] == "10.00" and second["channels"] == ["sms", "email"]
    assert get(world, f"/alarm-plans/{plan['id']}") == plan
    assert [p["name"] for p in get(world, "/alarm-plans")["items"]] == ["Alpha Plan", "Shops"]


@pytest.mark.parametrize(
    "levels",
    [
        [{"level": 1, "amount": "10", "days_left": 2}],
        [{"level": 1}],
        [{"level": 1, "amount": "10"}, {"level": 1, "amount": "5"}],
        [{"level": 1, "amount": "10", "channels": ["fax"]}],
        [{"level": 1, "amount": 10}],
        [],
    ],
)
def test_a_bad_plan_is_422_and_nothing_is_created(world: World, levels: list[Any]) -> None:
    response = post(world, "/alarm-plans", {"name": "Bad", "levels": levels})
    assert response.status_code == 422, response.text
    assert len(get(world, "/alarm-plans")["items"]) == 1


def test_plan_names_are_unique_and_cashiers_may_not_create_plans(world: World) -> None:
    assert error_code(post(world, "/alarm-plans", {**PLAN, "name": "Alpha Plan"})) == "conflict"
    assert post(world, "/alarm-plans", PLAN, role="cashier").status_code == 403


def put(world: World, path: str, body: dict[str, Any], role: str = "operator") -> Any:
    return world.client.put(f"{API}{path}", json=body, headers=world.alpha.auth(role))


def test_a_plan_is_revised_in_place_and_audited(world: World) -> None:
    plan = post(world, "/alarm-plans", PLAN).json()
    levels = [{"level": 1, "amount": "30.00", "channels": ["sms"]}]
    revised = put(world, f"/alarm-plans/{plan['id']}", {"name": "Shops 2", "levels": levels})
    assert revised.status_code == 200, revised.text
    body = revised.json()
    assert (body["id"], body["name"]) == (plan["id"], "Shops 2")
    assert [(lv["level"], lv["amount"]) for lv in body["levels"]] == [(1, "30.00")]
    assert get(world, f"/alarm-plans/{plan['id']}") == body
    entries = world.client.get(f"{API}/audit?limit=500", headers=world.alpha.auth()).json()
    actions = {(e["action"], e["subject"]) for e in entries["items"]}
    subject = f"alarm_plan:{plan['id']}"
    assert {("alarm_plan.update", subject), ("api.alarm_plan.update", subject)} <= actions


def test_a_name_that_looks_like_json_is_revised_and_audited_as_text(world: World) -> None:
    """A plan renamed "[0" (or "{B}") is a name, not JSON text: the audit entry shows it as it
    is (schemathesis found the revision failing with a 500)."""
    plan = post(world, "/alarm-plans", PLAN).json()
    for name in ("[0", "{B} plan"):
        revised = put(world, f"/alarm-plans/{plan['id']}", {**PLAN, "name": name})
        assert revised.status_code == 200, revised.text
        assert revised.json()["name"] == name
    entries = world.client.get(f"{API}/audit?limit=500", headers=world.alpha.auth()).json()
    renamed = [
        e["detail"]["after"]["name"]
        for e in entries["items"]
        if e["action"] == "alarm_plan.update" and e["subject"] == f"alarm_plan:{plan['id']}"
    ]
    assert sorted(renamed) == ["[0", "{B} plan"]


def test_a_refused_revision_changes_nothing(world: World) -> None:
    plan = post(world, "/alarm-plans", PLAN).json()
    path = f"/alarm-plans/{plan['id']}"
    assert error_code(put(world, path, {**PLAN, "name": "Alpha Plan"})) == "conflict"
    assert put(world, path, {**PLAN, "levels": []}).status_code == 422
    assert put(world, path, PLAN, role="cashier").status_code == 403
    assert put(world, "/alarm-plans/999999", PLAN).status_code == 404
    assert get(world, path) == plan


def test_a_friendly_profile_is_revised_in_place(world: World) -> None:
    body = {"name": "Lunch", "windows": [{"start": "12:00", "end": "14:00"}], "weekends": True}
    made = post(world, "/friendly-profiles", body).json()
    path = f"/friendly-profiles/{made['id']}"
    change = {"name": "Lunch", "windows": [{"start": "11:30", "end": "14:00"}], "holidays": True}
    revised = put(world, path, change)
    assert revised.status_code == 200, revised.text
    assert revised.json()["windows"] == [{"start": "11:30", "end": "14:00"}]
    assert (revised.json()["weekends"], revised.json()["holidays"]) == (False, True)
    assert (
        put(world, path, {**change, "windows": [{"start": "25:00", "end": "1"}]}).status_code == 422
    )
    assert put(world, path, change, role="readonly").status_code == 403
    assert get(world, path) == revised.json()


def test_a_friendly_profile_is_created_and_listed(world: World) -> None:
    body = {"name": "Lunch", "windows": [{"start": "12:00", "end": "14:00"}], "weekends": True}
    made = post(world, "/friendly-profiles", body)
    assert made.status_code == 201, made.text
    profile = made.json()
    assert profile["windows"] == [{"start": "12:00", "end": "14:00"}]
    assert profile["weekends"] is True and profile["holidays"] is False
    assert get(world, f"/friendly-profiles/{profile['id']}") == profile
    names = [p["name"] for p in get(world, "/friendly-profiles")["items"]]
    assert names == ["Alpha Nights", "Lunch"]
    bad = post(
        world, "/friendly-profiles", {"name": "X", "windows": [{"start": "25:00", "end": "1"}]}
    )
    assert bad.status_code == 422


def holiday(
    world: World, day: str, method: str = "PUT", role: str = "operator", **body: Any
) -> Any:
    path = f"{API}/sites/{world.alpha.site_id}/holidays/{day}"
    return world.client.request(method, path, json=body or None, headers=world.alpha.auth(role))


def test_holidays_are_set_listed_and_removed(world: World) -> None:
    made = holiday(world, "2026-12-25", name="Christmas")
    assert made.status_code == 200, made.text
    listed = get(world, f"/sites/{world.alpha.site_id}/holidays")["items"]
    assert [(h["day"], h["name"]) for h in listed] == [
        ("2026-10-01", "Alpha National Day"),
        ("2026-12-25", "Christmas"),
    ]
    removed = holiday(world, "2026-12-25", "DELETE")
    assert removed.json() == {
        "site_id": world.alpha.site_id,
        "day": "2026-12-25",
        "name": "Christmas",
    }
    assert error_code(holiday(world, "2026-12-25", "DELETE")) == "not_found"
    assert len(get(world, f"/sites/{world.alpha.site_id}/holidays")["items"]) == 1


def test_holidays_need_places_write_and_a_real_date(world: World) -> None:
    assert holiday(world, "2026-12-25", role="cashier", name="X").status_code == 403
    assert holiday(world, "2026-02-30", name="X").status_code == 422


def patch_policy(world: World, body: dict[str, Any], name: str, role: str = "operator") -> Any:
    return world.client.patch(
        f"{API}/accounts/{world.alpha.account_id}/policy",
        json=body,
        headers={**world.alpha.auth(role), **key(name)},
    )


def commands(world: World) -> list[tuple[str, str]]:
    """(kind, created_by) of the account's meter's commands, oldest first."""
    found = get(world, f"/commands?meter_id={world.alpha.meter_id}")["items"]
    return [(c["kind"], c["created_by"]) for c in reversed(found)]


def test_an_account_without_a_policy_shows_the_defaults(world: World) -> None:
    policy = get(world, f"/accounts/{world.alpha.account_id}/policy")
    assert policy["supply"] == "on" and policy["protect"] is False
    assert policy["cut_at"] == "zero" and policy["restore_mode"] == "direct"
    assert policy["alarm_plan_id"] is None and policy["version"] == 0


def test_a_policy_change_sets_what_is_given_and_keeps_the_rest(world: World) -> None:
    body = {
        "alarm_plan_id": world.alpha.alarm_plan_id,
        "alarm_amounts": {"1": "30"},
        "friendly_profile_id": world.alpha.friendly_profile_id,
        "restore_threshold": "5",
        "restore_mode": "close_allowed",
        "emergency_credit": "20",
    }
    changed = patch_policy(world, body, "p-1")
    assert changed.status_code == 200, changed.text
    policy = changed.json()
    assert policy["alarm_plan"] == "Alpha Plan" and policy["alarm_amounts"] == {"1": "30.00"}
    assert policy["friendly_profile"] == "Alpha Nights" and policy["restore_threshold"] == "5.00"
    assert policy["restore_mode"] == "close_allowed" and policy["emergency_credit"] == "20.00"
    again = patch_policy(world, {"alarm_plan_id": None, "alarm_amounts": {}}, "p-2").json()
    assert again["alarm_plan_id"] is None and again["alarm_amounts"] == {}
    assert again["friendly_profile"] == "Alpha Nights" and again["restore_mode"] == "close_allowed"
    assert get(world, f"/accounts/{world.alpha.account_id}/policy") == again


def test_another_organisations_plan_is_404_and_changes_nothing(world: World) -> None:
    refused = patch_policy(world, {"alarm_plan_id": world.bravo.alarm_plan_id}, "p-3")
    assert error_code(refused) == "not_found"
    assert get(world, f"/accounts/{world.alpha.account_id}/policy")["version"] == 0


@pytest.mark.parametrize(
    "body", [{}, {"cut_at": "never"}, {"alarm_amounts": {"x": "1"}}, {"restore_threshold": 5}]
)
def test_a_bad_policy_change_is_422(world: World, body: dict[str, Any]) -> None:
    assert patch_policy(world, body, "p-bad").status_code == 422


def test_a_policy_change_needs_a_key_and_accounts_write(world: World) -> None:
    assert patch_policy(world, {"protect": True}, "p-4", role="cashier").status_code == 403
    no_key = world.client.patch(
        f"{API}/accounts/{world.alpha.account_id}/policy",
        json={"protect": True},
        headers=world.alpha.auth("operator"),
    )
    assert no_key.status_code == 400


def empty_the_account(world: World) -> None:
    """Link the meter (so it can be switched) and refund the whole credit."""
    linked = world.client.put(
        f"{API}/meters/{world.alpha.meter_id}/link",
        json={"bus_id": world.alpha.bus_id, "address": "000000000101"},
        headers=world.alpha.auth("operator"),
    )
    assert linked.status_code == 200, linked.text
    refund = world.client.post(
        f"{API}/accounts/{world.alpha.account_id}/refund",
        json={"amount": "100", "method": "cash"},
        headers={**world.alpha.auth("cashier"), **key("empty")},
    )
    assert refund.json()["balance"] == "0.00"


def test_the_change_is_evaluated_at_once_cut_then_protect_restores(world: World) -> None:
    empty_the_account(world)
    cut = patch_policy(world, {"restore_threshold": "0"}, "e-1").json()
    assert cut["supply"] == "off"
    assert commands(world)[-1] == ("relay_trip", "system:control")
    protected = patch_policy(world, {"protect": True}, "e-2").json()
    assert protected["supply"] == "on" and protected["protect"] is True
    assert commands(world)[-2:] == [
        ("protect_on", "system:control"),
        ("relay_close", "system:control"),
    ]
    replay = patch_policy(world, {"protect": True}, "e-2")
    assert replay.headers["Idempotent-Replay"] == "true" and replay.json() == protected
    assert len(commands(world)) == 4  # the world's cancelled trip, the cut, protect, restore


def take(world: World, name: str, role: str = "cashier") -> Any:
    return world.client.post(
        f"{API}/accounts/{world.alpha.account_id}/emergency-credit",
        headers={**world.alpha.auth(role), **key(name)},
    )


def test_emergency_credit_is_given_once_and_restores_supply(world: World) -> None:
    empty_the_account(world)
    patch_policy(world, {"emergency_credit": "20"}, "e-3")
    assert get(world, f"/accounts/{world.alpha.account_id}/policy")["supply"] == "off"
    given = take(world, "ec-1")
    assert given.status_code == 201, given.text
    body = given.json()
    assert (body["amount"], body["balance"]) == ("20.00", "20.00")
    policy = get(world, f"/accounts/{world.alpha.account_id}/policy")
    assert policy["supply"] == "on" and policy["emergency_outstanding"] == "20.00"
    assert commands(world)[-1] == ("relay_close", "system:control")
    replay = take(world, "ec-1")
    assert replay.headers["Idempotent-Replay"] == "true" and replay.json() == body
    twice = take(world, "ec-2")
    assert error_code(twice) == "conflict" and "already taken" in twice.text
    balance = get(world, f"/accounts/{world.alpha.account_id}/balance")["balance"]
    assert balance == "20.00"


def test_emergency_credit_is_refused_when_not_offered_or_not_needed(world: World) -> None:
    assert "not offered" in take(world, "ec-3").text
    patch_policy(world, {"emergency_credit": "20"}, "e-4")
    refused = take(world, "ec-4")
    assert error_code(refused) == "conflict" and "used up" in refused.text
    assert take(world, "ec-5", role="operator").status_code == 403


def test_policy_and_emergency_credit_are_audited_with_the_address(world: World) -> None:
    empty_the_account(world)
    patch_policy(world, {"emergency_credit": "20"}, "e-5")
    take(world, "ec-6")
    entries = world.client.get(f"{API}/audit?limit=500", headers=world.alpha.auth()).json()
    by_action = {e["action"]: e for e in entries["items"]}
    subject = f"account:{world.alpha.account_number}"
    for action in (
        "policy.set",
        "api.policy.set",
        "money.emergency_credit",
        "api.money.emergency_credit",
    ):
        assert by_action[action]["subject"] == subject, action
    assert by_action["api.money.emergency_credit"]["source"] == "testclient"
    assert by_action["api.money.emergency_credit"]["detail"]["idempotency_key"] == "ec-6"
