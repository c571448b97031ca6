"""System notices through the API: an operator sends one to a building (once per key), lists and
shows it with its delivery counts; a cashier is refused, another organisation's site is not
found, bad input is a 422 — and none of those writes anything."""

from __future__ import annotations

from typing import Any

import pytest
from apikit import World, error_code, key
from sqlalchemy import func, select

from meterdesk.notifications.tables import notices, notification_outbox

API = "/api/v1"


def body(world: World, **given: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "scope": "building",
        "ids": [world.alpha.building_id],
        "subject": "B1 停水检修",
        "text": "12 月 9 日 9:00–12:00 停水检修，请提前储水。",
    }
    found.update(given)
    return found


def post(world: World, payload: dict[str, Any], role: str = "operator", k: str = "n-1") -> Any:
    headers = {**world.alpha.auth(role), **key(k)}
    return world.client.post(f"{API}/notices", json=payload, headers=headers)


def written(world: World) -> tuple[int, int]:
    """(notices, system_notice messages) of every organisation."""
    with world.db.read() as conn:
        count = select(func.count())
        stored = conn.execute(count.select_from(notices)).scalar_one()
        messages = conn.execute(
            count.select_from(notification_outbox).where(
                notification_outbox.c.event_kind == "system_notice"
            )
        ).scalar_one()
    return int(stored), int(messages)


def test_an_operator_sends_a_notice_once_and_reads_it_back(world: World) -> None:
    before = written(world)
    sent = post(world, body(world))
    assert sent.status_code == 201, sent.text
    notice = sent.json()
    assert notice["recipient_count"] == 1 and notice["scope_kind"] == "building"
    assert notice["delivery"]["pending"] == 1  # the log channel; the customer has no other
    assert written(world) == (before[0] + 1, before[1] + 1)

    again = post(world, body(world))
    assert again.status_code == 200 and again.headers["Idempotent-Replay"] == "true"
    assert again.json() == notice and written(world) == (before[0] + 1, before[1] + 1)
    other = post(world, body(world, text="另一段文字"))
    assert other.status_code == 409 and written(world) == (before[0] + 1, before[1] + 1)

    auth = world.alpha.auth("readonly")
    shown = world.client.get(f"{API}/notices/{notice['id']}", headers=auth).json()
    assert shown == notice
    page = world.client.get(f"{API}/notices?limit=1", headers=auth).json()
    assert page["items"] == [notice] and page["next_cursor"]
    rest = world.client.get(f"{API}/notices?cursor={page['next_cursor']}", headers=auth).json()
    assert [n["id"] for n in rest["items"]] == [world.alpha.notice_id]
    bravo = world.client.get(f"{API}/notices/{world.bravo.notice_id}", headers=auth)
    assert bravo.status_code == 404


def test_urgent_and_chosen_channels_are_kept(world: World) -> None:
    sent = post(world, body(world, urgent=True, channels=["sms", "email"]), role="admin")
    assert sent.status_code == 201, sent.text
    assert sent.json()["urgent"] is True and sent.json()["channels"] == ["sms", "email"]
    with world.db.read() as conn:
        urgencies = set(
            conn.execute(
                select(notification_outbox.c.urgency).where(
                    notification_outbox.c.event_key.startswith(f"notice:{sent.json()['id']}:")
                )
            ).scalars()
        )
    assert urgencies == {"urgent"}


@pytest.mark.parametrize("role", ["cashier", "readonly"])
def test_cashiers_and_readers_may_not_send(world: World, role: str) -> None:
    before = written(world)
    refused = post(world, body(world), role=role)
    assert refused.status_code == 403 and written(world) == before


def test_another_organisations_place_is_not_found(world: World) -> None:
    before = written(world)
    for scope, ids in (
        ("site", [world.bravo.site_id]),
        ("building", [world.bravo.building_id]),
        ("floor", [world.bravo.floor_id]),
        ("rooms", [world.alpha.room_id, world.bravo.room_id]),
    ):
        refused = post(world, body(world, scope=scope, ids=ids), k=f"bravo-{scope}")
        assert refused.status_code == 404, (scope, refused.text)
        assert "Bravo" not in refused.text
    assert written(world) == before


@pytest.mark.parametrize(
    "given",
    [
        {"subject": "停" * 61},
        {"subject": "   "},
        {"text": ""},
        {"text": "水" * 501},
        {"subject": "停水\u001b[2J"},
        {"scope": "organisation", "ids": [1]},
        {"scope": "street"},
        {"ids": []},
        {"channels": ["webhook"]},
        {"urgent": "maybe"},
        {"extra": 1},
    ],
)
def test_bad_input_is_422_and_writes_nothing(world: World, given: dict[str, Any]) -> None:
    before = written(world)
    refused = post(world, body(world, **given))
    assert refused.status_code == 422, refused.text
    assert error_code(refused) == "validation_error"
    assert written(world) == before


def test_a_scope_without_an_open_account_is_a_conflict(world: World) -> None:
    before = written(world)
    refused = post(world, body(world, scope="rooms", ids=[world.alpha.spare_room_id]))
    assert refused.status_code == 409 and "no open account" in refused.text
    assert written(world) == before
