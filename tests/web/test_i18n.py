"""zh-CN and English: the switch, the default, every message translated, money and dates in each
locale's format, and the demo's login."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apikit import World
from babel.messages.extract import extract_from_dir
from consolekit import HTMX, Console

from meterdesk.access import service
from meterdesk.web import i18n
from meterdesk.web.demo_login import ensure_demo_login

WEB = Path(i18n.__file__).resolve().parent.parent


def test_the_language_switch_is_remembered_and_the_page_follows(world: World) -> None:
    console = Console(world.client, world.alpha, "admin", locale="en")
    assert "Room monitoring" in console.get("/rooms").text
    switched = console.post("/lang", {"locale": "zh-CN"})
    assert switched.status_code == 204 and switched.headers["HX-Refresh"] == "true"
    assert "meterdesk_lang=zh-CN" in switched.headers["set-cookie"]
    world.client.cookies.clear()  # keep only the server's cookies (httpx keeps both otherwise)
    world.client.cookies.update(switched.cookies)
    console = Console(world.client, world.alpha, "admin", locale="zh-CN")
    page = console.get("/rooms").text
    assert "房间监控" in page and '<html lang="zh-CN">' in page
    room = console.get(f"/rooms/{world.alpha.room_id}").text
    assert "¥100.00" in room and "充值" in room and "拉闸" in room


def test_without_a_choice_the_language_is_the_users_then_chinese(world: World) -> None:
    client = world.client
    client.cookies.clear()
    assert "登录" in client.get("/login").text  # nobody logged in: zh-CN
    console = Console(client, world.alpha, "admin")  # this user's stored locale is "en"
    client.cookies.delete("meterdesk_lang")
    assert "Log out" in console.get("/rooms").text


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
