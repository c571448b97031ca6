"""Deduction summaries' setting through the API: off by default, changed by admins only (with
an audit entry), each organisation its own, and a bad cadence refused with 422 changing
nothing."""

from __future__ import annotations

from typing import Any

import pytest
from apikit import World

API = "/api/v1"
PATH = f"{API}/notification-summaries"


def get(world: World, role: str = "readonly", org: str = "alpha") -> Any:
    who = world.alpha if org == "alpha" else world.bravo
    response = world.client.get(PATH, headers=who.auth(role))
    assert response.status_code == 200, response.text
    return response.json()


def put(world: World, body: Any, role: str = "admin") -> Any:
    return world.client.put(PATH, json=body, headers=world.alpha.auth(role))


def test_summaries_are_off_until_an_admin_turns_them_on(world: World) -> None:
    assert get(world) == {"cadence": "off"}
    answer = put(world, {"cadence": "daily"})
    assert (answer.status_code, answer.json()) == (200, {"cadence": "daily"})
    assert get(world) == {"cadence": "daily"}
    assert get(world, org="bravo") == {"cadence": "off"}  # another organisation's own setting
    assert put(world, {"cadence": "monthly"}).json() == {"cadence": "monthly"}
    assert put(world, {"cadence": "off"}).json() == {"cadence": "off"}
    entries = world.client.get(f"{API}/audit?limit=500", headers=world.alpha.auth()).json()
    actions = [entry["action"] for entry in entries["items"]]
    assert actions.count("notifications.set_summaries") == 3
    assert actions.count("api.notifications.set_summaries") == 3


@pytest.mark.parametrize("body", [{"cadence": "weekly"}, {"cadence": None}, {}, {"cadence": 1}])
def test_a_bad_cadence_is_refused_and_changes_nothing(world: World, body: Any) -> None:
    put(world, {"cadence": "daily"})
    answer = put(world, body)
    assert answer.status_code == 422
    assert get(world) == {"cadence": "daily"}


@pytest.mark.parametrize("role", ["operator", "cashier", "readonly"])
def test_only_an_admin_changes_the_summaries(world: World, role: str) -> None:
    assert put(world, {"cadence": "daily"}, role=role).status_code == 403
    assert get(world, role=role) == {"cadence": "off"}


def test_without_credentials_nothing_is_read_or_changed(world: World) -> None:
    assert world.client.get(PATH).status_code == 401
    assert world.client.put(PATH, json={"cadence": "daily"}).status_code == 401
    assert get(world) == {"cadence": "off"}
