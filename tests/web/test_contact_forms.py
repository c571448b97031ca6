"""Phones and e-mails typed into the console: the opening wizard checks a new customer's on the
first step (said in the page, nothing stored) and carries them on as they will be stored; the
customer search finds an E.164 number typed with spaces; channel settings check operator
addresses."""

from __future__ import annotations

from urllib.parse import quote

from apikit import World
from consolekit import HTMX, Console
from sqlalchemy import insert

from meterdesk.sites.tables import customers as customers_table

AUTH_ROLE = "admin"


def customers(world: World, query: str) -> list[tuple[str, str | None, str | None]]:
    found = world.client.get("/api/v1/customers", params={"q": query}).json()["items"]
    return [(c["name"], c["phone"], c["email"]) for c in found]


def _stored_before_normalising(world: World, name: str, phone: str) -> None:
    """A customer whose phone is stored as it was typed, before numbers were normalised."""
    with world.db.transaction() as conn:
        conn.execute(
            insert(customers_table).values(
                organisation_id=world.alpha.id, name=name, phone=phone, created_at=world.clock()
            )
        )


def test_the_wizard_says_what_is_wrong_with_a_new_customers_phone_on_the_first_step(
    world: World,
) -> None:
    console = Console(world.client, world.alpha, AUTH_ROLE)
    base = {"room_id": world.alpha.spare_room_id, "customer_name": "Wizard Tenant", "step": 1}

    phone = console.post("/accounts/open/step", {**base, "customer_phone": "138 0013 800"})
    email = console.post("/accounts/open/step", {**base, "customer_email": "tenant@"})

    assert phone.status_code == 422 and 'class="alert error"' in phone.text
    assert (
        "customer_phone: &#39;138 0013 800&#39; is not a valid number for CN (10 digits; "
        "mainland mobiles have 11)" in phone.text
    )
    assert email.status_code == 422
    assert "customer_email: &#39;tenant@&#39; is not an e-mail address" in email.text
    assert customers(world, "Wizard") == []


def test_the_wizard_carries_a_new_customers_number_as_it_will_be_stored(world: World) -> None:
    console = Console(world.client, world.alpha, AUTH_ROLE)
    alpha = world.alpha
    base = {
        "room_id": alpha.spare_room_id,
        "customer_name": "Wizard Tenant",
        "customer_phone": "138-0013-8000",
        "customer_email": "Tenant@Example.COM",
        "key": "wizard-contacts-1",
    }
    step2 = console.post("/accounts/open/step", {**base, "step": 1})
    assert step2.status_code == 200, step2.text
    assert 'name="customer_phone" value="+8613800138000"' in step2.text
    assert 'name="customer_email" value="Tenant@example.com"' in step2.text

    meters = {"meter": [alpha.spare_meter_id], "tariff": [str(alpha.tariff_id)], "reading": ["0"]}
    choice = {**base, "number": "W-9", "billing_mode": "platform", "overdraft_limit": "0", **meters}
    opened = console.post("/accounts/open", {**choice, "initial_credit": "0"})
    assert opened.status_code == 200, opened.text
    assert customers(world, "Wizard") == [("Wizard Tenant", "+8613800138000", "Tenant@example.com")]


def test_the_wizard_accepts_a_landline_and_its_review_says_sms_cannot_reach_it(
    world: World,
) -> None:
    console = Console(world.client, world.alpha, AUTH_ROLE)
    alpha = world.alpha
    base = {
        "room_id": alpha.spare_room_id,
        "customer_name": "Landline Tenant",
        "customer_phone": "010 6552 9988",
        "key": "wizard-landline-1",
    }
    step2 = console.post("/accounts/open/step", {**base, "step": 1})
    assert 'name="customer_phone" value="+861065529988"' in step2.text
    meters = {"meter": [alpha.spare_meter_id], "tariff": [str(alpha.tariff_id)], "reading": ["0"]}
    choice = {**base, "number": "W-L", "billing_mode": "platform", "overdraft_limit": "0", **meters}
    review = console.post("/accounts/open/step", {**choice, "step": 2})
    assert review.status_code == 200, review.text
    assert '<p class="alert info" data-warning="phone">The phone is a landline: it cannot ' in (
        review.text
    )
    mobile = {**choice, "customer_phone": "+8613800138000", "step": 2}
    reviewed = console.post("/accounts/open/step", mobile)
    assert reviewed.status_code == 200 and 'data-warning="phone"' not in reviewed.text

    opened = console.post("/accounts/open", {**choice, "initial_credit": "0"})
    assert opened.status_code == 200, opened.text
    assert customers(world, "Landline") == [("Landline Tenant", "+861065529988", None)]


def test_opening_with_a_bad_phone_sent_straight_to_the_last_step_stores_nothing(
    world: World,
) -> None:
    console = Console(world.client, world.alpha, AUTH_ROLE)
    alpha = world.alpha
    data = {
        "room_id": alpha.spare_room_id, "customer_name": "Skipper", "customer_phone": "+86 12345",
        "key": "wizard-contacts-2", "number": "W-8", "billing_mode": "platform",
        "overdraft_limit": "0", "meter": [alpha.spare_meter_id], "tariff": [str(alpha.tariff_id)],
        "reading": ["0"], "initial_credit": "0",
    }  # fmt: skip

    answer = console.post("/accounts/open", data)

    assert answer.status_code == 422
    assert "customer_phone: &#39;+86 12345&#39; is not a valid number for CN" in answer.text
    assert customers(world, "Skipper") == []
    assert world.client.get("/api/v1/accounts", params={"q": "W-8"}).json()["items"] == []


def test_the_wizards_customer_search_finds_a_number_typed_with_spaces(world: World) -> None:
    console = Console(world.client, world.alpha, AUTH_ROLE)
    [(name, phone, _)] = customers(world, world.alpha.name("Customer"))
    assert phone == "+8613900000000"

    for typed in ("139 0000 0000", "139-0000-0000", "13900000000"):
        found = console.get(f"/accounts/open/customers?cq={typed}", **HTMX)
        assert name in found.text and "+8613900000000" in found.text, typed


def test_channel_settings_refuse_a_bad_operator_number_in_the_page(world: World) -> None:
    console = Console(world.client, world.alpha, AUTH_ROLE)
    config = '{"access_key_id": "id", "sign_name": "s", "operator_addresses": ["138 0013 800"]}'

    answer = console.post(
        "/settings/notifications/channels/sms", {"provider": "aliyun", "config": config}
    )

    assert answer.status_code == 422, answer.text
    assert "operator_addresses[0]: &#39;138 0013 800&#39; is not a valid number" in answer.text


def test_the_wizards_customer_search_finds_a_number_stored_before_normalising(
    world: World,
) -> None:
    """A customer stored as "13700137000" (before phones became E.164) is found by the number
    typed with its country code, so the wizard opens for them instead of a new customer."""
    _stored_before_normalising(world, "Old Spelling", "13700137000")
    console = Console(world.client, world.alpha, AUTH_ROLE)

    for typed in ("+86 137 0013 7000", "+8613700137000", "137 0013 7000"):
        found = console.get(f"/accounts/open/customers?cq={quote(typed)}", **HTMX)
        assert "Old Spelling" in found.text, typed


def test_a_number_typed_with_its_country_code_finds_one_stored_with_separators(
    world: World,
) -> None:
    """Stored before numbers were normalised, with the separators it was typed with: the
    console's and the API's search find it by the whole number with its country code."""
    _stored_before_normalising(world, "Dashed Spelling", "136-0013 (6001)")
    console = Console(world.client, world.alpha, AUTH_ROLE)

    for typed in ("+86 136 0013 6001", "+8613600136001", "136 0013 6001"):
        found = console.get(f"/accounts/open/customers?cq={quote(typed)}", **HTMX)
        assert "Dashed Spelling" in found.text, typed
        assert [name for name, _, _ in customers(world, typed)] == ["Dashed Spelling"], typed


def test_the_wizard_opens_for_the_customer_already_on_record_when_name_and_phone_are_typed_again(
    world: World,
) -> None:
    """A customer stored before phones were normalised, typed again in the wizard as a new
    customer with the number in another spelling: the account goes to that customer (as an
    opening from a preset or an import does), not to a second copy of them. Another name with
    the same phone is another customer."""
    _stored_before_normalising(world, "Typed Twice", "13600136000")
    console = Console(world.client, world.alpha, AUTH_ROLE)  # signs the client in
    [before_id] = [
        c["id"]
        for c in world.client.get("/api/v1/customers", params={"q": "Typed Twice"}).json()["items"]
    ]
    alpha = world.alpha
    data = {
        "room_id": alpha.spare_room_id, "customer_name": "Typed Twice",
        "customer_phone": "+86 136 0013 6000", "key": "wizard-twice-1", "number": "W-T",
        "billing_mode": "platform", "overdraft_limit": "0", "meter": [alpha.spare_meter_id],
        "tariff": [str(alpha.tariff_id)], "reading": ["0"], "initial_credit": "0",
    }  # fmt: skip

    opened = console.post("/accounts/open", data)

    assert opened.status_code == 200, opened.text
    assert customers(world, "Typed Twice") == [("Typed Twice", "13600136000", None)]
    [account] = world.client.get("/api/v1/accounts", params={"q": "W-T"}).json()["items"]
    assert account["customer_id"] == before_id


def test_channel_settings_save_a_landline_for_sms_with_a_note_and_for_voice_silently(
    world: World,
) -> None:
    console = Console(world.client, world.alpha, AUTH_ROLE, locale="zh-CN")
    config = (
        '{"access_key_id": "id", "sign_name": "s", '
        '"operator_addresses": ["13800138000", "010 6552 9988"]}'
    )

    sms = console.post(
        "/settings/notifications/channels/sms", {"provider": "aliyun", "config": config}
    )
    voice = console.post(
        "/settings/notifications/channels/voice", {"provider": "aliyun", "config": config}
    )

    assert sms.status_code == 200, sms.text
    assert (
        '<p class="alert info" data-warning="operator-address">运维人员地址 +86 10 6552 9988 '
        "为座机：无法接收短信" in sms.text
    )
    assert "+861065529988" in sms.text  # saved
    assert voice.status_code == 200, voice.text
    assert "+861065529988" in voice.text and 'data-warning="operator-address"' not in voice.text
    page = console.get("/settings/notifications")
    assert page.text.count('data-warning="operator-address"') == 1  # the SMS card's


def test_an_import_row_with_a_landline_says_so_in_the_report(world: World) -> None:
    console = Console(world.client, world.alpha, "operator")
    alpha = world.alpha
    header = (
        "account_number,customer_name,customer_phone,site,building,floor,room,meter_numbers,tariffs"
    )
    place = f"{alpha.name('Park')},{alpha.name('B1')},{alpha.name('F1')},{alpha.name('102')}"
    rows = [
        f"I-1,Land Line,010 6552 9988,{place},Alpha-M3,{alpha.name('Flat')}",
        f"I-2,Mobile,13800138000,{place},Alpha-M3,{alpha.name('Flat')}",
    ]
    content = "\n".join([header, *rows, ""]).encode()
    files = {"file": ("accounts.csv", content, "text/csv")}

    report = console.post("/accounts/import", {"idempotency_key": "import-landline-1"}, files=files)

    assert report.status_code == 200, report.text
    assert report.text.count('data-warning="phone"') == 1
    landline_row = report.text.split("I-1", 1)[1].split("</tr>", 1)[0]
    assert 'data-warning="phone">The phone is a landline: it cannot receive SMS' in landline_row


def test_the_wizard_takes_a_new_customers_mini_program_openid_and_refuses_a_bad_one(
    world: World,
) -> None:
    console = Console(world.client, world.alpha, AUTH_ROLE)
    alpha = world.alpha
    base = {
        "room_id": alpha.spare_room_id,
        "customer_name": "Mini Tenant",
        "customer_wechat_openid": "oOA-mini-tenant",
        "customer_wechat_mini_openid": "  oMINItenant0123456789abcdef ",
        "key": "wizard-mini-1",
    }
    page = console.get("/accounts/open").text
    assert 'name="customer_wechat_mini_openid"' in page and "WeChat openid (mini program)" in page

    bad = {**base, "customer_wechat_mini_openid": "mini tenant", "step": 1}
    refused = console.post("/accounts/open/step", bad)
    assert refused.status_code == 422
    assert "customer_wechat_mini_openid: &#39;mini tenant&#39; is not a WeChat openid" in (
        refused.text
    )

    step2 = console.post("/accounts/open/step", {**base, "step": 1})
    assert step2.status_code == 200, step2.text
    assert 'name="customer_wechat_mini_openid" value="oMINItenant0123456789abcdef"' in step2.text
    meters = {"meter": [alpha.spare_meter_id], "tariff": [str(alpha.tariff_id)], "reading": ["0"]}
    choice = {**base, "number": "W-M", "billing_mode": "platform", "overdraft_limit": "0", **meters}
    review = console.post("/accounts/open/step", {**choice, "step": 2})
    assert 'data-openid="wechat_mini"' in review.text
    opened = console.post("/accounts/open", {**choice, "initial_credit": "0"})
    assert opened.status_code == 200, opened.text
    found = world.client.get("/api/v1/customers", params={"q": "Mini Tenant"}).json()["items"]
    assert [(c["wechat_openid"], c["wechat_mini_openid"]) for c in found] == [
        ("oOA-mini-tenant", "oMINItenant0123456789abcdef")
    ]
