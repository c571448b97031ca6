"""Every console page renders for every role; what a role may not do is neither shown nor done;
another organisation's ids are not found; changes need the CSRF header; logging in and out."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from apikit import ROLES, Org, World
from consolekit import HTMX, Console
from sqlalchemy import update

from meterdesk.api.context import CSRF_COOKIE, SESSION_COOKIE
from meterdesk.billing.tables import account_controls, accounts


def pages(org: Org) -> list[str]:
    return [
        "/rooms",
        "/rooms?view=table",
        "/rooms?state=normal&q=101",
        f"/rooms?building={org.building_id}&floor={org.floor_id}",
        f"/rooms/{org.room_id}",
        f"/rooms/{org.spare_room_id}",
        f"/rooms/{org.room_id}/status",
        f"/rooms/{org.room_id}/activity",
        f"/accounts/{org.account_id}/statement",
        f"/accounts/{org.account_id}/statement?detail=entries&from=2020-01-01&to=2020-12-31",
        f"/accounts/{org.account_id}/statement.csv",
        "/accounts/presets",
        "/accounts/import",
        "/tariffs",
        "/tariffs/new",
        f"/tariffs/{org.tariff_id}",
        "/meters",
        "/meters?connection=lost&q=M",
        "/gateways",
        "/commands",
        "/commands?status=failed",
        "/quarantine",
        "/quarantine?status=released",
    ]


@pytest.mark.parametrize("role", ROLES)
def test_every_page_renders_for_every_role(world: World, role: str) -> None:
    console = Console(world.client, world.alpha, role)
    for path in pages(world.alpha):
        response = console.get(path)
        assert response.status_code == 200, (
            f"{role} {path}: {response.status_code} {response.text[:300]}"
        )
        assert "Bravo" not in response.text, path


@pytest.mark.parametrize(
    ("role", "audit", "wizard"),
    [("admin", 200, 200), ("operator", 403, 200), ("cashier", 403, 403), ("readonly", 200, 403)],
)
def test_pages_that_need_a_permission(world: World, role: str, audit: int, wizard: int) -> None:
    console = Console(world.client, world.alpha, role)
    assert console.get("/audit").status_code == audit
    assert console.get("/accounts/open").status_code == wizard


@pytest.mark.parametrize(
    ("role", "shown"),
    [
        ("admin", {"recharge", "refund", "tariff", "policy", "relay_trip", "relay_close"}),
        ("operator", {"tariff", "policy", "relay_trip", "relay_close"}),
        ("cashier", {"recharge", "refund"}),
        ("readonly", set()),
    ],
)
def test_a_room_shows_only_the_actions_the_role_may_do(
    world: World, role: str, shown: set[str]
) -> None:
    console = Console(world.client, world.alpha, role)
    html = console.get(f"/rooms/{world.alpha.room_id}").text
    every = {"recharge", "refund", "tariff", "policy", "relay_trip", "relay_close"}
    for action in every:
        assert (f'data-action="{action}"' in html) == (action in shown), (role, action)


@pytest.mark.parametrize("role", ["operator", "readonly"])
def test_money_is_refused_on_the_server_for_roles_without_it(world: World, role: str) -> None:
    console = Console(world.client, world.alpha, role)
    room = world.alpha.room_id
    response = console.post(
        f"/rooms/{room}/money/recharge", {"amount": "10", "idempotency_key": "k-12345678"}
    )
    assert response.status_code == 403
    assert console.get(f"/rooms/{room}/dialog/recharge", **HTMX).status_code == 403


@pytest.mark.parametrize("role", ["cashier", "readonly"])
def test_supply_commands_are_refused_for_roles_without_them(world: World, role: str) -> None:
    console = Console(world.client, world.alpha, role)
    data = {"meter_id": world.alpha.meter_id, "kind": "relay_trip", "idempotency_key": "k-12345678"}
    assert console.post(f"/rooms/{world.alpha.room_id}/command", data).status_code == 403
    policy = {"protect": "on", "idempotency_key": "k-87654321"}
    assert console.post(f"/rooms/{world.alpha.room_id}/policy", policy).status_code == 403
    tariff = {
        "meter_id": world.alpha.meter_id,
        "tariff_id": world.alpha.tariff_id,
        "idempotency_key": "k-11223344",
    }
    assert console.post(f"/rooms/{world.alpha.room_id}/tariff", tariff).status_code == 403
    assert console.get(f"/rooms/{world.alpha.room_id}/dialog/tariff", **HTMX).status_code == 403


def test_another_organisations_ids_are_not_found(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    bravo = world.bravo
    for path in (
        f"/rooms/{bravo.room_id}",
        f"/rooms/{bravo.room_id}/status",
        f"/rooms/{bravo.room_id}/activity",
        f"/rooms/{bravo.room_id}/dialog/recharge",
        f"/accounts/{bravo.account_id}/statement",
        f"/accounts/{bravo.account_id}/statement.csv",
        f"/rooms/{bravo.room_id}/dialog/tariff",
        f"/tariffs/{bravo.tariff_id}",
        f"/api/v1/monitor/rooms?building_id={bravo.building_id}",
        f"/rooms?building={bravo.building_id}",
    ):
        response = console.get(path)
        assert response.status_code in (404, 200), path
        assert "Bravo" not in response.text, path
        if "?" not in path or "api" in path:
            assert response.status_code == 404, path
    posts = [
        (
            f"/rooms/{bravo.room_id}/money/recharge",
            {"amount": "5", "idempotency_key": "x-12345678"},
        ),
        (
            f"/rooms/{bravo.room_id}/command",
            {"meter_id": bravo.meter_id, "kind": "relay_trip", "idempotency_key": "y-12345678"},
        ),
        (
            f"/rooms/{world.alpha.room_id}/command",
            {"meter_id": bravo.meter_id, "kind": "relay_trip", "idempotency_key": "z-12345678"},
        ),
        (f"/rooms/{bravo.room_id}/policy", {"protect": "on", "idempotency_key": "w-12345678"}),
        (
            f"/rooms/{bravo.room_id}/tariff",
            {
                "meter_id": bravo.meter_id,
                "tariff_id": bravo.tariff_id,
                "idempotency_key": "t-12345678",
            },
        ),
        (
            f"/rooms/{world.alpha.room_id}/tariff",
            {
                "meter_id": bravo.meter_id,
                "tariff_id": bravo.tariff_id,
                "idempotency_key": "t-56781234",
            },
        ),
        (
            f"/rooms/{world.alpha.room_id}/tariff",
            {
                "meter_id": world.alpha.meter_id,
                "tariff_id": bravo.tariff_id,
                "idempotency_key": "t-90123456",
            },
        ),
        (f"/quarantine/{bravo.quarantine_id}/release", {"idempotency_key": "v-12345678"}),
        (f"/accounts/presets/{bravo.preset_id}/open", {"idempotency_key": "u-12345678"}),
    ]
    for path, data in posts:
        response = console.post(path, data)
        assert response.status_code == 404, (path, response.status_code, response.text[:200])
        assert "Bravo" not in response.text


def test_a_change_without_the_csrf_header_is_refused_and_changes_nothing(world: World) -> None:
    console = Console(world.client, world.alpha, "cashier")
    before = world.client.get(f"/api/v1/accounts/{world.alpha.account_id}/balance").json()[
        "balance"
    ]
    data = {"amount": "10", "idempotency_key": "csrf-12345678"}
    response = console.post(f"/rooms/{world.alpha.room_id}/money/recharge", data, csrf=False)
    assert response.status_code == 403
    assert "X-CSRF-Token" in response.text
    after = world.client.get(f"/api/v1/accounts/{world.alpha.account_id}/balance").json()["balance"]
    assert before == after


def test_pages_send_you_to_the_login_and_htmx_requests_are_told_to(world: World) -> None:
    client = world.client
    client.cookies.clear()
    page = client.get("/rooms", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/rooms"
    fragment = client.get("/rooms", headers=HTMX, follow_redirects=False)
    assert fragment.status_code == 401
    assert fragment.headers["HX-Redirect"].startswith("/login")
    assert client.get("/api/v1/monitor/rooms").json()["error"]["code"] == "unauthenticated"


def test_the_login_form_logs_in_and_logout_ends_the_session(world: World) -> None:
    client = world.client
    client.cookies.clear()
    form = client.get("/login?next=/tariffs")
    token = form.text.split('name="login_token" value="')[1].split('"')[0]
    username = world.alpha.username("operator")
    wrong = client.post(
        "/login", data={"username": username, "password": "nope-nope-nope", "login_token": token}
    )
    assert wrong.status_code == 401
    form = client.get("/login")
    token = form.text.split('name="login_token" value="')[1].split('"')[0]
    data = {
        "username": username,
        "password": f"pw-{username}-long-enough",
        "login_token": token,
        "next": "//evil.example",
    }
    answer = client.post("/login", data=data, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/rooms"  # never off-site
    assert client.cookies.get(SESSION_COOKIE)
    csrf = client.cookies.get(CSRF_COOKIE)
    assert csrf and f'content="{csrf}"' in client.get("/rooms").text
    out = client.post("/logout", headers={**HTMX, "X-CSRF-Token": csrf})
    assert out.status_code == 204
    assert out.headers["HX-Redirect"] == "/login"
    assert client.get("/rooms", follow_redirects=False).status_code == 303


def test_the_login_form_needs_its_own_token(world: World) -> None:
    client = world.client
    client.cookies.clear()
    username = world.alpha.username("admin")
    data = {"username": username, "password": f"pw-{username}-long-enough", "login_token": "forged"}
    assert client.post("/login", data=data, follow_redirects=False).status_code == 400


@pytest.mark.parametrize(
    ("locale", "sent", "source"),
    [("zh-CN", "2026年11月3日 00:30", "开户读数"), ("en", "Nov 3, 2026, 12:30", "Opening reading")],
)
def test_a_rooms_alarms_and_readings_speak_the_users_language(
    world: World, locale: str, sent: str, source: str
) -> None:
    """The alarm table showed the stored ISO instant and the readings their stored source code
    ("2026-11-02T16:30:00+00:00", "opening"); both are now in the user's language and the
    site's zone, as every other time on the page."""
    state = {
        "supply": "on",
        "alarms": {"1": [2, "2026-11-02T16:30:00+00:00"]},
        "emergency_outstanding_fen": 0,
        "protect_sent": False,
    }
    console = Console(world.client, world.alpha, "admin", locale=locale)
    policy = {"protect": "on", "idempotency_key": "k-policy-1"}  # the account's control row
    assert console.post(f"/rooms/{world.alpha.room_id}/policy", policy).status_code == 200
    with world.db.transaction() as conn:
        conn.execute(
            update(account_controls)
            .where(account_controls.c.account_id == world.alpha.account_id)
            .values(state=json.dumps(state))
        )
    html = console.get(f"/rooms/{world.alpha.room_id}/activity").text.replace("\u202f", " ")
    assert sent in html
    assert "2026-11-02T16:30" not in html
    assert source in html
    assert ">opening<" not in html


def test_a_young_accounts_balance_chart_starts_when_it_opened(world: World) -> None:
    """The 30-day chart drew a flat zero for the days before a younger account existed."""
    week_ago = world.db.clock() - timedelta(days=7)
    with world.db.transaction() as conn:
        conn.execute(
            update(accounts)
            .where(accounts.c.id == world.alpha.account_id)
            .values(opened_at=week_ago)
        )
    html = Console(world.client, world.alpha, "readonly").get(f"/rooms/{world.alpha.room_id}").text
    points = json.loads(html.split('id="balance-points">', 1)[1].split("</script>", 1)[0])
    assert points[0][0] == int(week_ago.timestamp()) * 1000
