"""The customer page in a real browser: from the room page's tenant link, a mistyped phone is
said in the form (nothing written), the corrected one is saved as E.164 and the summaries box
unticked — all without leaving the page (htmx)."""

from __future__ import annotations

from typing import Any

import pytest
from browserkit import Site
from test_console import log_in

from meterdesk.sites.tables import customers

pytestmark = pytest.mark.browser


def stored(site: Site) -> tuple[str, bool]:
    with site.db.read() as conn:
        row = conn.execute(customers.select().where(customers.c.id == site.alpha.customer_id)).one()
    return str(row.phone), bool(row.summaries_opt_out)


def test_an_operator_corrects_a_tenants_phone_and_stops_their_summaries(
    site: Site, browser: Any
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    log_in(page, site, "operator")
    page.goto(f"{site.url}/rooms/{site.alpha.room_id}")
    page.click("a[data-customer-link]")
    page.wait_for_url(f"**/customers/{site.alpha.customer_id}")

    page.fill("input[name=phone]", "138 0013 800")
    page.click("#customer-card button[type=submit]")
    error = page.locator("#customer-errors .alert.error")
    error.wait_for()
    assert "mainland mobiles have 11" in error.inner_text()
    assert stored(site) == ("+8613900000000", False)

    page.fill("input[name=phone]", "138 0013 8000")
    page.uncheck("input[name=summaries]")
    page.click("#customer-card button[type=submit]")
    page.locator("[data-result=customer]").wait_for()
    assert page.input_value("input[name=phone]") == "+8613800138000"
    assert stored(site) == ("+8613800138000", True)
