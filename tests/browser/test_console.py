"""An operator's day in a real browser: log in, find a room, recharge and watch the balance,
cut and restore supply and watch the relay, change a room's tariff, switch language (and find
it again after logging in from a fresh browser)."""

from __future__ import annotations

from typing import Any

import pytest
from apikit import flat_tariff
from browserkit import Site, screenshot_dir
from devicefake import confirm_open_commands

from meterdesk.tariffs import service as tariffs

pytestmark = pytest.mark.browser


def log_in(page: Any, site: Site, role: str = "admin") -> None:
    username = site.alpha.username(role)
    page.goto(f"{site.url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", f"pw-{username}-long-enough")
    page.click("button[type=submit]")
    page.wait_for_url("**/rooms")


def test_log_in_find_a_room_recharge_cut_restore_and_switch_language(
    site: Site, browser: Any
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    log_in(page, site)
    page.fill("input[name=q]", "101")
    page.wait_for_function("document.querySelectorAll('a.tile').length === 1")  # the search applied
    assert "q=101" in page.url  # the search is in the address (back button, bookmarks)
    page.click("a.tile[data-room='Alpha 101']")
    page.wait_for_url(f"**/rooms/{site.alpha.room_id}")
    balance = page.locator("[data-balance]")
    assert balance.inner_text() == "CNY 100.00"

    page.click("[data-action=recharge]")
    page.fill("dialog input[name=amount]", "25.50")
    page.click("dialog button[type=submit]")
    page.wait_for_selector("[data-result=recharge]")
    page.click("dialog .form-actions [data-close-dialog]")
    page.wait_for_function("document.querySelector('[data-balance]').innerText === 'CNY 125.50'")

    for action, relay in (("relay_trip", "open"), ("relay_close", "closed")):
        page.click(f"[data-action={action}]")
        page.click("dialog button[type=submit]")
        page.wait_for_selector("[data-result=command][data-status=pending]")
        assert confirm_open_commands(site.db) == 1
        page.wait_for_selector("[data-result=command][data-status=confirmed]", timeout=10_000)
        page.click("dialog .form-actions [data-close-dialog]")
        page.wait_for_selector(f"[data-relay={relay}]", timeout=10_000)
    if (folder := screenshot_dir()) is not None:
        page.screenshot(path=str(folder / "browser-room-after-restore.png"))

    page.click("[data-lang='zh-CN']")
    page.wait_for_function("document.documentElement.lang === 'zh-CN'")
    assert "房间监控" in page.inner_text("nav")
    assert page.locator("[data-balance]").inner_text() == "¥125.50"


def test_a_readonly_user_sees_no_actions_and_an_error_is_shown(site: Site, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 800, "height": 900})
    log_in(page, site, "readonly")
    page.goto(f"{site.url}/rooms/{site.alpha.room_id}")
    assert page.locator(".actions [data-action]").count() == 0
    page.goto(f"{site.url}/rooms/{site.bravo.room_id}")  # another organisation's room
    assert page.locator(".alert.error").count() == 1
    assert "Bravo" not in page.content()


def test_the_chosen_language_follows_the_user_to_a_fresh_browser(site: Site, browser: Any) -> None:
    """The operator's stored language is English; switching to Chinese stores it on the user,
    so after logging out and in again in a new browser context (no cookies) it is Chinese."""
    first = browser.new_context(viewport={"width": 1280, "height": 860})
    page = first.new_page()
    log_in(page, site, "operator")
    assert "Rooms" in page.inner_text("nav")
    page.click("[data-lang='zh-CN']")
    page.wait_for_function("document.documentElement.lang === 'zh-CN'")
    page.click("[data-action=logout]")
    page.wait_for_url("**/login**")
    first.close()

    fresh = browser.new_context(viewport={"width": 1280, "height": 860})
    assert fresh.cookies() == []
    page = fresh.new_page()
    log_in(page, site, "operator")
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert "房间监控" in page.inner_text("nav")
    page.goto(f"{site.url}/rooms/{site.alpha.room_id}")
    assert "充值" not in page.inner_text(".actions")  # an operator: no money buttons
    assert "改电价" in page.inner_text(".actions")
    fresh.close()


def test_an_operator_changes_a_rooms_tariff_and_sees_it_on_the_room(
    site: Site, browser: Any
) -> None:
    dearer = tariffs.create_tariff(
        site.db,
        organisation_id=site.alpha.id,
        name="Alpha Dearer",
        definition=flat_tariff("0.9000"),
        actor="test",
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    log_in(page, site, "operator")
    page.goto(f"{site.url}/rooms/{site.alpha.room_id}")
    assert page.locator("[data-tariff]").first.get_attribute("data-tariff") == "Alpha Flat"
    page.click("[data-action=tariff]")
    page.wait_for_selector("dialog[open] [data-effective]")
    page.check(f"dialog input[name=tariff_id][value='{dearer}']")
    if (folder := screenshot_dir()) is not None:
        page.screenshot(path=str(folder / "browser-tariff-dialog.png"))
    page.click("dialog button[type=submit]")
    page.wait_for_selector("[data-result=tariff]")
    page.click("dialog .form-actions [data-close-dialog]")
    page.wait_for_selector("[data-tariff='Alpha Dearer']", timeout=10_000)
