"""Phones and e-mails through the API, on SQLite and PostgreSQL: stored and returned as E.164 /
normalised; a bad one is 422 with the field, the value and the reason, and nothing is stored
(before, "138 0013 800", "+86 12345", "abc@" and "a@b" were accepted)."""

from __future__ import annotations

import re

import pytest
from apikit import World, error_code, key
from sqlalchemy import insert

from meterdesk.sites.tables import customers

CUSTOMERS = "/api/v1/customers"
PRESETS = "/api/v1/account-presets"


def customer_names(world: World) -> list[str]:
    items = world.client.get(CUSTOMERS, headers=world.alpha.auth()).json()["items"]
    return [item["name"] for item in items]


def refused(response: object, said: str) -> None:
    assert response.status_code == 422, response.text  # type: ignore[attr-defined]
    assert error_code(response) == "validation_error"
    assert re.match(said, response.json()["error"]["message"])  # type: ignore[attr-defined]


def test_a_customers_phone_and_email_come_back_normalised(any_world: World) -> None:
    auth = any_world.alpha.auth("operator")
    body = {"name": "Wang Fang", "phone": "0086 138-0013-8000", "email": "Wang@EXAMPLE.COM"}
    created = any_world.client.post(CUSTOMERS, json=body, headers=auth)
    assert created.status_code == 201, created.text
    assert (created.json()["phone"], created.json()["email"]) == (
        "+8613800138000",
        "Wang@example.com",
    )
    for query in ("13800138000", "138 0013 8000", "+86 138-0013"):
        found = any_world.client.get(CUSTOMERS, params={"q": query}, headers=auth).json()
        assert [c["name"] for c in found["items"]] == ["Wang Fang"], query


LANDLINE_WARNING = (
    "phone: +86 10 6552 9988 is a landline: it cannot receive SMS (voice calls reach it); "
    "add a mobile number for SMS"
)


def test_a_landline_is_accepted_and_the_answer_says_sms_cannot_reach_it(any_world: World) -> None:
    """Voice calls reach a landline, so it is not refused; but SMS to it fail, so whoever
    enters it is told on create, update and read — and no longer once a mobile replaces it."""
    auth = any_world.alpha.auth("operator")
    body = {"name": "Zhao Lei", "phone": "010 6552 9988"}
    created = any_world.client.post(CUSTOMERS, json=body, headers=auth)
    assert created.status_code == 201, created.text
    assert (created.json()["phone"], created.json()["phone_warning"]) == (
        "+861065529988",
        LANDLINE_WARNING,
    )
    url = f"{CUSTOMERS}/{created.json()['id']}"
    assert any_world.client.get(url, headers=auth).json()["phone_warning"] == LANDLINE_WARNING

    changed = any_world.client.patch(url, json={"phone": "13800138000"}, headers=auth)
    assert (changed.status_code, changed.json()["phone_warning"]) == (200, None)
    again = any_world.client.patch(url, json={"phone": "+86 10 6552 9988"}, headers=auth)
    assert (again.status_code, again.json()["phone_warning"]) == (200, LANDLINE_WARNING)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"phone": "138 0013 800"},
         r"phone: '138 0013 800' is not a valid number for CN \(10 digits; mainland mobiles have 11\)"),
        ({"phone": "+86 12345"}, r"phone: '\+86 12345' is not a valid number for CN \(5 digits"),
        ({"phone": "138OO138OOO"}, r"phone: '138OO138OOO' is not a phone number"),
        ({"email": "abc@"},
         r"email: 'abc@' is not an e-mail address \(There must be something after the @-sign"),
        ({"email": "a@b"}, r"email: 'a@b' is not an e-mail address \(.*It should have a period"),
    ],
)  # fmt: skip
def test_a_bad_phone_or_email_is_422_with_the_reason_and_nothing_is_stored(
    any_world: World, body: dict[str, str], said: str
) -> None:
    auth = any_world.alpha.auth("operator")
    before = customer_names(any_world)

    refused(any_world.client.post(CUSTOMERS, json={"name": "Wei", **body}, headers=auth), said)
    customer = any_world.alpha.customer_id
    patched = any_world.client.patch(
        f"{CUSTOMERS}/{customer}", json={"name": "Renamed", **body}, headers=auth
    )
    refused(patched, said)

    assert customer_names(any_world) == before
    stored = any_world.client.get(f"{CUSTOMERS}/{customer}", headers=auth).json()
    assert stored["phone"] == "+8613900000000"  # the builder's customer, unchanged


def preset_body(number: str, **contacts: str) -> dict[str, object]:
    return {
        "account_number": number,
        "customer_name": "Pre Tenant",
        "site": "Alpha Park",
        "building": "Alpha B1",
        "floor": "Alpha F1",
        "room": "Alpha 102",
        "meter_numbers": ["Alpha-M3"],
        "tariffs": ["Alpha Flat"],
        "opening_readings": ["0"],
        **contacts,
    }


def test_a_preset_stores_its_customers_phone_normalised_and_opens_with_it(
    any_world: World,
) -> None:
    auth = any_world.alpha.auth("admin")
    mini = "oMINIpre0123456789abcdefghi"
    body = preset_body(
        "A-PRE",
        customer_phone="139 1234 5678",
        customer_email="p@Example.com",
        customer_wechat_mini_openid=mini,
    )
    created = any_world.client.post(PRESETS, json=body, headers=auth)
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert (data["customer_phone"], data["customer_email"]) == ("+8613912345678", "p@example.com")
    assert data["customer_wechat_mini_openid"] == mini

    opened = any_world.client.post(
        f"{PRESETS}/{created.json()['id']}/open", headers={**auth, **key("open-pre")}
    )
    assert opened.status_code == 201, opened.text
    found = any_world.client.get(CUSTOMERS, params={"q": "Pre Tenant"}, headers=auth).json()
    assert [(c["phone"], c["email"], c["wechat_mini_openid"]) for c in found["items"]] == [
        ("+8613912345678", "p@example.com", mini)
    ]


def test_a_preset_with_a_landline_is_stored_and_the_answer_says_sms_cannot_reach_it(
    any_world: World,
) -> None:
    """As for a customer: the landline is accepted (voice reaches it), the answer says SMS will
    not — on the add, the read and the list — and a mobile gets no warning."""
    auth = any_world.alpha.auth("admin")
    created = any_world.client.post(
        PRESETS, json=preset_body("A-PRE", customer_phone="010 6552 9988"), headers=auth
    )
    assert created.status_code == 201, created.text
    said = "customer_" + LANDLINE_WARNING
    assert created.json()["phone_warning"] == said
    url = f"{PRESETS}/{created.json()['id']}"
    assert any_world.client.get(url, headers=auth).json()["phone_warning"] == said
    listed = any_world.client.get(PRESETS, headers=auth).json()["items"]
    assert [p["phone_warning"] for p in listed if p["account_number"] == "A-PRE"] == [said]
    mobile = any_world.client.post(
        PRESETS, json=preset_body("A-PRE-2", customer_phone="139 1234 5678"), headers=auth
    )
    assert (mobile.status_code, mobile.json()["phone_warning"]) == (201, None)


@pytest.mark.parametrize(
    ("contacts", "said"),
    [
        ({"customer_phone": "138 0013 800"}, r"customer_phone: '138 0013 800' is not a valid number"),
        ({"customer_email": "a@b"}, r"customer_email: 'a@b' is not an e-mail address"),
        ({"customer_wechat_mini_openid": "pre tenant"},
         r"customer_wechat_mini_openid: 'pre tenant' is not a WeChat openid"),
    ],
)  # fmt: skip
def test_a_preset_with_a_bad_phone_or_email_is_422_and_nothing_is_stored(
    any_world: World, contacts: dict[str, str], said: str
) -> None:
    auth = any_world.alpha.auth("admin")
    before = any_world.client.get(PRESETS, headers=auth).json()["items"]

    refused(
        any_world.client.post(PRESETS, json=preset_body("A-BAD", **contacts), headers=auth), said
    )

    assert any_world.client.get(PRESETS, headers=auth).json()["items"] == before


CSV_HEADER = (
    "account_number,customer_name,customer_phone,site,building,floor,room,meter_numbers,tariffs,"
    "opening_readings"
)
PLACE = "Alpha Park,Alpha B1,Alpha F1,Alpha 102,Alpha-M3,Alpha Flat,0"


def test_an_import_row_with_a_bad_phone_is_reported_with_its_row_and_opens_nothing(
    any_world: World,
) -> None:
    rows = [f"I-1,Bad Phone,138 0013 800,{PLACE}", f"I-2,Good Phone,138 0013 8000,{PLACE}"]
    content = "\n".join([CSV_HEADER, *rows, ""]).encode()
    files = {"file": ("accounts.csv", content, "text/csv")}
    headers = {**any_world.alpha.auth("operator"), **key("import-phones")}
    before = customer_names(any_world)

    response = any_world.client.post(
        "/api/v1/account-imports", files=files, data={"open_now": "true"}, headers=headers
    )

    assert response.status_code == 201, response.text
    report = response.json()
    assert (report["ok"], report["failed"]) == (1, 1)
    assert report["rows"][0]["row"] == 2 and not report["rows"][0]["ok"]
    assert report["rows"][0]["message"].startswith(
        "customer_phone: '138 0013 800' is not a valid number for CN (10 digits; "
        "mainland mobiles have 11)"
    )
    assert report["rows"][1] == {
        "row": 3,
        "account_number": "I-2",
        "ok": True,
        "message": "opened",
        "phone_warning": None,
    }
    assert customer_names(any_world) == [*before, "Good Phone"]
    accounts = any_world.client.get("/api/v1/accounts", headers=headers).json()["items"]
    assert "I-1" not in {a["number"] for a in accounts}


def test_an_import_row_with_a_landline_is_done_and_says_sms_cannot_reach_it(
    any_world: World,
) -> None:
    """As for a customer or a preset: the row is pre-entered (voice calls reach a landline),
    and its report row says SMS will not; a mobile's row has no warning."""
    rows = [f"I-1,Land Line,010 6552 9988,{PLACE}", f"I-2,Mobile,138 0013 8000,{PLACE}"]
    files = {"file": ("accounts.csv", "\n".join([CSV_HEADER, *rows, ""]).encode(), "text/csv")}
    headers = {**any_world.alpha.auth("operator"), **key("import-landline")}

    response = any_world.client.post("/api/v1/account-imports", files=files, headers=headers)

    assert response.status_code == 201, response.text
    report = response.json()
    assert (report["ok"], report["failed"]) == (2, 0)
    assert [(r["message"], r["phone_warning"]) for r in report["rows"]] == [
        ("pre-entered", "customer_" + LANDLINE_WARNING),
        ("pre-entered", None),
    ]
    stored = any_world.client.get(PRESETS, headers=headers).json()["items"]
    assert [p["data"]["customer_phone"] for p in stored if p["account_number"] == "I-1"] == [
        "+861065529988"
    ]


def test_a_preset_opens_for_the_customer_stored_with_the_old_spelling_of_its_phone(
    any_world: World,
) -> None:
    """A customer stored before phones were normalised ("13800138000") is the preset's
    "+86 138 0013 8000": the opening uses that customer instead of creating a second one."""
    with any_world.db.transaction() as conn:
        old = conn.execute(
            insert(customers).values(
                organisation_id=any_world.alpha.id,
                name="Pre Tenant",
                phone="13800138000",
                created_at=any_world.clock(),
            )
        ).inserted_primary_key[0]
    auth = any_world.alpha.auth("admin")
    created = any_world.client.post(
        PRESETS, json=preset_body("A-OLD", customer_phone="+86 138 0013 8000"), headers=auth
    )
    assert created.status_code == 201, created.text

    opened = any_world.client.post(
        f"{PRESETS}/{created.json()['id']}/open", headers={**auth, **key("open-old")}
    )

    assert opened.status_code == 201, opened.text
    account = any_world.client.get(f"/api/v1/accounts/{opened.json()['id']}", headers=auth)
    assert account.json()["customer_id"] == old
    assert customer_names(any_world).count("Pre Tenant") == 1


def test_operator_addresses_and_test_message_addresses_are_checked(any_world: World) -> None:
    auth = any_world.alpha.auth("admin")
    path = "/api/v1/notification-channels/sms"
    body = {
        "provider": "aliyun",
        "config": {"access_key_id": "id", "sign_name": "s", "operator_addresses": ["138 0013 800"]},
    }
    refused(
        any_world.client.put(path, json=body, headers=auth),
        r"operator_addresses\[0\]: '138 0013 800' is not a valid number",
    )
    body["config"]["operator_addresses"] = ["138 0013 8000"]  # type: ignore[index]
    saved = any_world.client.put(path, json=body, headers=auth)
    assert saved.status_code == 200, saved.text
    settings = any_world.client.get("/api/v1/notification-channels", headers=auth).json()
    sms = next(item for item in settings["items"] if item["channel"] == "sms")
    assert sms["config"]["operator_addresses"] == ["+8613800138000"]
    test = any_world.client.post(f"{path}/test", json={"address": "+86 12345"}, headers=auth)
    refused(test, r"address: '\+86 12345' is not a valid number for CN")
    assert sms["address_warnings"] == []  # a mobile


def test_a_landline_among_the_sms_operator_addresses_is_saved_with_a_warning(
    any_world: World,
) -> None:
    """SMS cannot reach a landline, so saving one as an SMS channel's operator address says
    so (it is still saved: voice reaches it); the voice channel takes it without a word."""
    auth = any_world.alpha.auth("admin")
    config = {
        "access_key_id": "id",
        "sign_name": "s",
        "operator_addresses": ["138 0013 8000", "010-6552-9988"],
    }
    sms = any_world.client.put(
        "/api/v1/notification-channels/sms",
        json={"provider": "aliyun", "config": config},
        headers=auth,
    )
    assert sms.status_code == 200, sms.text
    assert sms.json()["config"]["operator_addresses"] == ["+8613800138000", "+861065529988"]
    said = LANDLINE_WARNING.replace("phone:", "operator_addresses[1]:")
    assert sms.json()["address_warnings"] == [said]
    again = any_world.client.get("/api/v1/notification-channels/sms", headers=auth).json()
    assert again["address_warnings"] == [said]

    voice = any_world.client.put(
        "/api/v1/notification-channels/voice",
        json={"provider": "aliyun", "config": {**config, "called_show_number": "4001234567"}},
        headers=auth,
    )
    assert voice.status_code == 200, voice.text
    assert voice.json()["config"]["operator_addresses"] == ["+8613800138000", "+861065529988"]
    assert voice.json()["address_warnings"] == []


def test_a_customers_mini_program_openid_is_stored_and_a_bad_one_is_422(any_world: World) -> None:
    auth = any_world.alpha.auth("operator")
    mini = "oMINIwang0123456789abcdefgh"
    body = {"name": "Wang Fang", "wechat_openid": "oOA-wangfang", "wechat_mini_openid": mini}
    created = any_world.client.post(CUSTOMERS, json=body, headers=auth)
    assert created.status_code == 201, created.text
    assert (created.json()["wechat_openid"], created.json()["wechat_mini_openid"]) == (
        "oOA-wangfang",
        mini,
    )
    before = customer_names(any_world)

    said = r"wechat_mini_openid: 'wang fang 138' is not a WeChat openid \(6 to 64 letters"
    bad = {"wechat_mini_openid": "wang fang 138"}
    refused(any_world.client.post(CUSTOMERS, json={"name": "Wei", **bad}, headers=auth), said)
    url = f"{CUSTOMERS}/{created.json()['id']}"
    refused(any_world.client.patch(url, json={"name": "Renamed", **bad}, headers=auth), said)
    assert customer_names(any_world) == before
    assert any_world.client.get(url, headers=auth).json()["wechat_mini_openid"] == mini

    cleared = any_world.client.patch(url, json={"wechat_mini_openid": ""}, headers=auth)
    assert cleared.status_code == 200, cleared.text
    assert (cleared.json()["wechat_openid"], cleared.json()["wechat_mini_openid"]) == (
        "oOA-wangfang",
        None,
    )
