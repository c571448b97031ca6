"""Device commands through the API: sent as desired states with an Idempotency-Key (replays
answer the first command, a reused key for another command is 409), newer commands supersede
older ones, parameters are validated, lists filter and page, cancel stops an open command, and
every send and cancel is audited with the caller's address."""

from __future__ import annotations

from typing import Any

import pytest
from apikit import World, error_code, key

API = "/api/v1"


def send(world: World, body: dict[str, Any], name: str, role: str = "operator", **kw: Any) -> Any:
    meter_id = kw.get("meter_id", world.alpha.meter_id)
    return world.client.post(
        f"{API}/meters/{meter_id}/commands",
        json=body,
        headers={**world.alpha.auth(role), **key(name)},
    )


def get(world: World, path: str) -> Any:
    response = world.client.get(f"{API}{path}", headers=world.alpha.auth("readonly"))
    assert response.status_code == 200, response.text
    return response.json()


def test_a_relay_close_is_recorded_and_supersedes_the_open_trip(world: World) -> None:
    trip = send(world, {"kind": "relay_trip"}, "c-0").json()["command"]
    assert trip["status"] == "pending"
    response = send(world, {"kind": "relay_close"}, "c-1")
    assert response.status_code == 201, response.text
    body = response.json()
    command = body["command"]
    assert (command["kind"], command["status"], command["desired"]) == (
        "relay_close",
        "pending",
        "relay closed",
    )
    assert command["meter_number"] == "Alpha-M1" and command["created_by"].startswith("alpha-op")
    assert body["superseded"] == [trip["id"]]
    older = get(world, f"/commands/{trip['id']}")
    assert older["status"] == "cancelled" and older["reason"] == f"superseded by #{command['id']}"


def test_a_replay_answers_the_first_command_and_records_nothing_new(world: World) -> None:
    first = send(world, {"kind": "valve_close"}, "c-2")
    again = send(world, {"kind": "valve_close"}, "c-2")
    assert again.status_code == 200 and again.headers["Idempotent-Replay"] == "true"
    assert again.json() == first.json()
    assert len(get(world, "/commands?kind=valve_close")["items"]) == 1
    other = send(world, {"kind": "valve_open"}, "c-2")
    assert other.status_code == 409 and error_code(other) == "idempotency_conflict"


def test_without_a_key_it_is_400_and_nothing_is_recorded(world: World) -> None:
    response = world.client.post(
        f"{API}/meters/{world.alpha.meter_id}/commands",
        json={"kind": "relay_trip"},
        headers=world.alpha.auth("operator"),
    )
    assert response.status_code == 400
    assert [c["id"] for c in get(world, "/commands")["items"]] == [world.alpha.command_id]


@pytest.mark.parametrize("role", ["cashier", "readonly"])
def test_roles_without_meters_write_may_not_send(world: World, role: str) -> None:
    assert send(world, {"kind": "relay_trip"}, f"c-{role}", role=role).status_code == 403


def test_limits_are_written_with_their_amounts(world: World) -> None:
    body = {"kind": "write_limits", "params": {"limits": {"alarm_1": "20", "alarm_2": "10.5"}}}
    command = send(world, body, "c-3").json()["command"]
    assert command["params"] == {"limits": {"alarm_1": "20.00", "alarm_2": "10.50"}}
    assert command["desired"] == "limits alarm_1=20.00, alarm_2=10.50"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"kind": "write_prices"}, "params.prices"),
        ({"kind": "relay_trip", "params": {"prices": {"flat": "1"}}}, "takes no parameter"),
        ({"kind": "write_prices", "params": {"prices": {"flat": "0.12345"}}}, "params"),
        (
            {"kind": "write_limits", "params": {"limits": {"alarm_1": "5", "alarm_2": "10"}}},
            "alarm_1 must be at least alarm_2",
        ),
        ({"kind": "relay_trip", "from_tariff": True}, "from_tariff"),
        ({"kind": "recharge"}, "kind"),
        ({"kind": "relay_trip", "deadline_s": 5}, "deadline_s"),
    ],
)
def test_bad_parameters_are_422_with_the_field_named(
    world: World, body: dict[str, Any], message: str
) -> None:
    response = send(world, body, "c-bad")
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]["message"]


def test_prices_can_come_from_the_meters_tariff(world: World) -> None:
    command = send(world, {"kind": "write_prices", "from_tariff": True}, "c-4").json()["command"]
    prices = dict.fromkeys(("sharp", "peak", "flat", "valley"), "0.6537")
    assert command["params"] == {"prices": prices}


def test_a_meter_without_an_account_has_no_tariff_to_push(world: World) -> None:
    body = {"kind": "write_prices", "from_tariff": True}
    refused = send(world, body, "c-5", meter_id=world.alpha.spare_meter_id)
    assert error_code(refused) == "conflict"


def test_lists_filter_by_status_kind_and_meter_and_page_newest_first(world: World) -> None:
    for n, kind in enumerate(("clock_sync", "protect_on", "relay_trip")):
        send(world, {"kind": kind}, f"l-{n}", meter_id=world.alpha.spare_meter_id)
    spare = get(world, f"/commands?meter_id={world.alpha.spare_meter_id}")["items"]
    assert [c["kind"] for c in spare] == ["relay_trip", "protect_on", "clock_sync"]
    assert [c["kind"] for c in get(world, "/commands?kind=protect_on")["items"]] == ["protect_on"]
    pending = get(world, "/commands?status=pending")["items"]
    assert len(pending) == 3
    assert [c["id"] for c in get(world, "/commands?status=cancelled")["items"]] == [
        world.alpha.command_id
    ]
    first = get(world, "/commands?limit=3")
    rest = get(world, f"/commands?limit=3&cursor={first['next_cursor']}")
    ids = [c["id"] for c in first["items"] + rest["items"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 4 and rest["next_cursor"] is None
    assert get(world, "/commands?status=failed")["items"] == []


def test_one_command_shows_its_log(world: World) -> None:
    found = get(world, f"/commands/{world.alpha.command_id}")
    assert found["kind"] == "relay_trip" and found["status"] == "cancelled"
    assert [e["event"] for e in found["events"]] == ["created", "cancelled"]
    assert found["events"][0]["detail"]["desired"] == "relay open"
    assert found["reason"] == "cancelled by setup"


def cancel(world: World, command_id: int, name: str, role: str = "operator") -> Any:
    return world.client.post(
        f"{API}/commands/{command_id}/cancel",
        json={"reason": "wrong room"},
        headers={**world.alpha.auth(role), **key(name)},
    )


def test_cancel_stops_an_open_command_once(world: World) -> None:
    command_id = send(world, {"kind": "valve_close"}, "x-0").json()["command"]["id"]
    done = cancel(world, command_id, "x-1")
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "cancelled"
    assert done.json()["reason"].endswith("wrong room")
    replay = cancel(world, command_id, "x-1")
    assert replay.headers["Idempotent-Replay"] == "true" and replay.json() == done.json()
    again = cancel(world, command_id, "x-2")
    assert error_code(again) == "conflict" and "already cancelled" in again.text
    log = get(world, f"/commands/{command_id}")["events"]
    assert [e["event"] for e in log] == ["created", "cancelled"]


def test_send_and_cancel_are_audited_with_the_address(world: World) -> None:
    sent = send(world, {"kind": "relay_close"}, "a-1").json()["command"]
    cancel(world, sent["id"], "a-2")
    entries = world.client.get(f"{API}/audit?limit=500", headers=world.alpha.auth()).json()
    api_entries = {e["action"]: e for e in entries["items"] if e["action"].startswith("api.")}
    assert api_entries["api.command.send"]["subject"] == "meter:Alpha-M1"
    assert api_entries["api.command.send"]["source"] == "testclient"
    assert api_entries["api.command.cancel"]["subject"] == f"command:{sent['id']}"
    service_entries = [e["action"] for e in entries["items"]]
    assert "command.send" in service_entries and "command.cancel" in service_entries


def take_back(
    world: World, body: dict[str, Any], name: str, role: str = "cashier", **kw: Any
) -> Any:
    meter_id = kw.get("meter_id", world.alpha.spare_meter_id)
    return world.client.post(
        f"{API}/meters/{meter_id}/take-back",
        json=body,
        headers={**world.alpha.auth(role), **key(name)},
    )


def test_a_take_back_is_recorded_once_per_key_and_audited(world: World) -> None:
    response = take_back(world, {"amount": "12.5"}, "tb-1")
    assert response.status_code == 201, response.text
    command = response.json()["command"]
    assert (command["kind"], command["status"], command["params"]) == (
        "take_back",
        "pending",
        {"amount": "12.50", "take_back_count": 1},
    )
    again = take_back(world, {"amount": "12.5"}, "tb-1")
    assert again.status_code == 200 and again.json()["command"]["id"] == command["id"]
    other = take_back(world, {"all": True}, "tb-1")
    assert other.status_code == 409 and error_code(other) == "idempotency_conflict"
    every = take_back(world, {"all": True}, "tb-2", role="admin").json()["command"]
    assert every["params"] == {"all": True, "take_back_count": 1}
    assert len(get(world, "/commands?kind=take_back")["items"]) == 2
    audit = world.client.get(
        f"{API}/audit?action=money.take_back", headers=world.alpha.auth("readonly")
    )
    assert audit.status_code == 200, audit.text
    entries = audit.json()["items"]
    assert sorted(e["actor"].split("/")[0] for e in entries) == ["alpha-admin", "alpha-cashier"]
    assert {e["detail"]["amount"] for e in entries} == {"12.50", "all"}, entries


@pytest.mark.parametrize("role", ["operator", "readonly"])
def test_roles_without_money_write_may_not_take_back(world: World, role: str) -> None:
    assert take_back(world, {"amount": "1"}, f"tb-{role}", role=role).status_code == 403
    assert get(world, "/commands?kind=take_back")["items"] == []


@pytest.mark.parametrize(
    "body",
    [{}, {"amount": "5", "all": True}, {"amount": "-5"}, {"amount": "0"}, {"amount": "1.001"},
     {"amount": 5}, {"all": "yes"}, {"amount": "5", "typo": 1}],
)  # fmt: skip
def test_bad_take_backs_are_refused_and_record_nothing(world: World, body: dict[str, Any]) -> None:
    response = take_back(world, body, "tb-bad")
    assert response.status_code in (400, 422), (body, response.text)
    assert get(world, "/commands?kind=take_back")["items"] == []


def test_another_organisations_meter_is_not_found(world: World) -> None:
    response = take_back(world, {"all": True}, "tb-x", meter_id=world.bravo.spare_meter_id)
    assert response.status_code == 404
    assert get(world, "/commands?kind=take_back")["items"] == []
