"""Organisation isolation and roles, generated from ``app.routes`` so a new route is covered the
moment it exists.

- Cross-organisation matrix: every route × every role of Alpha × Bravo's ids (in the path and in
  every ``*_id`` of the body) answers 403 or 404; a route that takes no id answers no 5xx; no
  answer ever contains Bravo's data; and Bravo's data is unchanged afterwards.
- Role matrix: every organisation route names exactly one permission, and a role without it is
  refused with 403 whatever it sends.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apikit import ROLES, Org, World, make_world, password_of, sqlite_engine
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.testclient import TestClient

from meterdesk.access.model import ROLE_PERMISSIONS, Permission, Role

# Routes outside any one organisation's data: the caller's own session and organisations.
PERSONAL = {
    ("POST", "/api/v1/session"),
    ("GET", "/api/v1/session"),
    ("DELETE", "/api/v1/session"),
    ("PUT", "/api/v1/session/password"),
    ("PUT", "/api/v1/session/locale"),
    ("GET", "/api/v1/organisations"),
    ("POST", "/api/v1/organisations"),
    ("GET", "/api/v1/organisations/{organisation_id}"),
}
# Bravo data no Alpha request ever names (the import file names Bravo's park, rooms, M3, tariff).
BRAVO_MARKERS = (
    "Bravo Property",
    "Bravo Customer",
    "Bravo Tenant",
    "Bravo-ACC",
    "Bravo-M1",
    "Bravo-M2",
    "bravo-",
    "Bravo Gateway",
    "Bravo-GW1",
    "Bravo Bus",
    "Bravo Plan",
    "Bravo Nights",
    "Bravo National Day",
)


@pytest.fixture(scope="module")
def shared_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("isolation")
    engine = sqlite_engine(directory)
    yield from make_world(engine, directory)
    engine.dispose()


def api_routes(world: World) -> list[tuple[str, Any]]:
    """(method, route) of every API route, as FastAPI itself walks them (included routers too)."""
    found = [
        (method, route)
        for route in iter_route_contexts(world.api.routes)
        if isinstance(route.original_route, APIRoute) and (route.path or "").startswith("/api/v1/")
        for method in sorted(route.methods or ())
    ]
    assert len(found) > 50
    return found


def route_ids(world: World) -> list[str]:
    return [f"{method} {route.path}" for method, route in api_routes(world)]


def permission_of(route: Any) -> list[Permission]:
    found: list[Permission] = []
    pending = list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        permission = getattr(dependency.call, "permission", None)
        if permission is not None:
            found.append(permission)
        pending.extend(dependency.dependencies)
    return found


def with_ids(value: Any, ids: dict[str, int]) -> Any:
    """A copy of an example body with every ``*_id`` replaced by the given organisation's id."""
    if isinstance(value, dict):
        return {
            k: ids.get(k, v) if k.endswith("_id") else with_ids(v, ids) for k, v in value.items()
        }
    if isinstance(value, list):
        return [with_ids(item, ids) for item in value]
    return value


def example_body(route: Any) -> dict[str, Any] | None:
    if route.body_field is None:
        return None
    model = route.body_field.field_info.annotation
    schema_extra = getattr(model, "model_config", {}).get("json_schema_extra") or {}
    examples = schema_extra.get("examples") if isinstance(schema_extra, dict) else None
    return copy.deepcopy(examples[0]) if examples else None


def import_file(org: Org) -> dict[str, Any]:
    header = "account_number,customer_name,site,building,floor,room,meter_numbers,tariffs,opening_readings"
    row = (
        f"X-1,Someone,{org.name('Park')},{org.name('B1')},{org.name('F1')},{org.name('102')},"
        f"{org.label}-M3,{org.name('Flat')},0"
    )
    return {"file": ("accounts.csv", f"{header}\n{row}\n".encode(), "text/csv")}


def call(client: TestClient, method: str, route: Any, caller: Org, target: Org, role: str) -> Any:
    """``role`` of ``caller`` calls ``route`` with ``target``'s ids."""
    ids = target.ids()
    missing = [name for name in route.param_convertors if name not in ids]
    assert not missing, f"teach the matrix the path parameter(s) {missing} of {route.path}"
    path = route.path.format(**ids)
    headers = {**caller.auth(role), "Idempotency-Key": f"matrix-{method}-{path}-{role}"}
    if route.path == "/api/v1/account-imports":
        return client.request(method, path, headers=headers, files=import_file(target))
    body = example_body(route)
    if route.path == "/api/v1/session" and method == "POST":
        username = caller.username(role)
        body = {
            "username": username,
            "password": password_of(username),
            "organisation_id": target.id,
        }
    elif body is not None:
        body = with_ids(body, ids)
    return client.request(method, path, headers=headers, json=body)


def takes_ids(route: Any) -> bool:
    body = example_body(route) or {}
    named = any(name.endswith("_id") for name in route.param_convertors)
    return named or "_id" in json.dumps(body)


def bravo_snapshot(world: World) -> dict[str, Any]:
    bravo = world.bravo
    client = world.client
    return {
        name: client.get(path, headers=bravo.auth("admin")).json()
        for name, path in {
            "account": f"/api/v1/accounts/{bravo.account_id}",
            "quarantine": "/api/v1/quarantine",
            "audit": "/api/v1/audit?limit=500",
            "users": "/api/v1/users",
            "tokens": "/api/v1/tokens",
            "presets": "/api/v1/account-presets",
            "sites": "/api/v1/sites",
            "gateways": "/api/v1/gateways",
            "bus": f"/api/v1/buses/{bravo.bus_id}",
            "meter": f"/api/v1/meters/{bravo.meter_id}",
            "commands": "/api/v1/commands",
            "alarm_plans": "/api/v1/alarm-plans",
            "friendly": "/api/v1/friendly-profiles",
            "holidays": f"/api/v1/sites/{bravo.site_id}/holidays",
            "policy": f"/api/v1/accounts/{bravo.account_id}/policy",
            "notifications": "/api/v1/notifications",
            "channels": "/api/v1/notification-channels",
            "quiet_hours": "/api/v1/notification-quiet-hours",
        }.items()
    }


@pytest.fixture(scope="module")
def bravo_before(shared_world: World) -> dict[str, Any]:
    return bravo_snapshot(shared_world)


def test_the_matrix_covers_every_route(shared_world: World) -> None:
    """Every API route takes part (new routes join automatically) and names its ids."""
    for _, route in api_routes(shared_world):
        assert set(route.param_convertors) <= set(shared_world.bravo.ids()), route.path


@pytest.mark.parametrize("role", ROLES)
def test_another_organisations_ids_answer_403_or_404_and_never_its_data(
    shared_world: World, bravo_before: dict[str, Any], role: str
) -> None:
    world = shared_world
    failures = []
    for method, route in api_routes(world):
        response = call(world.client, method, route, world.alpha, world.bravo, role)
        name = f"{role}: {method} {route.path} -> {response.status_code}"
        if response.status_code >= 500:
            failures.append(f"{name} (server error)")
        elif takes_ids(route) and response.status_code not in (403, 404):
            failures.append(f"{name} {response.text[:200]}")
        leaks = [m for m in BRAVO_MARKERS if m in response.text]
        if leaks:
            failures.append(f"{name} leaks {leaks}: {response.text[:200]}")
    assert not failures, "\n".join(failures)
    assert bravo_snapshot(world) == bravo_before


def test_every_organisation_route_names_exactly_one_permission(shared_world: World) -> None:
    for method, route in api_routes(shared_world):
        needed = permission_of(route)
        if (method, route.path) in PERSONAL:
            assert needed == [], route.path
        else:
            assert len(needed) == 1, f"{method} {route.path} needs {needed}"
            if method != "GET":
                assert needed[0] not in (Permission.READ, Permission.AUDIT_READ), route.path


def test_readonly_may_only_read() -> None:
    assert ROLE_PERMISSIONS[Role.READONLY] == {Permission.READ, Permission.AUDIT_READ}


@pytest.mark.parametrize("role", ROLES)
def test_a_role_without_the_permission_is_refused_with_403(shared_world: World, role: str) -> None:
    world = shared_world
    granted = ROLE_PERMISSIONS[Role(role)]
    wrong = []
    for method, route in api_routes(world):
        needed = permission_of(route)
        allowed = bool(needed) and needed[0] in granted
        if not needed or (allowed and method != "GET"):
            continue  # allowed changes are the area tests' business (they would change the world)
        response = call(world.client, method, route, world.alpha, world.alpha, role)
        if not allowed and response.status_code != 403:
            wrong.append(
                f"{role} {method} {route.path}: {response.status_code} {response.text[:150]}"
            )
        if allowed and method == "GET" and response.status_code != 200:
            wrong.append(
                f"{role} {method} {route.path}: {response.status_code} {response.text[:150]}"
            )
    assert not wrong, "\n".join(wrong)


def test_without_credentials_every_route_but_login_answers_401(shared_world: World) -> None:
    for method, route in api_routes(shared_world):
        if (method, route.path) == ("POST", "/api/v1/session"):
            continue
        path = route.path.format(**shared_world.alpha.ids())
        response = shared_world.client.request(method, path, json=example_body(route))
        assert response.status_code in (401, 422), f"{method} {route.path}: {response.status_code}"
        if response.status_code == 401:
            assert response.headers["WWW-Authenticate"] == "Bearer"


def test_routes_are_documented_in_openapi(shared_world: World, tmp_path: Path) -> None:
    spec = shared_world.client.get("/openapi.json").json()
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert documented == {(m, r.path) for m, r in api_routes(shared_world)}
