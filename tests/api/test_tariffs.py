"""Tariffs: create with a JSON definition, read it back, list, add versions."""

from __future__ import annotations

from apikit import World, flat_tariff

TOU = {
    "utility": "electricity",
    "versions": [
        {
            "effective_from": "2026-01-01",
            "prices": {"peak": "1.05", "flat": "0.68", "valley": "0.32"},
            "seasons": [
                {
                    "name": "all",
                    "months": list(range(1, 13)),
                    "workday": [["00:00", "valley"], ["08:00", "flat"], ["10:00", "peak"]],
                }
            ],
        }
    ],
}


def test_create_and_read_a_time_of_use_tariff(world: World) -> None:
    auth = world.alpha.auth("admin")
    created = world.client.post(
        "/api/v1/tariffs", json={"name": "TOU", "definition": TOU}, headers=auth
    )
    assert created.status_code == 201, created.text
    tariff = created.json()
    assert tariff["utility"] == "electricity"
    assert tariff["versions"][0]["prices"]["peak"] == "1.05"
    assert world.client.get(f"/api/v1/tariffs/{tariff['id']}", headers=auth).json() == tariff


def test_tariff_prices_as_json_numbers_are_422(world: World) -> None:
    definition = flat_tariff()
    definition["versions"][0]["prices"]["flat"] = 0.65
    response = world.client.post(
        "/api/v1/tariffs",
        json={"name": "Float", "definition": definition},
        headers=world.alpha.auth(),
    )
    assert response.status_code == 422 and "float" in response.json()["error"]["message"]


def test_a_broken_definition_names_the_field(world: World) -> None:
    definition = {"utility": "electricity", "versions": [{"effective_from": "2026-01-01"}]}
    response = world.client.post(
        "/api/v1/tariffs",
        json={"name": "Broken", "definition": definition},
        headers=world.alpha.auth(),
    )
    assert response.status_code == 422 and "versions[0]" in response.json()["error"]["message"]


def test_only_admins_change_tariffs(world: World) -> None:
    body = {"name": "X", "definition": flat_tariff()}
    for role in ("operator", "cashier", "readonly"):
        assert (
            world.client.post(
                "/api/v1/tariffs", json=body, headers=world.alpha.auth(role)
            ).status_code
            == 403
        )


def test_list_tariffs_with_the_version_in_force(world: World) -> None:
    auth = world.alpha.auth("readonly")
    items = world.client.get("/api/v1/tariffs?utility=electricity", headers=auth).json()["items"]
    assert [(t["name"], t["current_from"]) for t in items] == [("Alpha Flat", "2026-01-01")]
    assert world.client.get("/api/v1/tariffs?utility=water", headers=auth).json()["items"] == []
    assert world.client.get("/api/v1/tariffs?utility=gas", headers=auth).status_code == 422


def test_add_a_version_from_a_later_date(world: World) -> None:
    version = {"effective_from": "2027-01-01", "prices": {"flat": "0.70"}}
    path = f"/api/v1/tariffs/{world.alpha.tariff_id}/versions"
    response = world.client.post(path, json={"version": version}, headers=world.alpha.auth())
    assert response.status_code == 201, response.text
    assert [v["effective_from"] for v in response.json()["versions"]] == [
        "2026-01-01",
        "2027-01-01",
    ]
    versions = world.client.get(path, headers=world.alpha.auth("readonly")).json()
    assert [(v["effective_from"], v["created_by"]) for v in versions] == [
        ("2026-01-01", "setup"),
        ("2027-01-01", "alpha-admin/token:1"),
    ]
    assert versions[1]["definition"]["prices"] == {"flat": "0.70"}


def test_a_version_never_reprices_the_past(world: World) -> None:
    version = {"effective_from": "2026-06-01", "prices": {"flat": "0.70"}}
    path = f"/api/v1/tariffs/{world.alpha.tariff_id}/versions"
    response = world.client.post(path, json={"version": version}, headers=world.alpha.auth())
    assert (
        response.status_code == 422 and "re-prices the past" in response.json()["error"]["message"]
    )


def test_unknown_tariff_is_404(world: World) -> None:
    auth = world.alpha.auth()
    assert world.client.get("/api/v1/tariffs/999", headers=auth).status_code == 404
    assert world.client.get("/api/v1/tariffs/999/versions", headers=auth).status_code == 404
