"""Organisations, members and roles, API tokens."""

from __future__ import annotations

from apikit import FAST_HASHER, World, error_code, password_of

from meterdesk.access import service


def test_list_organisations_shows_only_mine_with_my_role(world: World) -> None:
    response = world.client.get("/api/v1/organisations", headers=world.alpha.auth("cashier"))
    assert response.status_code == 200
    assert response.json() == [
        {
            "id": world.alpha.id,
            "name": "Alpha Property",
            "timezone": "Asia/Shanghai",
            "role": "cashier",
        }
    ]


def test_get_organisation(world: World) -> None:
    mine = world.client.get(f"/api/v1/organisations/{world.alpha.id}", headers=world.alpha.auth())
    assert mine.status_code == 200 and mine.json()["role"] == "admin"
    other = world.client.get(f"/api/v1/organisations/{world.bravo.id}", headers=world.alpha.auth())
    assert other.status_code == 404


def test_only_a_platform_admin_creates_organisations(world: World) -> None:
    body = {"name": "Gamma Property", "timezone": "Asia/Shanghai"}
    refused = world.client.post("/api/v1/organisations", json=body, headers=world.alpha.auth())
    assert refused.status_code == 403
    service.create_user(
        world.db,
        user=service.NewUser(username="root", password=password_of("root"), is_platform_admin=True),
        hasher=FAST_HASHER,
    )
    login = {"username": "root", "password": password_of("root")}
    session = world.client.post("/api/v1/session", json=login).json()
    assert session["organisation_id"] is None
    assert world.client.get("/api/v1/sites").status_code == 403  # no organisation yet
    created = world.client.post(
        "/api/v1/organisations", json=body, headers={"X-CSRF-Token": session["csrf_token"]}
    )
    assert created.status_code == 201 and created.json()["role"] == "admin"


def test_create_user_and_log_in_as_them(world: World) -> None:
    body = {"username": "carol", "password": "carol's long password", "role": "cashier"}
    created = world.client.post("/api/v1/users", json=body, headers=world.alpha.auth())
    assert created.status_code == 201, created.text
    assert created.json()["role"] == "cashier" and created.json()["username"] == "carol"
    login = world.client.post(
        "/api/v1/session", json={"username": "carol", "password": "carol's long password"}
    )
    assert login.status_code == 200 and login.json()["organisation_id"] == world.alpha.id


def test_create_user_refuses_a_taken_name_and_a_short_password(world: World) -> None:
    taken = {"username": "bravo-admin", "password": "a long password", "role": "cashier"}
    response = world.client.post("/api/v1/users", json=taken, headers=world.alpha.auth())
    assert response.status_code == 409
    short = {"username": "dave", "password": "short", "role": "cashier"}
    response = world.client.post("/api/v1/users", json=short, headers=world.alpha.auth())
    assert response.status_code == 422


def test_list_and_get_users(world: World) -> None:
    page = world.client.get("/api/v1/users?limit=3", headers=world.alpha.auth()).json()
    assert [u["username"] for u in page["items"]] == [
        "alpha-admin",
        "alpha-operator",
        "alpha-cashier",
    ]
    rest = world.client.get(
        f"/api/v1/users?cursor={page['next_cursor']}", headers=world.alpha.auth()
    )
    assert [u["username"] for u in rest.json()["items"]] == ["alpha-readonly"]
    one = world.client.get(
        f"/api/v1/users/{world.alpha.user_ids['cashier']}", headers=world.alpha.auth()
    )
    assert one.json()["role"] == "cashier"
    assert (
        world.client.get("/api/v1/users", headers=world.alpha.auth("operator")).status_code == 403
    )


def test_set_role_changes_what_the_member_may_do(world: World) -> None:
    user_id = world.alpha.user_ids["readonly"]
    response = world.client.put(
        f"/api/v1/users/{user_id}/role", json={"role": "cashier"}, headers=world.alpha.auth()
    )
    assert response.status_code == 200 and response.json()["role"] == "cashier"
    me = world.client.get("/api/v1/session", headers=world.alpha.auth("readonly")).json()
    assert "money.write" in me["permissions"]  # the token follows the membership's role


def test_the_last_admin_cannot_be_demoted_or_removed(world: World) -> None:
    admin = world.alpha.user_ids["admin"]
    demote = world.client.put(
        f"/api/v1/users/{admin}/role", json={"role": "operator"}, headers=world.alpha.auth()
    )
    assert demote.status_code == 409
    assert (
        world.client.delete(f"/api/v1/users/{admin}", headers=world.alpha.auth()).status_code == 409
    )


def test_removing_a_member_ends_their_tokens(world: World) -> None:
    cashier = world.alpha.user_ids["cashier"]
    assert (
        world.client.delete(f"/api/v1/users/{cashier}", headers=world.alpha.auth()).status_code
        == 204
    )
    assert (
        world.client.get("/api/v1/session", headers=world.alpha.auth("cashier")).status_code == 401
    )
    assert (
        world.client.get(f"/api/v1/users/{cashier}", headers=world.alpha.auth()).status_code == 404
    )


def test_admin_resets_a_members_password(world: World) -> None:
    cashier = world.alpha.user_ids["cashier"]
    response = world.client.put(
        f"/api/v1/users/{cashier}/password",
        json={"password": "reset by the admin"},
        headers=world.alpha.auth(),
    )
    assert response.status_code == 204
    login = {"username": "alpha-cashier", "password": "reset by the admin"}
    assert world.client.post("/api/v1/session", json=login).status_code == 200


def test_admin_cannot_reset_the_password_of_someone_in_another_organisation_too(
    world: World,
) -> None:
    shared = world.alpha.user_ids["operator"]
    service.add_member(
        world.db, organisation_id=world.bravo.id, user_id=shared, role="readonly", actor="t"
    )
    response = world.client.put(
        f"/api/v1/users/{shared}/password",
        json={"password": "taken over now"},
        headers=world.alpha.auth(),
    )
    assert response.status_code == 403


def test_tokens_are_issued_listed_and_revoked(world: World) -> None:
    body = {"name": "uplink", "user_id": world.alpha.user_ids["operator"], "role": "readonly"}
    made = world.client.post("/api/v1/tokens", json=body, headers=world.alpha.auth())
    assert made.status_code == 201
    token = made.json()["token"]
    assert token.startswith("mdk_") and made.json()["prefix"] == token[:12]
    narrowed = {"Authorization": f"Bearer {token}"}
    me = world.client.get("/api/v1/session", headers=narrowed).json()
    assert (me["role"], me["token_role"]) == ("operator", "readonly")
    assert me["permissions"] == ["read"]  # operator ∩ readonly
    site = {"name": "Nope", "timezone": "Asia/Shanghai"}
    assert world.client.post("/api/v1/sites", json=site, headers=narrowed).status_code == 403
    listed = world.client.get("/api/v1/tokens", headers=world.alpha.auth()).json()["items"]
    assert any(t["id"] == made.json()["id"] and "token" not in t for t in listed)
    revoke = world.client.delete(f"/api/v1/tokens/{made.json()['id']}", headers=world.alpha.auth())
    assert revoke.status_code == 204
    assert world.client.get("/api/v1/session", headers=narrowed).status_code == 401


def test_token_for_a_non_member_is_404_and_a_past_expiry_422(world: World) -> None:
    other = {"name": "x", "user_id": world.bravo.user_ids["admin"]}
    assert (
        world.client.post("/api/v1/tokens", json=other, headers=world.alpha.auth()).status_code
        == 404
    )
    past = {"name": "x", "expires_at": "2020-01-01T00:00:00Z"}
    response = world.client.post("/api/v1/tokens", json=past, headers=world.alpha.auth())
    assert response.status_code == 422 and error_code(response) == "validation_error"


def test_an_unknown_token_is_401(world: World) -> None:
    response = world.client.get("/api/v1/sites", headers={"Authorization": "Bearer mdk_nope"})
    assert response.status_code == 401 and error_code(response) == "unauthenticated"


def test_revoking_an_unknown_token_is_404(world: World) -> None:
    assert world.client.delete("/api/v1/tokens/9999", headers=world.alpha.auth()).status_code == 404
