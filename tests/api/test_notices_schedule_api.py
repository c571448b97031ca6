"""Scheduled and cancelled system notices through the API: ``send_at`` with its offset (its
messages due then), 422 for a time without an offset, past or too far ahead; ``POST
/notices/{id}/cancel`` stops the waiting messages (audited), twice answers the same, 403 for
cashiers and readers, 404 for another organisation's notice — none of the refusals writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apikit import World, error_code, key
from sqlalchemy import func, select

from meterdesk.audit.tables import audit_log
from meterdesk.notifications.tables import notices, notification_outbox

API = "/api/v1"


def body(world: World, **given: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "scope": "building",
        "ids": [world.alpha.building_id],
        "subject": "B1 停水检修",
        "text": "12 月 9 日 9:00–12:00 停水检修，请提前储水。",
    }
    found.update(given)
    return found


def post(world: World, payload: dict[str, Any], role: str = "operator", k: str = "n-1") -> Any:
    headers = {**world.alpha.auth(role), **key(k)}
    return world.client.post(f"{API}/notices", json=payload, headers=headers)


def cancel(world: World, notice_id: int, role: str = "operator", k: str = "c-1") -> Any:
    headers = {**world.alpha.auth(role), **key(k)}
    return world.client.post(f"{API}/notices/{notice_id}/cancel", headers=headers)


def messages(world: World, notice_id: int) -> list[dict[str, Any]]:
    table = notification_outbox
    with world.db.read() as conn:
        rows = conn.execute(
            select(table.c.status, table.c.next_attempt_at).where(
                table.c.event_key.startswith(f"notice:{notice_id}:")
            )
        ).mappings()
        return [dict(r) for r in rows]


def stored(world: World) -> tuple[int, int, int]:
    """(notices, cancelled notices, cancel audit entries)"""
    with world.db.read() as conn:
        count = select(func.count())
        return (
            int(conn.execute(count.select_from(notices)).scalar_one()),
            int(
                conn.execute(
                    count.select_from(notices).where(notices.c.cancelled_at.is_not(None))
                ).scalar_one()
            ),
            int(
                conn.execute(
                    count.select_from(audit_log).where(audit_log.c.action == "notices.cancel")
                ).scalar_one()
            ),
        )


def test_a_scheduled_notice_shows_its_time_and_is_cancelled_once(world: World) -> None:
    at = (world.clock() + timedelta(days=1)).replace(microsecond=0)
    sent = post(world, body(world, send_at=at.astimezone().isoformat()))
    assert sent.status_code == 201, sent.text
    notice = sent.json()
    assert datetime.fromisoformat(notice["send_at"]) == at and notice["cancelled_at"] is None
    assert notice["delivery"]["pending"] == 1 and notice["delivery"]["cancelled"] == 0
    assert [m["next_attempt_at"] for m in messages(world, notice["id"])] == [at]

    before = stored(world)
    cancelled = cancel(world, notice["id"])
    assert cancelled.status_code == 200, cancelled.text
    answer = cancelled.json()
    assert (answer["stopped"], answer["gone"], answer["already_cancelled"]) == (1, 0, False)
    assert answer["delivery"]["cancelled"] == 1 and answer["cancelled_by"]
    assert [m["status"] for m in messages(world, notice["id"])] == ["cancelled"]
    assert stored(world) == (before[0], before[1] + 1, before[2] + 1)

    again = cancel(world, notice["id"], role="admin", k="c-2")  # another key, another person
    assert again.status_code == 200 and again.headers["Idempotent-Replay"] == "true"
    assert again.json() == {**answer, "already_cancelled": True}
    assert stored(world) == (before[0], before[1] + 1, before[2] + 1)

    shown = world.client.get(f"{API}/notices/{notice['id']}", headers=world.alpha.auth("readonly"))
    assert shown.json()["delivery"]["cancelled"] == 1 and shown.json()["cancelled_at"]
    counts = world.client.get(f"{API}/notification-counts", headers=world.alpha.auth("readonly"))
    assert counts.json()["cancelled"] == 1
    listed = world.client.get(
        f"{API}/notifications?status=cancelled", headers=world.alpha.auth("readonly")
    )
    assert listed.status_code == 200 and len(listed.json()["items"]) == 1


def test_a_time_of_a_notice_at_once_is_null(world: World) -> None:
    sent = post(world, body(world))
    assert sent.status_code == 201 and sent.json()["send_at"] is None


@pytest.mark.parametrize(
    ("when", "words"),
    [
        ("2026-11-03T10:00:00", "time zone is required"),
        ("2026-11-01T10:00:00+08:00", "not in the future"),
        ("2027-06-01T10:00:00+08:00", "at most 90 days ahead"),
        ("soon", ""),
    ],
)
def test_a_bad_time_is_422_and_writes_nothing(world: World, when: str, words: str) -> None:
    before = stored(world)
    refused = post(world, body(world, send_at=when))
    assert refused.status_code == 422, refused.text
    assert error_code(refused) == "validation_error" and words in refused.text
    assert stored(world) == before


@pytest.mark.parametrize("role", ["cashier", "readonly"])
def test_cashiers_and_readers_may_not_cancel(world: World, role: str) -> None:
    notice = post(world, body(world, urgent=True)).json()
    before = stored(world)
    refused = cancel(world, notice["id"], role=role)
    assert refused.status_code == 403 and stored(world) == before
    assert [m["status"] for m in messages(world, notice["id"])] == ["pending"]


def test_another_organisations_notice_is_not_found(world: World) -> None:
    before = stored(world)
    refused = cancel(world, world.bravo.notice_id)
    assert refused.status_code == 404 and "Bravo" not in refused.text
    assert cancel(world, 10**9, k="c-x").status_code == 404
    assert stored(world) == before


def test_a_notice_whose_messages_went_reports_them_gone(world: World) -> None:
    notice = post(world, body(world, urgent=True)).json()
    table = notification_outbox
    with world.db.transaction() as conn:  # as the dispatcher records a sent message
        conn.execute(
            table.update()
            .where(table.c.event_key.startswith(f"notice:{notice['id']}:"))
            .values(status="sent", sent_at=datetime.now(UTC))
        )
    answer = cancel(world, notice["id"]).json()
    assert (answer["stopped"], answer["gone"]) == (0, 1) and answer["delivery"]["sent"] == 1
