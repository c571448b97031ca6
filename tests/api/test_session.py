"""Console login: session cookie, CSRF on changes, lockout after failed logins, logout, own
password change, and the caller description for sessions and tokens."""

from __future__ import annotations

from datetime import timedelta

from apikit import Org, World, error_code, password_of
from starlette.testclient import TestClient

from meterdesk.api.context import CSRF_COOKIE, SESSION_COOKIE


def log_in(
    client: TestClient, org: Org, role: str = "operator", **extra: object
) -> dict[str, object]:
    username = org.username(role)
    response = client.post(
        "/api/v1/session", json={"username": username, "password": password_of(username), **extra}
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_login_sets_an_httponly_session_cookie_and_answers_the_csrf_token(world: World) -> None:
    body = log_in(world.client, world.alpha)
    assert body["organisation_id"] == world.alpha.id and body["role"] == "operator"
    assert body["via"] == "session" and body["csrf_token"]
    cookies = world.client.cookies
    assert cookies.get(SESSION_COOKIE) and cookies.get(CSRF_COOKIE) == body["csrf_token"]


def test_session_cookie_flags(world: World) -> None:
    username = world.alpha.username("cashier")
    response = world.client.post(
        "/api/v1/session", json={"username": username, "password": password_of(username)}
    )
    headers = response.headers.get_list("set-cookie")
    session = next(h for h in headers if h.startswith(SESSION_COOKIE))
    csrf = next(h for h in headers if h.startswith(CSRF_COOKIE))
    assert "HttpOnly" in session and "samesite=lax" in session.lower()
    assert "HttpOnly" not in csrf


def test_wrong_password_answers_401_without_saying_which_part_was_wrong(world: World) -> None:
    for username in ("alpha-operator", "nobody-here"):
        response = world.client.post(
            "/api/v1/session", json={"username": username, "password": "wrong password!"}
        )
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "wrong username or password"


def test_five_failures_lock_the_username_and_address_until_the_window_passes(world: World) -> None:
    username = world.alpha.username("operator")
    wrong = {"username": username, "password": "not the password"}
    for _ in range(5):
        assert world.client.post("/api/v1/session", json=wrong).status_code == 401
    right = {"username": username, "password": password_of(username)}
    locked = world.client.post("/api/v1/session", json=right)
    assert locked.status_code == 429 and error_code(locked) == "rate_limited"
    assert int(locked.headers["Retry-After"]) > 0
    world.clock.advance(timedelta(minutes=16))
    assert world.client.post("/api/v1/session", json=right).status_code == 200


def test_a_success_resets_the_failure_count(world: World) -> None:
    username = world.alpha.username("cashier")
    wrong = {"username": username, "password": "not the password"}
    right = {"username": username, "password": password_of(username)}
    for _ in range(4):
        world.client.post("/api/v1/session", json=wrong)
    assert world.client.post("/api/v1/session", json=right).status_code == 200
    for _ in range(4):
        world.client.post("/api/v1/session", json=wrong)
    assert world.client.post("/api/v1/session", json=right).status_code == 200


def test_a_session_change_needs_the_csrf_header(world: World) -> None:
    body = log_in(world.client, world.alpha, "operator")
    site = {"name": "Csrf Park", "timezone": "Asia/Shanghai"}
    refused = world.client.post("/api/v1/sites", json=site)
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
    wrong = world.client.post("/api/v1/sites", json=site, headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403
    done = world.client.post(
        "/api/v1/sites", json=site, headers={"X-CSRF-Token": str(body["csrf_token"])}
    )
    assert done.status_code == 201
    assert world.client.get("/api/v1/sites").status_code == 200  # reads need no token


def test_get_session_describes_a_session_and_a_token(world: World) -> None:
    by_token = world.client.get("/api/v1/session", headers=world.alpha.auth("cashier")).json()
    assert by_token["via"] == "token" and by_token["role"] == "cashier"
    assert (
        "money.write" in by_token["permissions"] and "places.write" not in by_token["permissions"]
    )
    log_in(world.client, world.alpha, "readonly")
    by_session = world.client.get("/api/v1/session").json()
    assert by_session["via"] == "session" and by_session["permissions"] == ["audit.read", "read"]


def test_get_session_without_credentials_is_401(world: World) -> None:
    assert world.client.get("/api/v1/session").status_code == 401


def test_logout_ends_the_session(world: World) -> None:
    body = log_in(world.client, world.alpha)
    response = world.client.delete(
        "/api/v1/session", headers={"X-CSRF-Token": str(body["csrf_token"])}
    )
    assert response.status_code == 204
    world.client.cookies.clear()
    # the old cookie value no longer works even if replayed
    assert world.client.get("/api/v1/session").status_code == 401


def test_logout_with_a_token_is_a_bad_request(world: World) -> None:
    response = world.client.delete("/api/v1/session", headers=world.alpha.auth())
    assert response.status_code == 400 and error_code(response) == "bad_request"


def test_an_ended_session_cookie_is_refused(world: World) -> None:
    body = log_in(world.client, world.alpha)
    cookie = world.client.cookies.get(SESSION_COOKIE)
    world.client.delete("/api/v1/session", headers={"X-CSRF-Token": str(body["csrf_token"])})
    world.client.cookies.set(SESSION_COOKIE, str(cookie))
    assert world.client.get("/api/v1/session").status_code == 401


def test_sessions_expire_when_idle(world: World) -> None:
    log_in(world.client, world.alpha)
    world.clock.advance(timedelta(hours=13))
    assert world.client.get("/api/v1/session").status_code == 401


def test_login_into_another_organisation_is_404(world: World) -> None:
    username = world.alpha.username("admin")
    response = world.client.post(
        "/api/v1/session",
        json={
            "username": username,
            "password": password_of(username),
            "organisation_id": world.bravo.id,
        },
    )
    assert response.status_code == 404


def test_change_own_password(world: World) -> None:
    body = log_in(world.client, world.alpha, "cashier")
    headers = {"X-CSRF-Token": str(body["csrf_token"])}
    old = password_of(world.alpha.username("cashier"))
    change = {"current_password": old, "new_password": "a brand new password"}
    assert (
        world.client.put("/api/v1/session/password", json=change, headers=headers).status_code
        == 204
    )
    assert world.client.get("/api/v1/session").status_code == 200  # this session stays
    world.client.cookies.clear()
    login = {"username": world.alpha.username("cashier"), "password": "a brand new password"}
    assert world.client.post("/api/v1/session", json=login).status_code == 200


def test_change_own_password_needs_the_current_one(world: World) -> None:
    change = {"current_password": "not it at all", "new_password": "a brand new password"}
    response = world.client.put("/api/v1/session/password", json=change, headers=world.alpha.auth())
    assert response.status_code == 422


def test_the_users_language_is_read_and_set_through_the_session(world: World) -> None:
    body = log_in(world.client, world.alpha, "cashier")
    assert body["locale"] == "en"
    csrf = {"X-CSRF-Token": str(body["csrf_token"])}
    refused = world.client.put("/api/v1/session/locale", json={"locale": "zh-CN"})
    assert refused.status_code == 403
    changed = world.client.put("/api/v1/session/locale", json={"locale": "zh-CN"}, headers=csrf)
    assert changed.status_code == 200 and changed.json()["locale"] == "zh-CN"
    world.client.cookies.clear()
    assert log_in(world.client, world.alpha, "cashier")["locale"] == "zh-CN"  # stored on the user
    bad = world.client.put(
        "/api/v1/session/locale", json={"locale": "fr"}, headers=world.alpha.auth("cashier")
    )
    assert bad.status_code == 422


def test_an_integration_sets_its_users_language_with_a_token(world: World) -> None:
    headers = world.alpha.auth("readonly")
    answer = world.client.put("/api/v1/session/locale", json={"locale": "zh-CN"}, headers=headers)
    assert answer.status_code == 200 and answer.json()["via"] == "token"
    assert world.client.get("/api/v1/session", headers=headers).json()["locale"] == "zh-CN"
