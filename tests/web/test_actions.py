"""Actions from the console go through the API's handlers: money moves once per form, is audited
with the address, and device commands show their status."""

from __future__ import annotations

import json
from decimal import Decimal

from apikit import World, flat_tariff
from consolekit import HTMX, Console
from sqlalchemy import select

from meterdesk.audit.tables import audit_log
from meterdesk.billing import accounts
from meterdesk.billing.tables import tariff_changes
from meterdesk.tariffs import service as tariffs


def balance(world: World, console: Console) -> str:
    return str(
        console.client.get(f"/api/v1/accounts/{world.alpha.account_id}/balance").json()["balance"]
    )


def test_recharge_moves_money_once_per_form_and_is_audited(world: World) -> None:
    console = Console(world.client, world.alpha, "cashier")
    room = world.alpha.room_id
    dialog = console.get(f"/rooms/{room}/dialog/recharge", **HTMX)
    assert dialog.status_code == 200
    key = dialog.text.split('name="idempotency_key" value="')[1].split('"')[0]
    before = balance(world, console)
    data = {"amount": "50.5", "method": "cash", "idempotency_key": key}
    first = console.post(f"/rooms/{room}/money/recharge", data)
    assert first.status_code == 200, first.text
    assert first.headers["HX-Trigger"] == "room-changed"
    assert 'data-result="recharge"' in first.text
    again = console.post(f"/rooms/{room}/money/recharge", data)  # a double click
    assert again.status_code == 200
    assert float(balance(world, console)) == float(before) + 50.5
    with world.db.read() as conn:
        entries = conn.execute(
            select(audit_log.c.action, audit_log.c.source).where(
                audit_log.c.action == "api.money.recharge"
            )
        ).all()
    assert entries == [("api.money.recharge", "testclient")]


def test_a_bad_amount_is_explained_in_the_dialog(world: World) -> None:
    console = Console(world.client, world.alpha, "cashier")
    response = console.post(
        f"/rooms/{world.alpha.room_id}/money/refund",
        {"amount": "99999", "idempotency_key": "refund-12345678"},
    )
    assert response.status_code == 409
    assert 'class="alert error"' in response.text


def test_cutting_supply_records_a_command_and_shows_its_status(world: World) -> None:
    console = Console(world.client, world.alpha, "operator")
    room, meter = world.alpha.room_id, world.alpha.meter_id
    data = {"meter_id": meter, "kind": "relay_trip", "idempotency_key": "cut-12345678"}
    response = console.post(f"/rooms/{room}/command", data)
    assert response.status_code == 200, response.text
    command_id = int(response.text.split('hx-get="/commands/')[1].split("/")[0])
    status = console.get(f"/commands/{command_id}/status", **HTMX)
    assert 'data-status="pending"' in status.text
    assert 'hx-trigger="every 2s"' in status.text  # keeps polling until the meter answers
    assert console.get(f"/commands/{command_id}").status_code == 200
    assert f'href="/commands/{command_id}"' in console.get("/commands?status=pending").text
    activity = console.get(f"/rooms/{room}/activity")
    assert f'data-command="{command_id}"' in activity.text


def test_protect_and_alarm_amounts_are_saved_as_the_account_policy(world: World) -> None:
    console = Console(world.client, world.alpha, "operator")
    room = world.alpha.room_id
    data = {"protect": "on", "alarm_1": "30", "idempotency_key": "policy-12345678"}
    response = console.post(f"/rooms/{room}/policy", data)
    assert response.status_code == 200, response.text
    status = console.get(f"/rooms/{room}/status").text
    assert "Protected" in status


def test_the_wizard_opens_an_account_for_a_new_customer(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    alpha = world.alpha
    page = console.get(f"/accounts/open?room_id={alpha.spare_room_id}")
    assert page.status_code == 200
    base = {
        "room_id": alpha.spare_room_id,
        "customer_name": "Wizard Tenant",
        "customer_phone": "138 0013 8000",
        "key": "wizard-12345678",
    }
    step2 = console.post("/accounts/open/step", {**base, "step": 1})
    assert step2.status_code == 200 and "Alpha-M3" in step2.text
    meters = {"meter": [alpha.spare_meter_id], "tariff": [str(alpha.tariff_id)], "reading": ["0"]}
    choice = {**base, "number": "W-1", "billing_mode": "platform", "overdraft_limit": "0", **meters}
    step3 = console.post("/accounts/open/step", {**choice, "step": 2})
    assert step3.status_code == 200 and "W-1" in step3.text
    opened = console.post(
        "/accounts/open", {**choice, "initial_credit": "20", "payment_method": "cash"}
    )
    assert opened.status_code == 200, opened.text
    assert 'data-result="opened"' in opened.text
    accounts = console.client.get("/api/v1/accounts?q=W-1").json()["items"]
    assert [a["number"] for a in accounts] == ["W-1"]


def test_the_wizards_new_customer_reads_messages_in_the_chosen_language(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    alpha = world.alpha
    assert (
        'name="customer_language"'
        in console.get(f"/accounts/open?room_id={alpha.spare_room_id}").text
    )
    base = {
        "room_id": alpha.spare_room_id,
        "customer_name": "Anna Tenant",
        "customer_email": "anna@example.com",
        "customer_language": "en",
        "key": "wizard-87654321",
    }
    meters = {"meter": [alpha.spare_meter_id], "tariff": [str(alpha.tariff_id)], "reading": ["0"]}
    choice = {**base, "number": "W-2", "billing_mode": "platform", "overdraft_limit": "0", **meters}
    step3 = console.post("/accounts/open/step", {**choice, "step": 2})
    assert 'name="customer_language" value="en"' in step3.text  # carried to the last step
    assert "English" in step3.text
    opened = console.post("/accounts/open", {**choice, "initial_credit": "0"})
    assert opened.status_code == 200, opened.text
    found = console.client.get("/api/v1/customers?q=Anna").json()["items"]
    assert [(c["name"], c["language"]) for c in found] == [("Anna Tenant", "en")]


def test_the_wizard_refuses_a_customer_language_it_has_no_templates_for(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    alpha = world.alpha
    data = {
        "room_id": alpha.spare_room_id, "customer_name": "X", "customer_language": "fr",
        "key": "wizard-11112222", "number": "W-3", "billing_mode": "platform",
        "overdraft_limit": "0", "meter": [alpha.spare_meter_id], "tariff": [str(alpha.tariff_id)],
        "reading": ["0"], "initial_credit": "0",
    }  # fmt: skip
    assert console.post("/accounts/open", data).status_code == 422
    assert console.client.get("/api/v1/customers?q=X").json()["items"] == []


def test_the_wizard_refuses_a_missing_room(world: World) -> None:
    console = Console(world.client, world.alpha, "operator")
    response = console.post("/accounts/open/step", {"step": 1, "key": "wizard-00000000"})
    assert response.status_code == 422


def test_a_pre_entered_account_opens_with_one_click(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    page = console.get("/accounts/presets")
    assert "Alpha-ACC-2" in page.text
    response = console.post(
        f"/accounts/presets/{world.alpha.preset_id}/open", {"idempotency_key": "preset-12345678"}
    )
    assert response.status_code == 200, response.text
    assert "Alpha-ACC-2" in response.text


def test_bulk_import_shows_a_report_per_row(world: World) -> None:
    console = Console(world.client, world.alpha, "operator")
    alpha = world.alpha
    header = "account_number,customer_name,site,building,floor,room,meter_numbers,tariffs,opening_readings"
    place = f"{alpha.name('Park')},{alpha.name('B1')},{alpha.name('F1')}"
    good = f"I-1,Imported,{place},{alpha.name('102')},Alpha-M3,{alpha.name('Flat')},0"
    bad = f"I-2,Nobody,{place},{alpha.name('999')},Alpha-M9,{alpha.name('Flat')},0"
    files = {"file": ("accounts.csv", f"{header}\n{good}\n{bad}\n".encode(), "text/csv")}
    response = console.post("/accounts/import", {"idempotency_key": "import-12345678"}, files=files)
    assert response.status_code == 200, response.text
    assert "I-1" in response.text and "I-2" in response.text
    assert 'data-result="import"' in response.text
    assert 'id="import-key"' in response.text  # a fresh key for the next file


def test_the_tariff_editor_validates_previews_and_runs_a_what_if(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    bad = console.post(
        "/tariffs/check",
        {
            "definition": json.dumps(
                {
                    "utility": "electricity",
                    "versions": [{"effective_from": "2026-01-01", "prices": {"flat": 0.5}}],
                }
            ),
            "day": "2026-11-02",
        },
    )
    assert 'data-result="invalid"' in bad.text and "versions[0].prices.flat" in bad.text
    broken = console.post("/tariffs/check", {"definition": "{", "day": "2026-11-02"})
    assert "JSON" in broken.text
    day = [["00:00", "valley"], ["08:00", "peak"], ["22:00", "valley"]]
    season = {"name": "all", "months": list(range(1, 13)), "workday": day}
    version = {
        "effective_from": "2027-01-01",
        "prices": {"peak": "1.0", "valley": "0.3"},
        "seasons": [season],
    }
    tou = json.dumps({"utility": "electricity", "versions": [version]})
    good = console.post(
        "/tariffs/check", {"definition": tou, "day": "2026-11-02", "meter": "Alpha-M1"}
    )
    assert 'data-result="bands"' in good.text and 'data-result="whatif"' in good.text
    other = console.post(
        "/tariffs/check", {"definition": tou, "day": "2026-11-02", "meter": "Bravo-M1"}
    )
    assert "Bravo-M1" in other.text and 'data-result="whatif"' not in other.text  # not found
    saved = console.post("/tariffs", {"name": "Console TOU", "definition": tou})
    assert saved.status_code == 204 and saved.headers["HX-Redirect"].startswith("/tariffs/")


def test_a_quarantined_reading_can_be_discarded(world: World) -> None:
    console = Console(world.client, world.alpha, "operator")
    response = console.post(
        f"/quarantine/{world.alpha.quarantine_id}/discard", {"idempotency_key": "q-12345678"}
    )
    assert response.status_code == 200, response.text
    assert console.client.get("/api/v1/quarantine").json()["items"] == []


def test_the_grid_api_counts_every_state_and_pages(world: World) -> None:
    console = Console(world.client, world.alpha, "readonly")
    answer = console.client.get("/api/v1/monitor/rooms?limit=1").json()
    assert answer["total"] == 2 and answer["matched"] == 2 and len(answer["items"]) == 1
    assert answer["counts"]["normal"] == 1 and answer["counts"]["vacant"] == 1
    first = answer["items"][0]
    assert first["account_number"] == "Alpha-ACC-1" and first["balance"] == "100.00"
    vacant = console.client.get("/api/v1/monitor/rooms?state=vacant").json()
    assert [item["room"] for item in vacant["items"]] == ["Alpha 102"]
    assert console.client.get("/api/v1/monitor/rooms?q=customer").json()["matched"] == 1


def test_a_grid_search_with_control_characters_is_refused_by_the_api_and_the_page(
    world: World,
) -> None:
    """A NUL cut SQLite's LIKE pattern short (every room matched) and PostgreSQL refused it (a
    500): the API answers 422, and so does the page (it searched for the text around it until
    every request's text was checked alike: ``api/text_guard.py``; a browser's search box cannot
    type one)."""
    console = Console(world.client, world.alpha, "readonly")
    refused = console.client.get("/api/v1/monitor/rooms?q=%00")
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "validation_error"
    page = console.client.get("/rooms?q=Alpha%201%0002")  # "Alpha 1\x0002"
    assert page.status_code == 422
    assert "q: a control character (U+0000) is not allowed" in page.text


def test_a_rooms_tariff_changes_in_a_dialog_listing_that_utilitys_tariffs(world: World) -> None:
    alpha = world.alpha
    dearer = tariffs.create_tariff(
        world.db,
        organisation_id=alpha.id,
        name="Alpha Dearer",
        definition=flat_tariff("0.9000"),
        actor="test",
    )
    tariffs.create_tariff(
        world.db,
        organisation_id=alpha.id,
        name="Alpha Water",
        definition=flat_tariff("3.5", utility="water"),
        actor="test",
    )
    console = Console(world.client, alpha, "operator")
    room = alpha.room_id
    dialog = console.get(f"/rooms/{room}/dialog/tariff", **HTMX)
    assert dialog.status_code == 200
    assert "Alpha Flat" in dialog.text and "Alpha Dearer" in dialog.text
    assert "Alpha Water" not in dialog.text  # not for an electricity meter
    assert 'data-effective="2026-11-02T00:00:00+00:00"' in dialog.text  # the opening reading
    key = dialog.text.split('name="idempotency_key" value="')[1].split('"')[0]
    data = {"meter_id": alpha.meter_id, "tariff_id": dearer, "idempotency_key": key}

    first = console.post(f"/rooms/{room}/tariff", data)
    again = console.post(f"/rooms/{room}/tariff", data)  # a double click

    assert first.status_code == 200, first.text
    assert first.headers["HX-Trigger"] == "room-changed"
    assert 'data-result="tariff"' in first.text and "Alpha Dearer" in first.text
    assert again.status_code == 200 and 'data-result="tariff"' in again.text
    assert 'data-tariff="Alpha Dearer"' in console.get(f"/rooms/{room}/status").text
    with world.db.read() as conn:
        assert len(conn.execute(select(tariff_changes)).all()) == 1
    unchanged = console.post(
        f"/rooms/{room}/tariff", {**data, "idempotency_key": "another-12345678"}
    )
    assert 'data-result="tariff-unchanged"' in unchanged.text


def test_a_tariff_of_another_utility_is_explained_in_the_dialog(world: World) -> None:
    water = tariffs.create_tariff(
        world.db,
        organisation_id=world.alpha.id,
        name="Alpha Water",
        definition=flat_tariff("3.5", utility="water"),
        actor="test",
    )
    console = Console(world.client, world.alpha, "admin")
    response = console.post(
        f"/rooms/{world.alpha.room_id}/tariff",
        {"meter_id": world.alpha.meter_id, "tariff_id": water, "idempotency_key": "w-12345678"},
    )
    assert response.status_code == 422
    assert 'class="alert error"' in response.text and "measures electricity" in response.text


def _meter_billing_room(world: World) -> int:
    """The spare room with its own meter (Alpha-M3) on a meter-billing account."""
    accounts.open_account(
        world.db,
        organisation_id=world.alpha.id,
        request=accounts.OpenAccount(
            number="Alpha-MB-1",
            customer_id=world.alpha.customer_id,
            room_id=world.alpha.spare_room_id,
            meters=[
                accounts.MeterOpening(world.alpha.spare_meter_id, world.alpha.tariff_id, Decimal(1))
            ],
            billing_mode="meter",
        ),
        actor="setup",
    )
    return world.alpha.spare_room_id


def test_a_take_back_from_a_meter_billing_room_is_recorded_once_and_audited(
    world: World,
) -> None:
    room = _meter_billing_room(world)
    console = Console(world.client, world.alpha, "cashier")
    page = console.get(f"/rooms/{room}")
    assert 'data-action="take_back"' in page.text
    platform_room = console.get(f"/rooms/{world.alpha.room_id}")
    assert 'data-action="take_back"' not in platform_room.text
    dialog = console.get(f"/rooms/{room}/dialog/take_back", **HTMX)
    assert dialog.status_code == 200 and "Alpha-M3" in dialog.text
    key = dialog.text.split('name="idempotency_key" value="')[1].split('"')[0]
    data = {"meter_id": world.alpha.spare_meter_id, "amount": "10", "idempotency_key": key}
    first = console.post(f"/rooms/{room}/take-back", data)
    assert first.status_code == 200, first.text
    assert 'data-result="command"' in first.text
    assert console.post(f"/rooms/{room}/take-back", data).status_code == 200  # a double click
    commands = console.client.get("/api/v1/commands?kind=take_back").json()["items"]
    assert [c["params"]["amount"] for c in commands] == ["10.00"]
    every = console.post(
        f"/rooms/{room}/take-back",
        {"meter_id": world.alpha.spare_meter_id, "all": "true", "idempotency_key": "all-12345678"},
    )
    assert every.status_code == 200, every.text
    nothing = console.post(
        f"/rooms/{room}/take-back",
        {"meter_id": world.alpha.spare_meter_id, "idempotency_key": "none-12345678"},
    )
    assert nothing.status_code == 422 and 'class="alert error"' in nothing.text
    elsewhere = console.post(
        f"/rooms/{room}/take-back",
        {"meter_id": world.alpha.meter_id, "amount": "1", "idempotency_key": "else-12345678"},
    )
    assert elsewhere.status_code == 404
    with world.db.read() as conn:
        entries = conn.execute(
            select(audit_log.c.action).where(audit_log.c.action == "api.money.take_back")
        ).all()
    assert len(entries) == 2
    operator = Console(world.client, world.alpha, "operator")
    assert operator.get(f"/rooms/{room}/dialog/take_back", **HTMX).status_code == 403
