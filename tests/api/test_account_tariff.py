"""A meter's tariff in an account over the API: read it with the instant a change would apply
from, change it (改电价) idempotently, and be refused clearly for what cannot change."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from apikit import T0, World, error_code, flat_tariff, key
from sqlalchemy import select

from meterdesk.audit.tables import audit_log
from meterdesk.billing.ingest import IncomingReading, Ingestor
from meterdesk.tariffs import service as tariffs


def path(world: World) -> str:
    return f"/api/v1/accounts/{world.alpha.account_id}/meters/{world.alpha.meter_id}/tariff"


def second_tariff(world: World, utility: str = "electricity", name: str = "Dearer") -> int:
    return tariffs.create_tariff(
        world.db,
        organisation_id=world.alpha.id,
        name=f"Alpha {name}",
        definition=flat_tariff("0.9000", utility=utility),
        actor="test",
    )


def test_the_tariff_changes_from_the_meters_latest_reading(world: World) -> None:
    dearer = second_tariff(world)
    Ingestor(world.db).ingest(
        [IncomingReading(world.alpha.meter_id, T0 + timedelta(minutes=30), Decimal("1002"))]
    )
    headers = world.alpha.auth("operator")
    before = world.client.get(path(world), headers=headers).json()
    assert (before["tariff"], before["since"], before["change_from"]) == (
        "Alpha Flat",
        "2026-11-02T00:00:00Z",
        "2026-11-02T00:30:00Z",
    )

    changed = world.client.put(
        path(world), json={"tariff_id": dearer}, headers={**headers, **key("tariff-1")}
    )

    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["changed"], body["previous_tariff"], body["tariff"], body["effective_at"]) == (
        True,
        "Alpha Flat",
        "Alpha Dearer",
        "2026-11-02T00:30:00Z",
    )
    after = world.client.get(path(world), headers=headers).json()
    assert (after["tariff_id"], after["since"]) == (dearer, "2026-11-02T00:30:00Z")
    with world.db.read() as conn:
        audited = conn.execute(
            select(audit_log.c.action, audit_log.c.source).where(
                audit_log.c.action.like("%tariff_change")
            )
        ).all()
    assert sorted(audited, key=str) == [
        ("account.tariff_change", None),
        ("api.account.tariff_change", "testclient"),
    ]


def test_the_same_key_replays_and_a_reused_key_is_a_conflict(world: World) -> None:
    dearer = second_tariff(world)
    headers = {**world.alpha.auth("admin"), **key("tariff-2")}
    first = world.client.put(path(world), json={"tariff_id": dearer}, headers=headers)
    replay = world.client.put(path(world), json={"tariff_id": dearer}, headers=headers)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replay"] == "true"
    assert replay.json() == first.json()
    other = world.client.put(
        path(world), json={"tariff_id": world.alpha.tariff_id}, headers=headers
    )
    assert other.status_code == 409 and error_code(other) == "idempotency_conflict"


def test_the_same_tariff_answers_that_nothing_changed(world: World) -> None:
    headers = {**world.alpha.auth("admin"), **key("tariff-3")}
    response = world.client.put(
        path(world), json={"tariff_id": world.alpha.tariff_id}, headers=headers
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["changed"], body["change_id"]) == (False, None)
    assert "nothing changed" in body["message"]


def test_what_cannot_change_is_refused_clearly(world: World) -> None:
    water = second_tariff(world, "water", "Water")
    admin = world.alpha.auth("admin")
    wrong_utility = world.client.put(
        path(world), json={"tariff_id": water}, headers={**admin, **key("t-4")}
    )
    assert wrong_utility.status_code == 422 and "measures electricity" in wrong_utility.text
    foreign = world.client.put(
        path(world), json={"tariff_id": world.bravo.tariff_id}, headers={**admin, **key("t-5")}
    )
    assert foreign.status_code == 404 and "Bravo" not in foreign.text
    spare = f"/api/v1/accounts/{world.alpha.account_id}/meters/{world.alpha.spare_meter_id}/tariff"
    not_in_account = world.client.put(
        spare, json={"tariff_id": world.alpha.tariff_id}, headers={**admin, **key("t-6")}
    )
    assert not_in_account.status_code == 404 and "is not a meter of" in not_in_account.text
    no_key = world.client.put(path(world), json={"tariff_id": world.alpha.tariff_id}, headers=admin)
    assert no_key.status_code == 400
    cashier = world.client.put(
        path(world),
        json={"tariff_id": world.alpha.tariff_id},
        headers={**world.alpha.auth("cashier"), **key("t-7")},
    )
    assert cashier.status_code == 403
    assert world.client.get(path(world), headers=admin).json()["tariff"] == "Alpha Flat"
