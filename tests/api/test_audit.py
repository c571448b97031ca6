"""The audit log: list with filters and pages, export as CSV; who may read it."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

import pytest
from apikit import World, error_code, flat_tariff, key
from sqlalchemy import select

from meterdesk.audit.tables import audit_log
from support.audit import write_tied_entries


def _z(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def test_list_audit_newest_first_with_filters_and_pages(world: World) -> None:
    auth = world.alpha.auth("admin")
    for n in range(3):
        world.client.post(
            f"/api/v1/accounts/{world.alpha.account_id}/recharge",
            json={"amount": f"{n + 1}", "method": "card"},
            headers={**world.alpha.auth("cashier"), **key(f"a-{n}")},
        )
    page = world.client.get("/api/v1/audit?action=money.recharge&limit=2", headers=auth).json()
    amounts = [e["detail"]["amount"] for e in page["items"]]
    assert amounts == ["3.00", "2.00"] and page["next_cursor"]
    rest = world.client.get(
        f"/api/v1/audit?action=money.recharge&limit=2&cursor={page['next_cursor']}", headers=auth
    )
    assert [e["detail"]["amount"] for e in rest.json()["items"]] == ["1.00", "100.00"]
    by_actor = world.client.get("/api/v1/audit?actor=alpha-cashier/token:3", headers=auth).json()[
        "items"
    ]
    assert {e["action"] for e in by_actor} == {"money.recharge", "api.money.recharge"}
    since = world.client.get("/api/v1/audit?since=2026-11-02T00:30:00Z", headers=auth).json()[
        "items"
    ]
    assert all(e["at"] >= "2026-11-02T00:30:00" for e in since) and len(since) == 6


@pytest.mark.integration
@pytest.mark.parametrize("since", [False, True], ids=["until", "since-until"])
def test_a_time_bounded_list_pages_through_equal_times_once_each(
    any_world: World, since: bool
) -> None:
    """With ``since``/``until`` the log is in time order (then id), and each cursor goes on
    after its entry in that order: every entry once, newest first, also when ids and times are
    out of step and several share an instant, on SQLite and PostgreSQL."""
    world, auth = any_world, any_world.alpha.auth()
    start = world.clock() + timedelta(days=1)
    write_tied_entries(world.db, world.alpha.id, start, others=[world.bravo.id])
    low, high = (start if since else None), start + timedelta(minutes=5)
    with world.db.read() as conn:
        rows = conn.execute(
            select(audit_log.c.at, audit_log.c.id).where(
                audit_log.c.organisation_id == world.alpha.id, audit_log.c.at < high
            )
        ).all()
    expected = [id_ for at, id_ in sorted(rows, reverse=True) if low is None or low <= at]
    assert expected != sorted(expected, reverse=True)  # ids and times out of step
    query = f"until={_z(high)}" + (f"&since={_z(start)}" if since else "")
    listed: list[int] = []
    cursor: str | None = ""
    while cursor is not None:
        answer = world.client.get(f"/api/v1/audit?{query}&limit=3&cursor={cursor}", headers=auth)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["items"]) == 3 or page["next_cursor"] is None
        listed += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
    assert listed == expected


def test_a_time_bounded_list_refuses_a_cursor_it_did_not_give(world: World) -> None:
    """A time-bounded page goes on after its cursor's entry, which must be one of the caller's
    organisation (another's would give away its time); a cursor that is no cursor is refused
    whatever the list."""
    auth = world.alpha.auth()
    theirs = world.client.get("/api/v1/audit?limit=1", headers=world.bravo.auth()).json()
    foreign, until = theirs["items"][0]["id"], "2030-01-01T00:00:00Z"
    for cursor in (str(foreign), "999999999"):
        answer = world.client.get(f"/api/v1/audit?until={until}&cursor={cursor}", headers=auth)
        assert answer.status_code == 422 and error_code(answer) == "validation_error", cursor
    for query in (f"until={until}&", ""):
        answer = world.client.get(f"/api/v1/audit?{query}cursor=12.x", headers=auth)
        assert answer.status_code == 422 and error_code(answer) == "validation_error"


def test_audit_is_for_admins_and_auditors(world: World) -> None:
    assert (
        world.client.get("/api/v1/audit", headers=world.alpha.auth("readonly")).status_code == 200
    )
    for role in ("operator", "cashier"):
        assert world.client.get("/api/v1/audit", headers=world.alpha.auth(role)).status_code == 403


def test_audit_filter_with_a_naive_time_is_422(world: World) -> None:
    response = world.client.get(
        "/api/v1/audit?since=2026-11-02T00:30:00", headers=world.alpha.auth()
    )
    assert response.status_code == 422


def test_export_csv(world: World) -> None:
    world.client.post(
        f"/api/v1/accounts/{world.alpha.account_id}/recharge",
        json={"amount": "5", "method": "cash"},
        headers={**world.alpha.auth("cashier"), **key("csv-1")},
    )
    response = world.client.get(
        "/api/v1/audit/export?action=api.money.recharge", headers=world.alpha.auth()
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text.lstrip("\ufeff"))))
    assert [(r["actor"], r["action"], r["source"]) for r in rows] == [
        ("alpha-cashier/token:3", "api.money.recharge", "testclient")
    ]


def test_export_neutralises_spreadsheet_formulas(world: World) -> None:
    made = world.client.post(
        "/api/v1/users", json={"username": "=1+1", "role": "admin"}, headers=world.alpha.auth()
    )
    token = world.client.post(
        "/api/v1/tokens",
        json={"name": "f", "user_id": made.json()["id"]},
        headers=world.alpha.auth(),
    ).json()["token"]
    body = {"name": "Formula", "definition": flat_tariff()}
    world.client.post("/api/v1/tariffs", json=body, headers={"Authorization": f"Bearer {token}"})
    response = world.client.get(
        "/api/v1/audit/export?action=tariff.create", headers=world.alpha.auth()
    )
    rows = list(csv.DictReader(io.StringIO(response.text.lstrip("\ufeff"))))
    assert [r["actor"][:4] for r in rows] == ["setu", "'=1+"]


def test_export_is_refused_to_a_cashier(world: World) -> None:
    assert (
        world.client.get("/api/v1/audit/export", headers=world.alpha.auth("cashier")).status_code
        == 403
    )
