"""An HJ212 gateway's access password through the API: set at registration or later, stored
hashed, never returned, audited without it, refused for other uplinks and other organisations."""

from __future__ import annotations

import json
from typing import Any

from apikit import World, error_code
from sqlalchemy import select

from meterdesk.audit.tables import audit_log
from meterdesk.devices.tables import gateways

API = "/api/v1"


def post(world: World, body: dict[str, Any], role: str = "operator") -> Any:
    return world.client.post(f"{API}/gateways", json=body, headers=world.alpha.auth(role))


def put_password(world: World, gateway_id: int, password: str, role: str = "operator") -> Any:
    return world.client.put(
        f"{API}/gateways/{gateway_id}/access-password",
        json={"access_password": password},
        headers=world.alpha.auth(role),
    )


def stored_hash(world: World, gateway_id: int) -> str | None:
    with world.db.read() as conn:
        query = select(gateways.c.access_password_hash).where(gateways.c.id == gateway_id)
        return conn.execute(query).scalar_one()  # type: ignore[no-any-return]


def test_an_hj212_gateway_gets_its_password_at_registration_and_changes_it(world: World) -> None:
    body = {"site_id": world.alpha.site_id, "serial": "HJ-1", "uplink": "hj212"}
    made = post(world, {**body, "access_password": "123456"})
    assert made.status_code == 201, made.text
    gateway = made.json()
    assert not any("password" in key for key in gateway)
    first = stored_hash(world, gateway["id"])
    assert first is not None and first.startswith("$argon2") and "123456" not in first

    changed = put_password(world, gateway["id"], "654321")
    assert changed.status_code == 200, changed.text
    assert changed.json() == gateway
    assert stored_hash(world, gateway["id"]) not in (None, first)
    with world.db.read() as conn:
        details = conn.execute(
            select(audit_log.c.action, audit_log.c.detail).where(
                audit_log.c.action.like("%gateway%")
            )
        ).all()
    actions = [action for action, _ in details]
    assert "gateway.access_password" in actions and "api.gateway.access_password" in actions
    assert not any("123456" in json.dumps(d) or "654321" in json.dumps(d) for _, d in details)


def test_a_password_is_refused_for_other_uplinks_roles_and_organisations(world: World) -> None:
    body = {"site_id": world.alpha.site_id, "serial": "MQ-1", "uplink": "mqtt"}
    assert error_code(post(world, {**body, "access_password": "123456"})) == "validation_error"
    assert error_code(put_password(world, world.alpha.gateway_id, "123456")) == "validation_error"
    hj = post(world, {**body, "serial": "HJ-2", "uplink": "hj212"}).json()
    assert put_password(world, hj["id"], "123456", role="cashier").status_code == 403
    assert put_password(world, world.bravo.gateway_id, "123456").status_code == 404
    assert error_code(put_password(world, hj["id"], "a;b")) == "validation_error"
    assert stored_hash(world, hj["id"]) is None
