"""The console's system notices page, scheduled and cancelled: the form's time is the wall time
of the place's site; the list shows when each notice goes out; operators and admins get a
cancel button on a notice with messages waiting, which stops them and says how many; others
are refused (403), another organisation's notice is not found (404); zh-CN."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from apikit import World
from consolekit import Console
from sqlalchemy import select

from meterdesk.notifications.tables import notices, notification_outbox

# The world's clock is 2026-11-02 01:00 UTC (09:00 in Shanghai, the site's zone).
TYPED = "2026-11-03T10:00"  # what a datetime-local field sends: 10:00 the next day, local
INSTANT = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)


def form(world: World, **given: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "idempotency_key": "console-notice-s1",
        "scope": "building",
        "building_id": str(world.alpha.building_id),
        "subject": "B1 停水检修",
        "text": "12 月 9 日 9:00–12:00 停水检修。",
        "send_at": TYPED,
    }
    found.update(given)
    return found


def newest(world: World) -> dict[str, Any]:
    with world.db.read() as conn:
        row = conn.execute(select(notices).order_by(notices.c.id.desc()).limit(1)).mappings()
        return dict(row.one())


def statuses(world: World, notice_id: int) -> set[str]:
    table = notification_outbox
    with world.db.read() as conn:
        return set(
            conn.execute(
                select(table.c.status).where(table.c.event_key.startswith(f"notice:{notice_id}:"))
            ).scalars()
        )


def test_an_operator_schedules_a_notice_then_cancels_it(world: World) -> None:
    console = Console(world.client, world.alpha, "operator")
    sent = console.post("/notices", form(world))
    assert sent.status_code == 200, sent.text
    notice = newest(world)
    assert notice["send_at"] == INSTANT
    assert f"Notice #{notice['id']} to 1 recipients scheduled for" in sent.text
    assert f'data-send-at="{INSTANT.isoformat()}"' in sent.text
    assert 'data-action="cancel-notice"' in sent.text
    assert f'hx-post="/notices/{notice["id"]}/cancel"' in sent.text

    key = f"page-key-{notice['id']}"
    cancelled = console.post(f"/notices/{notice['id']}/cancel", {"idempotency_key": key})
    assert cancelled.status_code == 200, cancelled.text
    assert 'data-result="notice-cancelled"' in cancelled.text
    assert "1 messages stopped, 0 had already gone out." in cancelled.text
    assert 'data-state="cancelled"' in cancelled.text
    assert '<b data-count="cancelled">1</b>' in cancelled.text
    assert statuses(world, notice["id"]) == {"cancelled"}
    assert f'hx-post="/notices/{notice["id"]}/cancel"' not in cancelled.text  # no button now

    again = console.post(f"/notices/{notice['id']}/cancel", {"idempotency_key": key + "-2"})
    assert again.status_code == 200 and "was already cancelled" in again.text


def test_a_bad_time_is_shown_in_the_form_and_writes_nothing(world: World) -> None:
    console = Console(world.client, world.alpha, "operator")
    before = newest(world)["id"]
    for typed, said in (
        ("2026-11-01T10:00", "not in the future"),
        ("2027-03-01T10:00", "at most 90 days ahead"),
        ("tomorrow", "not a date and time"),
    ):
        refused = console.post("/notices", form(world, send_at=typed))
        assert refused.status_code == 422 and 'class="alert error"' in refused.text
        assert said in refused.text, refused.text
    assert newest(world)["id"] == before


@pytest.mark.parametrize("role", ["cashier", "readonly"])
def test_others_see_no_button_and_are_refused(world: World, role: str) -> None:
    operator = Console(world.client, world.alpha, "operator")
    operator.post("/notices", form(world))
    notice = newest(world)
    console = Console(world.client, world.alpha, role)
    shown = console.get("/notices")
    assert f'data-send-at="{INSTANT.isoformat()}"' in shown.text
    assert 'data-action="cancel-notice"' not in shown.text
    refused = console.post(f"/notices/{notice['id']}/cancel", {"idempotency_key": "x" * 12})
    assert refused.status_code == 403 and statuses(world, notice["id"]) == {"pending"}


def test_another_organisations_notice_is_not_found(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    refused = console.post(
        f"/notices/{world.bravo.notice_id}/cancel", {"idempotency_key": "y" * 12}
    )
    assert refused.status_code == 404 and "Bravo" not in refused.text


def test_scheduled_and_cancelled_in_chinese(world: World) -> None:
    console = Console(world.client, world.alpha, "operator", locale="zh-CN")
    sent = console.post("/notices", form(world)).text
    assert "定时发送" in sent and "已定时" in sent and "取消通知" in sent and "发出时间" in sent
    notice = newest(world)
    done = console.post(f"/notices/{notice['id']}/cancel", {"idempotency_key": "z" * 12}).text
    assert "已取消" in done and "条消息已停止发送" in done
