"""The deduction summaries card (扣费通知) on the notification settings page: every role sees
the cadence, admins change it (off by default), a bad value is refused and changes nothing,
and it reads in Chinese."""

from __future__ import annotations

import pytest
from apikit import ROLES, World
from consolekit import Console

from meterdesk.notifications import summary_settings


@pytest.mark.parametrize("role", ROLES)
def test_every_role_sees_the_card_and_only_admins_get_the_form(world: World, role: str) -> None:
    page = Console(world.client, world.alpha, role).get("/settings/notifications").text
    assert 'id="summaries-card"' in page
    form = 'hx-post="/settings/notifications/summaries"' in page
    assert form is (role == "admin")
    if form:
        assert '<option value="off" selected>' in page


def test_an_admin_turns_summaries_on_and_off(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    saved = console.post("/settings/notifications/summaries", {"cadence": "daily"})
    assert saved.status_code == 200 and 'data-result="summaries"' in saved.text
    assert '<option value="daily" selected>' in saved.text
    found = summary_settings.cadence_of(world.db, organisation_id=world.alpha.id)
    assert found.value == "daily"
    assert summary_settings.cadence_of(world.db, organisation_id=world.bravo.id).value == "off"
    page = console.get("/settings/notifications").text
    assert '<option value="daily" selected>' in page

    refused = console.post("/settings/notifications/summaries", {"cadence": "hourly"})
    assert refused.status_code == 422
    assert summary_settings.cadence_of(world.db, organisation_id=world.alpha.id).value == "daily"
    console.post("/settings/notifications/summaries", {"cadence": "off"})
    assert summary_settings.cadence_of(world.db, organisation_id=world.alpha.id).value == "off"


def test_only_admins_change_the_summaries(world: World) -> None:
    console = Console(world.client, world.alpha, "operator")
    answer = console.post("/settings/notifications/summaries", {"cadence": "daily"})
    assert answer.status_code == 403
    assert summary_settings.cadence_of(world.db, organisation_id=world.alpha.id).value == "off"


def test_the_card_reads_in_chinese(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    console.post("/lang", {"locale": "zh-CN"})
    page = console.get("/settings/notifications").text
    assert "扣费通知" in page and "每日（用量日报）" in page and "默认关闭" in page
