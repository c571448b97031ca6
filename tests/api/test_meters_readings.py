"""Meters, device replacement, readings in and out, the quarantine."""

from __future__ import annotations

from apikit import World, error_code, key

METER = {
    "number": "E-900",
    "utility": "electricity",
    "kind": "three_phase",
    "protocol": "dlt645",
    "address": "000000000900",
    "ct_ratio": "40",
}


def test_create_get_and_list_meters(world: World) -> None:
    auth = world.alpha.auth("operator")
    created = world.client.post(
        "/api/v1/meters", json={**METER, "room_id": world.alpha.room_id}, headers=auth
    )
    assert created.status_code == 201, created.text
    meter = created.json()
    assert (
        meter["ct_ratio"] == "40.00"
        and meter["register_modulus"] == "1000000.0000"
        and meter["generation"] == 0
    )
    assert meter["site_id"] == world.alpha.site_id
    assert world.client.get(f"/api/v1/meters/{meter['id']}", headers=auth).json() == meter
    in_room = world.client.get(f"/api/v1/meters?room_id={world.alpha.room_id}", headers=auth).json()
    assert {m["number"] for m in in_room["items"]} == {"Alpha-M1", "E-900"}
    searched = world.client.get("/api/v1/meters?q=E-9&utility=electricity", headers=auth).json()
    assert [m["number"] for m in searched["items"]] == ["E-900"]


def test_meter_in_another_organisations_room_is_404(world: World) -> None:
    body = {**METER, "room_id": world.bravo.room_id}
    response = world.client.post("/api/v1/meters", json=body, headers=world.alpha.auth("operator"))
    assert response.status_code == 404


def test_meter_kind_must_match_the_utility(world: World) -> None:
    body = {**METER, "utility": "water", "room_id": world.alpha.room_id}
    response = world.client.post("/api/v1/meters", json=body, headers=world.alpha.auth("operator"))
    assert response.status_code == 422


def test_cashier_cannot_change_meters(world: World) -> None:
    body = {**METER, "room_id": world.alpha.room_id}
    assert (
        world.client.post(
            "/api/v1/meters", json=body, headers=world.alpha.auth("cashier")
        ).status_code
        == 403
    )


def test_ingest_bills_and_a_resend_changes_nothing(world: World) -> None:
    batch = {
        "readings": [
            {
                "meter_id": world.alpha.meter_id,
                "measured_at": "2026-11-02T08:30:00+08:00",
                "total": "1010",
            }
        ]
    }
    auth = world.alpha.auth("operator")
    first = world.client.post("/api/v1/readings", json=batch, headers=auth)
    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 1 and first.json()["deducted"] == "6.54"
    again = world.client.post("/api/v1/readings", json=batch, headers=auth).json()
    assert again["accepted"] == 0 and again["duplicates"] == 1 and again["deducted"] == "0.00"
    balance = world.client.get(
        f"/api/v1/accounts/{world.alpha.account_id}/balance", headers=auth
    ).json()
    assert balance["balance"] == "93.46"


def test_ingest_with_a_key_replays_the_first_answer(world: World) -> None:
    batch = {
        "readings": [
            {
                "meter_id": world.alpha.meter_id,
                "measured_at": "2026-11-02T00:30:00Z",
                "total": "1010",
            }
        ]
    }
    headers = {**world.alpha.auth("operator"), **key("batch-1")}
    first = world.client.post("/api/v1/readings", json=batch, headers=headers)
    replay = world.client.post("/api/v1/readings", json=batch, headers=headers)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replay"] == "true"
    assert replay.json() == first.json()


def test_ingest_refuses_another_organisations_meter(world: World) -> None:
    batch = {
        "readings": [
            {"meter_id": world.bravo.meter_id, "measured_at": "2026-11-02T00:30:00Z", "total": "1"}
        ]
    }
    response = world.client.post(
        "/api/v1/readings", json=batch, headers=world.alpha.auth("operator")
    )
    assert response.status_code == 404


def test_ingest_refuses_numbers_naive_times_and_too_many_places(world: World) -> None:
    auth = world.alpha.auth("operator")
    meter = world.alpha.meter_id
    for reading in (
        {"meter_id": meter, "measured_at": "2026-11-02T00:30:00Z", "total": 1010},
        {"meter_id": meter, "measured_at": "2026-11-02T00:30:00", "total": "1010"},
        {"meter_id": meter, "measured_at": "2026-11-02T00:30:00Z", "total": "1010.12345"},
    ):
        response = world.client.post("/api/v1/readings", json={"readings": [reading]}, headers=auth)
        assert response.status_code == 422, reading


def test_cashier_cannot_ingest(world: World) -> None:
    batch = {
        "readings": [
            {"meter_id": world.alpha.meter_id, "measured_at": "2026-11-02T00:30:00Z", "total": "1"}
        ]
    }
    assert (
        world.client.post(
            "/api/v1/readings", json=batch, headers=world.alpha.auth("cashier")
        ).status_code
        == 403
    )


def test_list_a_meters_readings_in_pages(world: World) -> None:
    auth = world.alpha.auth("operator")
    batch = {
        "readings": [
            {
                "meter_id": world.alpha.meter_id,
                "measured_at": f"2026-11-02T00:{m:02d}:00Z",
                "total": str(1000 + m),
            }
            for m in (20, 40)
        ]
    }
    world.client.post("/api/v1/readings", json=batch, headers=auth)
    path = f"/api/v1/meters/{world.alpha.meter_id}/readings"
    first = world.client.get(f"{path}?limit=2", headers=auth).json()
    assert [r["total"] for r in first["items"]] == ["1000.0000", "1020.0000"]
    assert first["items"][0]["source"] == "opening"
    rest = world.client.get(f"{path}?limit=2&cursor={first['next_cursor']}", headers=auth).json()
    assert [r["total"] for r in rest["items"]] == ["1040.0000"] and rest["next_cursor"] is None
    window = world.client.get(f"{path}?start=2026-11-02T00:30:00Z", headers=auth).json()
    assert [r["total"] for r in window["items"]] == ["1040.0000"]


def test_readings_of_an_unknown_meter_are_404(world: World) -> None:
    assert (
        world.client.get("/api/v1/meters/999/readings", headers=world.alpha.auth()).status_code
        == 404
    )


def test_replace_a_meter(world: World) -> None:
    body = {"at": "2026-11-02T00:30:00Z", "old_final_total": "1005", "new_initial_total": "0"}
    headers = {**world.alpha.auth("operator"), **key("swap-1")}
    path = f"/api/v1/meters/{world.alpha.meter_id}/replacement"
    response = world.client.post(path, json=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json() == {"meter_id": world.alpha.meter_id, "generation": 1}
    replay = world.client.post(path, json=body, headers=headers)
    assert replay.status_code == 200 and replay.json() == response.json()
    meter = world.client.get(f"/api/v1/meters/{world.alpha.meter_id}", headers=headers).json()
    assert meter["generation"] == 1


def test_replacement_needs_an_idempotency_key(world: World) -> None:
    body = {"at": "2026-11-02T00:30:00Z", "old_final_total": "1005", "new_initial_total": "0"}
    path = f"/api/v1/meters/{world.alpha.meter_id}/replacement"
    response = world.client.post(path, json=body, headers=world.alpha.auth("operator"))
    assert response.status_code == 400 and error_code(response) == "bad_request"


def test_list_quarantine(world: World) -> None:
    items = world.client.get("/api/v1/quarantine", headers=world.alpha.auth("readonly")).json()[
        "items"
    ]
    assert [(i["id"], i["reason_code"], i["total"], i["meter_number"]) for i in items] == [
        (world.alpha.quarantine_id, "jump", "900000", "Alpha-M1")
    ]
    released = world.client.get(
        "/api/v1/quarantine?status=released", headers=world.alpha.auth()
    ).json()
    assert released["items"] == []
    bad = world.client.get("/api/v1/quarantine?status=weird", headers=world.alpha.auth())
    assert bad.status_code == 422


def test_release_bills_the_reading_and_replays(world: World) -> None:
    path = f"/api/v1/quarantine/{world.alpha.quarantine_id}/release"
    headers = {**world.alpha.auth("operator"), **key("release-1")}
    response = world.client.post(path, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "released" and response.json()["report"]["accepted"] == 1
    assert world.client.post(path, headers=headers).headers["Idempotent-Replay"] == "true"
    again = world.client.post(path, headers={**world.alpha.auth("operator"), **key("release-2")})
    assert again.status_code == 409


def test_discard_keeps_the_reading_unbilled(world: World) -> None:
    path = f"/api/v1/quarantine/{world.alpha.quarantine_id}/discard"
    response = world.client.post(path, headers=world.alpha.auth("operator"))
    assert response.status_code == 200 and response.json()["status"] == "discarded"
    assert world.client.post(path, headers=world.alpha.auth("operator")).status_code == 409
    discarded = world.client.get(
        "/api/v1/quarantine?status=discarded", headers=world.alpha.auth()
    ).json()
    assert discarded["items"][0]["resolved_by"] == "alpha-operator/token:2"


def test_discard_unknown_is_404(world: World) -> None:
    assert (
        world.client.post("/api/v1/quarantine/999/discard", headers=world.alpha.auth()).status_code
        == 404
    )
