"""The console's alarm plans and friendly hours: every role reads them, operators and admins edit
them in place (the revision reaches the plan's accounts through the API's own handler and is
audited with the address), a bad form is explained and changes nothing, another organisation's
plan is not found."""

from __future__ import annotations

import pytest
from apikit import ROLES, World
from consolekit import Console

PLAN_FORM = {
    "name": "Shops",
    "amount_1": "30.00",
    "channels_1": ["sms", "email"],
    "repeats_1": "2",
    "hours_1": "12",
    "amount_2": "",
    "days_2": "2",
    "channels_2": ["sms"],
}


@pytest.mark.parametrize("role", ROLES)
def test_every_role_reads_the_plans_and_profiles(world: World, role: str) -> None:
    page = Console(world.client, world.alpha, role).get("/settings/alarms")
    assert page.status_code == 200, page.text
    alpha = world.alpha
    assert f'data-plan="{alpha.alarm_plan_id}"' in page.text and alpha.name("Plan") in page.text
    assert f'data-profile="{alpha.friendly_profile_id}"' in page.text
    assert "Bravo" not in page.text
    can_edit = role in ("admin", "operator")
    path = f'hx-post="/settings/alarms/plans/{alpha.alarm_plan_id}"'
    assert (path in page.text) is can_edit
    assert ('data-plan="new"' in page.text) is can_edit


def test_an_operator_revises_a_plan_in_place_and_it_is_audited(world: World) -> None:
    console = Console(world.client, world.alpha, "operator")
    plan = world.alpha.alarm_plan_id
    saved = console.post(f"/settings/alarms/plans/{plan}", PLAN_FORM)
    assert saved.status_code == 200, saved.text
    assert 'data-result="plan"' in saved.text and 'value="30.00"' in saved.text
    shown = world.client.get(
        f"/api/v1/alarm-plans/{plan}", headers=world.alpha.auth("readonly")
    ).json()
    assert shown["name"] == "Shops"
    levels = {level["level"]: level for level in shown["levels"]}
    assert levels[1]["amount"] == "30.00" and levels[1]["channels"] == ["sms", "email"]
    assert (levels[1]["repeat_count"], levels[1]["repeat_interval_hours"]) == (2, 12)
    assert levels[2]["days_left"] == 2 and 3 not in levels
    audit = world.client.get("/api/v1/audit?limit=500", headers=world.alpha.auth()).json()
    actions = {(e["action"], e.get("source")) for e in audit["items"]}
    assert ("api.alarm_plan.update", "testclient") in actions


def test_new_plans_and_profiles_are_created_from_the_page(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    made = console.post("/settings/alarms/plans", {**PLAN_FORM, "name": "New shops"})
    assert made.status_code == 204 and made.headers["HX-Redirect"] == "/settings/alarms"
    form = {"name": "Lunch", "windows": "12:00-14:00, 20:00-08:00", "weekends": "on"}
    made = console.post("/settings/alarms/profiles", form)
    assert made.status_code == 204, made.text
    page = console.get("/settings/alarms").text
    assert "New shops" in page and 'value="12:00-14:00 20:00-08:00"' in page


def test_a_profile_is_revised_in_place(world: World) -> None:
    console = Console(world.client, world.alpha, "operator")
    profile = world.alpha.friendly_profile_id
    form = {"name": world.alpha.name("Nights"), "windows": "21:00-07:00", "holidays": "on"}
    saved = console.post(f"/settings/alarms/profiles/{profile}", form)
    assert saved.status_code == 200, saved.text
    shown = world.client.get(
        f"/api/v1/friendly-profiles/{profile}", headers=world.alpha.auth("readonly")
    ).json()
    assert shown["windows"] == [{"start": "21:00", "end": "07:00"}]
    assert (shown["weekends"], shown["holidays"]) == (False, True)


@pytest.mark.parametrize(
    "change",
    [
        {"amount_1": "abc"},
        {"amount_1": "", "days_1": "", "amount_2": "", "days_2": ""},  # no level left
        {"channels_1": ["fax"]},
        {"name": ""},
    ],
)
def test_a_bad_plan_form_is_explained_and_changes_nothing(
    world: World, change: dict[str, object]
) -> None:
    console = Console(world.client, world.alpha, "operator")
    plan = world.alpha.alarm_plan_id
    before = world.client.get(f"/api/v1/alarm-plans/{plan}", headers=world.alpha.auth()).json()
    answer = console.post(f"/settings/alarms/plans/{plan}", {**PLAN_FORM, **change})
    assert answer.status_code == 422, answer.text
    assert 'class="alert error"' in answer.text
    after = world.client.get(f"/api/v1/alarm-plans/{plan}", headers=world.alpha.auth()).json()
    assert after == before


def test_cashiers_cannot_edit_and_another_organisations_plan_is_not_found(world: World) -> None:
    plan = world.alpha.alarm_plan_id
    assert (
        Console(world.client, world.alpha, "cashier")
        .post(f"/settings/alarms/plans/{plan}", PLAN_FORM)
        .status_code
        == 403
    )
    other = Console(world.client, world.bravo, "admin")
    assert other.post(f"/settings/alarms/plans/{plan}", PLAN_FORM).status_code == 404
    bad = other.post(
        f"/settings/alarms/profiles/{world.alpha.friendly_profile_id}",
        {"name": "X", "windows": "20:00-08:00"},
    )
    assert bad.status_code == 404
