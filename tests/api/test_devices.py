"""Gateways, buses, linking meters, and what the platform last saw of them: created through the
API, listed with online state and last contact, refused with clear errors, audited with the
caller's address."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from apikit import World, error_code

from meterdesk.devices.status import MeterState, StatusChanges, write_changes

API = "/api/v1"


def post(world: World, path: str, body: dict[str, Any], role: str = "operator") -> Any:
    return world.client.post(f"{API}{path}", json=body, headers=world.alpha.auth(role))


def get(world: World, path: str) -> Any:
    response = world.client.get(f"{API}{path}", headers=world.alpha.auth("readonly"))
    assert response.status_code == 200, response.text
    return response.json()


def audit_actions(world: World) -> list[dict[str, Any]]:
    entries = world.client.get(f"{API}/audit?limit=500", headers=world.alpha.auth()).json()
    return list(entries["items"])


def test_an_operator_registers_a_gateway_and_finds_it_listed(world: World) -> None:
    body = {"site_id": world.alpha.site_id, "serial": "DTU-9", "uplink": "mqtt", "port": 1883}
    made = post(world, "/gateways", body)
    assert made.status_code == 201, made.text
    gateway = made.json()
    assert gateway["name"] == "DTU-9" and gateway["state"] == "unknown"
    assert gateway["meters"] == 0 and gateway["last_seen_at"] is None
    assert get(world, f"/gateways/{gateway['id']}") == gateway
    listed = get(world, "/gateways")["items"]
    assert [g["serial"] for g in listed] == ["Alpha-GW1", "DTU-9"]
    entry = next(e for e in audit_actions(world) if e["action"] == "api.gateway.create")
    assert entry["source"] == "testclient" and entry["actor"].startswith("alpha-operator")


def test_a_duplicate_serial_is_409_and_a_cashier_may_not_register(world: World) -> None:
    body = {"site_id": world.alpha.site_id, "serial": "Alpha-GW1"}
    assert error_code(post(world, "/gateways", body)) == "conflict"
    refused = post(world, "/gateways", {**body, "serial": "X"}, role="cashier")
    assert refused.status_code == 403
    assert len(get(world, "/gateways")["items"]) == 1


def test_gateway_pages_follow_the_cursor(world: World) -> None:
    for serial in ("G-2", "G-3"):
        post(world, "/gateways", {"site_id": world.alpha.site_id, "serial": serial})
    first = get(world, "/gateways?limit=2")
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = get(world, f"/gateways?limit=2&cursor={first['next_cursor']}")
    assert [g["serial"] for g in rest["items"]] == ["G-3"] and rest["next_cursor"] is None


@pytest.mark.parametrize("path", ["/gateways", "/customers", "/commands", "/notifications"])
@pytest.mark.parametrize("cursor", ["%C2%B9", "x", "1.2"])
def test_a_cursor_no_list_gave_is_422(world: World, path: str, cursor: str) -> None:
    response = world.client.get(f"{API}{path}?cursor={cursor}", headers=world.alpha.auth())
    assert response.status_code == 422 and error_code(response) == "validation_error"


def test_a_bus_is_created_on_a_gateway_with_protocol_defaults(world: World) -> None:
    body = {
        "name": "B-2",
        "protocol": "modbus_rtu",
        "endpoint": "10.0.0.9:502",
        "gateway_id": world.alpha.gateway_id,
    }
    made = post(world, "/buses", body)
    assert made.status_code == 201, made.text
    bus = made.json()
    assert (bus["baud"], bus["parity"], bus["meters"], bus["meter_status"]) == (9600, "N", 0, [])
    on_gateway = get(world, f"/buses?gateway_id={world.alpha.gateway_id}")["items"]
    assert {b["name"] for b in on_gateway} == {"Alpha Bus", "B-2"}


def test_a_bad_endpoint_or_combination_is_422_and_nothing_is_created(world: World) -> None:
    bad_endpoint = {"name": "B-3", "protocol": "dlt645", "endpoint": "no port"}
    assert error_code(post(world, "/buses", bad_endpoint)) == "validation_error"
    modbus_over_mqtt = {**bad_endpoint, "protocol": "modbus_tcp", "transport": "serial"}
    assert post(world, "/buses", modbus_over_mqtt).status_code == 422
    assert [b["name"] for b in get(world, "/buses")["items"]] == ["Alpha Bus"]


def link(world: World, meter_id: int, address: str, **extra: Any) -> Any:
    body = {"bus_id": world.alpha.bus_id, "address": address, **extra}
    return world.client.put(
        f"{API}/meters/{meter_id}/link", json=body, headers=world.alpha.auth("operator")
    )


def test_linking_puts_the_meter_on_the_bus_and_unlinking_takes_it_off(world: World) -> None:
    meter_id = world.alpha.meter_id
    linked = link(world, meter_id, "000000000101", options={"password": "123456"})
    assert linked.status_code == 200, linked.text
    assert linked.json() == {
        "meter_id": meter_id,
        "bus_id": world.alpha.bus_id,
        "address": "000000000101",
        "protocol": "dlt645",
        "options": {"password": "123456"},
    }
    bus = get(world, f"/buses/{world.alpha.bus_id}")
    assert bus["meters"] == 1 and [m["number"] for m in bus["meter_status"]] == ["Alpha-M1"]
    unlinked = world.client.delete(
        f"{API}/meters/{meter_id}/link", headers=world.alpha.auth("operator")
    )
    assert unlinked.json()["bus_id"] is None and unlinked.json()["address"] == "000000000101"
    assert get(world, f"/buses/{world.alpha.bus_id}")["meters"] == 0
    actions = [e["action"] for e in audit_actions(world)]
    assert "api.meter.link" in actions and "api.meter.unlink" in actions


def test_a_wrong_address_is_422_and_a_taken_one_409(world: World) -> None:
    short = link(world, world.alpha.meter_id, "0101")
    assert short.status_code == 422 and "12 digits" in short.json()["error"]["message"]
    assert get(world, f"/meters/{world.alpha.meter_id}/status")["bus_id"] is None
    assert link(world, world.alpha.meter_id, "000000000101").status_code == 200
    taken = link(world, world.alpha.spare_meter_id, "000000000101")
    assert error_code(taken) == "conflict" and "Alpha-M1" in taken.json()["error"]["message"]


def test_a_meter_never_read_is_unknown(world: World) -> None:
    found = get(world, f"/meters/{world.alpha.spare_meter_id}/status")
    assert found["state"] == "unknown" and found["last_seen_at"] is None
    assert found["failures"] == 0 and found["relay"] is None


def test_status_shows_what_the_poller_last_saw(world: World) -> None:
    assert link(world, world.alpha.meter_id, "000000000101").status_code == 200
    assert link(world, world.alpha.spare_meter_id, "000000000102").status_code == 200
    seen = world.clock() - timedelta(minutes=2)
    online = MeterState(
        world.alpha.meter_id,
        state="online",
        last_seen_at=seen,
        relay="open",
        protected=False,
        live={"voltage_v": "221.4"},
        updated_at=seen,
    )
    lost = MeterState(
        world.alpha.spare_meter_id, state="lost", failures=3, last_error="timeout", updated_at=seen
    )
    gateway = {"gateway": world.alpha.gateway_id, "state": "online", "seen": seen}
    with world.db.transaction() as conn:
        write_changes(conn, StatusChanges([online.row(), lost.row()], [gateway]))
    status = get(world, f"/meters/{world.alpha.meter_id}/status")
    assert (status["state"], status["relay"], status["protected"]) == ("online", "open", False)
    assert status["live"] == {"voltage_v": "221.4"} and status["last_seen_at"] is not None
    bus = get(world, f"/buses/{world.alpha.bus_id}")
    assert (bus["meters"], bus["online"], bus["lost"]) == (2, 1, 1)
    assert bus["last_seen_at"] == status["last_seen_at"]
    gateway_out = get(world, f"/gateways/{world.alpha.gateway_id}")
    assert gateway_out["state"] == "online" and gateway_out["meters"] == 2
