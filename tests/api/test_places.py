"""Sites, buildings, floors, rooms and customers: create, get, list with filters and pages."""

from __future__ import annotations

from apikit import World, error_code


def test_create_get_and_list_sites(world: World) -> None:
    auth = world.alpha.auth("operator")
    created = world.client.post(
        "/api/v1/sites", json={"name": "South Park", "timezone": "Europe/Berlin"}, headers=auth
    )
    assert created.status_code == 201
    site = created.json()
    assert site["timezone"] == "Europe/Berlin" and site["created_at"].endswith("Z")
    assert world.client.get(f"/api/v1/sites/{site['id']}", headers=auth).json() == site
    names = [s["name"] for s in world.client.get("/api/v1/sites", headers=auth).json()["items"]]
    assert names == ["Alpha Park", "South Park"]


def test_site_refuses_an_unknown_zone_and_a_duplicate_name(world: World) -> None:
    auth = world.alpha.auth("operator")
    bad = world.client.post(
        "/api/v1/sites", json={"name": "X", "timezone": "Mars/Base"}, headers=auth
    )
    assert bad.status_code == 422 and "time zone" in bad.json()["error"]["message"]
    dup = world.client.post(
        "/api/v1/sites", json={"name": "Alpha Park", "timezone": "Asia/Shanghai"}, headers=auth
    )
    assert dup.status_code == 409 and error_code(dup) == "conflict"


def test_get_unknown_site_is_404(world: World) -> None:
    response = world.client.get("/api/v1/sites/999", headers=world.alpha.auth("readonly"))
    assert response.status_code == 404 and error_code(response) == "not_found"


def test_sites_page_with_a_cursor(world: World) -> None:
    auth = world.alpha.auth("operator")
    for name in ("P1", "P2", "P3"):
        world.client.post("/api/v1/sites", json={"name": name, "timezone": "UTC"}, headers=auth)
    first = world.client.get("/api/v1/sites?limit=2", headers=auth).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = world.client.get(
        f"/api/v1/sites?limit=2&cursor={first['next_cursor']}", headers=auth
    ).json()
    assert [s["name"] for s in second["items"]] == ["P2", "P3"] and second["next_cursor"] is None


def test_a_bad_cursor_or_limit_is_422(world: World) -> None:
    auth = world.alpha.auth("readonly")
    assert world.client.get("/api/v1/sites?cursor=abc", headers=auth).status_code == 422
    assert world.client.get("/api/v1/sites?limit=0", headers=auth).status_code == 422
    assert world.client.get("/api/v1/sites?limit=501", headers=auth).status_code == 422


def test_buildings(world: World) -> None:
    auth = world.alpha.auth("operator")
    body = {"site_id": world.alpha.site_id, "name": "B2"}
    created = world.client.post("/api/v1/buildings", json=body, headers=auth)
    assert created.status_code == 201
    got = world.client.get(f"/api/v1/buildings/{created.json()['id']}", headers=auth)
    assert got.json()["name"] == "B2"
    listed = world.client.get(
        f"/api/v1/buildings?site_id={world.alpha.site_id}", headers=auth
    ).json()
    assert [b["name"] for b in listed["items"]] == ["Alpha B1", "B2"]
    assert world.client.get("/api/v1/buildings?site_id=999", headers=auth).json()["items"] == []


def test_building_in_another_organisations_site_is_404(world: World) -> None:
    body = {"site_id": world.bravo.site_id, "name": "B9"}
    response = world.client.post(
        "/api/v1/buildings", json=body, headers=world.alpha.auth("operator")
    )
    assert response.status_code == 404


def test_floors(world: World) -> None:
    auth = world.alpha.auth("operator")
    body = {"building_id": world.alpha.building_id, "name": "F2", "level": 2}
    created = world.client.post("/api/v1/floors", json=body, headers=auth)
    assert created.status_code == 201 and created.json()["level"] == 2
    assert (
        world.client.get(f"/api/v1/floors/{created.json()['id']}", headers=auth).status_code == 200
    )
    listed = world.client.get(f"/api/v1/floors?building_id={world.alpha.building_id}", headers=auth)
    assert len(listed.json()["items"]) == 2


def test_floor_level_out_of_range_is_422(world: World) -> None:
    body = {"building_id": world.alpha.building_id, "name": "F999", "level": 999}
    response = world.client.post("/api/v1/floors", json=body, headers=world.alpha.auth("operator"))
    assert response.status_code == 422


def test_rooms_with_filters_and_search(world: World) -> None:
    auth = world.alpha.auth("operator")
    body = {
        "floor_id": world.alpha.floor_id,
        "name": "Office 7",
        "kind": "office",
        "area_m2": "42.50",
    }
    created = world.client.post("/api/v1/rooms", json=body, headers=auth)
    assert created.status_code == 201
    room = created.json()
    assert (
        room["area_m2"] == "42.50" and room["site"] == "Alpha Park" and room["floor"] == "Alpha F1"
    )
    assert world.client.get(f"/api/v1/rooms/{room['id']}", headers=auth).json() == room
    offices = world.client.get("/api/v1/rooms?kind=office", headers=auth).json()["items"]
    assert [r["name"] for r in offices] == ["Office 7"]
    found = world.client.get("/api/v1/rooms?q=10", headers=auth).json()["items"]
    assert [r["name"] for r in found] == ["Alpha 101", "Alpha 102"]
    by_site = world.client.get(f"/api/v1/rooms?site_id={world.alpha.site_id}", headers=auth).json()
    assert len(by_site["items"]) == 3


def test_search_treats_like_wildcards_literally(world: World) -> None:
    found = world.client.get("/api/v1/rooms?q=%25", headers=world.alpha.auth()).json()["items"]
    assert found == []


def test_room_area_as_a_json_number_is_422(world: World) -> None:
    body = {"floor_id": world.alpha.floor_id, "name": "R", "kind": "shop", "area_m2": 12.5}
    response = world.client.post("/api/v1/rooms", json=body, headers=world.alpha.auth("operator"))
    assert response.status_code == 422


def test_customers(world: World) -> None:
    auth = world.alpha.auth("operator")
    body = {"name": "Wang Fang", "phone": "13811112222", "email": "wang@example.com"}
    created = world.client.post("/api/v1/customers", json=body, headers=auth)
    assert created.status_code == 201
    assert (
        world.client.get(f"/api/v1/customers/{created.json()['id']}", headers=auth).json()["phone"]
        == "+8613811112222"
    )
    by_phone = world.client.get("/api/v1/customers?q=1381111", headers=auth).json()["items"]
    assert [c["name"] for c in by_phone] == ["Wang Fang"]


def test_a_customer_reads_messages_in_zh_cn_unless_created_or_changed_to_english(
    world: World,
) -> None:
    auth = world.alpha.auth("operator")
    default = world.client.post("/api/v1/customers", json={"name": "Zhao"}, headers=auth).json()
    assert default["language"] == "zh-CN"
    body = {"name": "Anna", "email": "anna@example.com", "language": "en"}
    english = world.client.post("/api/v1/customers", json=body, headers=auth)
    assert english.status_code == 201 and english.json()["language"] == "en"

    changed = world.client.patch(
        f"/api/v1/customers/{default['id']}",
        json={"language": "en", "phone": "139 0000 0001"},
        headers=auth,
    )
    assert changed.status_code == 200
    assert (changed.json()["language"], changed.json()["phone"]) == ("en", "+8613900000001")
    assert changed.json()["name"] == "Zhao"  # what was not sent stays
    cleared = world.client.patch(
        f"/api/v1/customers/{default['id']}", json={"phone": ""}, headers=auth
    )
    assert cleared.json()["phone"] is None and cleared.json()["language"] == "en"


def test_a_customer_language_outside_zh_cn_and_en_is_422_and_changes_nothing(
    world: World,
) -> None:
    auth = world.alpha.auth("operator")
    bad = world.client.post("/api/v1/customers", json={"name": "X", "language": "fr"}, headers=auth)
    assert bad.status_code == 422
    path = f"/api/v1/customers/{world.alpha.customer_id}"
    before = world.client.get(path, headers=auth).json()
    assert world.client.patch(path, json={"language": "de"}, headers=auth).status_code == 422
    assert world.client.patch(path, json={}, headers=auth).status_code == 422
    assert world.client.get(path, headers=auth).json() == before


def test_changing_another_organisations_customer_is_404(world: World) -> None:
    response = world.client.patch(
        f"/api/v1/customers/{world.bravo.customer_id}",
        json={"language": "en"},
        headers=world.alpha.auth("operator"),
    )
    assert response.status_code == 404


def test_customer_with_a_bad_email_is_422(world: World) -> None:
    body = {"name": "X", "email": "not-an-address"}
    response = world.client.post(
        "/api/v1/customers", json=body, headers=world.alpha.auth("operator")
    )
    assert response.status_code == 422


def test_unknown_fields_are_refused(world: World) -> None:
    body = {"name": "X", "timezone": "UTC", "colour": "red"}
    response = world.client.post("/api/v1/sites", json=body, headers=world.alpha.auth("operator"))
    assert response.status_code == 422 and "colour" in response.json()["error"]["message"]


def test_cashier_cannot_create_places(world: World) -> None:
    body = {"name": "X", "timezone": "UTC"}
    response = world.client.post("/api/v1/sites", json=body, headers=world.alpha.auth("cashier"))
    assert response.status_code == 403 and error_code(response) == "forbidden"
