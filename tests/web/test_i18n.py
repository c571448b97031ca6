"""zh-CN and English: the switch, the default, every message translated, money and dates in each
locale's format, and the demo's login."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apikit import World, password_of
from babel.messages.extract import extract_from_dir
from consolekit import HTMX, Console

from meterdesk.access import service
from meterdesk.web import i18n
from meterdesk.web.demo_login import ensure_demo_login

WEB = Path(i18n.__file__).resolve().parent.parent


def test_the_language_switch_is_stored_on_the_user_and_follows_them_to_any_browser(
    world: World,
) -> None:
    console = Console(world.client, world.alpha, "admin")  # this user's stored locale is "en"
    assert "Room monitoring" in console.get("/rooms").text
    switched = console.post("/lang", {"locale": "zh-CN"})
    assert switched.status_code == 204 and switched.headers["HX-Refresh"] == "true"
    assert "房间监控" in console.get("/rooms").text

    console = Console(world.client, world.alpha, "admin")  # another browser: no cookies at all
    page = console.get("/rooms").text
    assert "房间监控" in page and '<html lang="zh-CN">' in page
    room = console.get(f"/rooms/{world.alpha.room_id}").text
    assert "¥100.00" in room and "充值" in room and "拉闸" in room
    session = console.client.get("/api/v1/session").json()
    assert session["locale"] == "zh-CN"


def test_after_login_the_users_language_wins_over_a_browsers_cookie(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")  # stored locale "en"
    world.client.cookies.set("meterdesk_lang", "zh-CN")
    assert "Log out" in console.get("/rooms").text
    missing = console.get("/rooms/999999")  # error pages too
    assert missing.status_code == 404 and '<html lang="en">' in missing.text


def test_before_login_the_switch_is_a_cookie_for_the_login_page(world: World) -> None:
    client = world.client
    client.cookies.clear()
    assert "登录" in client.get("/login").text  # nobody logged in, nothing chosen: zh-CN
    switched = client.post("/lang", data={"locale": "en"})
    assert switched.status_code == 204
    assert "meterdesk_lang=en" in switched.headers["set-cookie"]
    client.cookies.update(switched.cookies)
    assert "Log in" in client.get("/login").text


def test_a_logged_in_language_switch_needs_the_csrf_header_and_changes_nothing_without(
    world: World,
) -> None:
    console = Console(world.client, world.alpha, "admin")
    refused = console.post("/lang", {"locale": "zh-CN"}, csrf=False)
    assert refused.status_code == 403
    assert console.client.get("/api/v1/session").json()["locale"] == "en"


def test_logging_in_with_the_form_sets_the_login_pages_language_to_the_users(
    world: World,
) -> None:
    client = world.client
    client.cookies.clear()
    client.cookies.set("meterdesk_lang", "zh-CN")
    form = client.get("/login")
    token = form.text.split('name="login_token" value="')[1].split('"')[0]
    username = world.alpha.username("operator")
    answer = client.post(
        "/login",
        data={"username": username, "password": password_of(username), "login_token": token},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert "meterdesk_lang=en" in answer.headers["set-cookie"]


def test_every_message_has_a_chinese_translation() -> None:
    """What ``pybabel extract -F src/meterdesk/web/i18n/babel.cfg`` finds, all in the catalog."""
    templates = {"extensions": "jinja2.ext.i18n", "trim_blocks": "True", "lstrip_blocks": "True"}
    found = extract_from_dir(
        str(WEB),
        method_map=[("**.py", "python"), ("**/templates/**.html", "jinja2")],
        options_map={"**/templates/**.html": templates},
    )
    wanted = {message[2] for message in found if isinstance(message[2], str)}
    assert len(wanted) > 250
    translated = {k for k, v in i18n.catalog_messages("zh-CN").items() if v.strip()}
    assert sorted(wanted - translated) == []


@pytest.mark.parametrize(
    ("locale", "amount", "shown"),
    [
        ("zh-CN", Decimal("1234.5"), "¥1,234.50"),
        ("zh-CN", Decimal("-0.05"), "-¥0.05"),
        ("en", Decimal("1234567.891"), "CNY 1,234,567.89"),
        ("en", Decimal("-12"), "-CNY 12.00"),
    ],
)
def test_money_has_two_places_and_the_locales_mark(
    locale: str, amount: Decimal, shown: str
) -> None:
    assert i18n.formatter(locale).money(amount) == shown


def test_fen_are_shown_as_yuan() -> None:
    assert i18n.formatter("zh-CN").money(123456, fen=True) == "¥1,234.56"


def test_instants_are_shown_in_the_sites_zone_in_the_locales_format() -> None:
    instant = datetime(2026, 11, 2, 16, 30, tzinfo=UTC)
    shanghai, berlin = ZoneInfo("Asia/Shanghai"), ZoneInfo("Europe/Berlin")
    assert i18n.formatter("zh-CN").datetime(instant, shanghai) == "2026年11月3日 00:30"
    assert i18n.formatter("zh-CN").datetime(instant, shanghai, part="date") == "2026年11月3日"
    assert (
        i18n.formatter("en").datetime(instant, berlin).replace("\u202f", " ")
        == "Nov 2, 2026, 5:30 PM"
    )


def test_the_demo_login_is_an_admin_with_a_new_password_each_time(world: World) -> None:
    first = ensure_demo_login(world.db, world.alpha.id)
    second = ensure_demo_login(world.db, world.alpha.id)
    assert first[0] == second[0] and first[1] != second[1]
    user_id = service.user_id_by_username(world.db, username=first[0])
    roles = {
        m.organisation_id: m.role.value
        for m in service.identity(world.db, user_id=user_id).memberships
    }
    assert roles == {world.alpha.id: "admin"}
    answer = world.client.post(
        "/api/v1/session", json={"username": second[0], "password": second[1]}
    )
    assert answer.status_code == 200


def test_error_messages_in_fragments_are_shown_not_swallowed(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    missing = console.get("/rooms/999999/dialog/recharge", **HTMX)
    assert missing.status_code == 404 and 'class="alert error"' in missing.text
    page = console.get("/rooms/999999")
    assert page.status_code == 404 and "<html" in page.text
