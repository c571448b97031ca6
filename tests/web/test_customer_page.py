"""The customer page (F-CUSTOMER): a customer's contact fields and accounts, linked from the room
page and the customer list; an operator corrects the phone (stored as E.164, audited) or turns
deduction summaries off; a bad phone is said in the form and changes nothing; cashiers and
read-only users see no form and are refused; another organisation's customer is not found; the
page reads in Chinese."""

from __future__ import annotations

from typing import Any

import pytest
from apikit import World
from consolekit import Console

from meterdesk.sites.tables import customers


def stored(world: World) -> dict[str, Any]:
    with world.db.read() as conn:
        row = (
            conn.execute(customers.select().where(customers.c.id == world.alpha.customer_id))
            .mappings()
            .one()
        )
    return dict(row)


def form(world: World, **changed: str) -> dict[str, str]:
    """The edit form as the page fills it in, with ``changed`` typed over it."""
    now = stored(world)
    filled = {
        "name": now["name"],
        "phone": now["phone"] or "",
        "email": now["email"] or "",
        "wechat_openid": now["wechat_openid"] or "",
        "wechat_mini_openid": now["wechat_mini_openid"] or "",
        "language": now["language"],
    }
    if not now["summaries_opt_out"]:
        filled["summaries"] = "on"  # the ticked box
    return {**filled, **changed}


def audit_entries(world: World) -> list[dict[str, Any]]:
    answer = world.client.get(
        "/api/v1/audit",
        params={"action": "customer.update"},
        headers=world.alpha.auth("admin"),
    )
    return list(answer.json()["items"])


def test_the_page_shows_the_customers_fields_and_accounts_linked_to_their_room(
    world: World,
) -> None:
    alpha = world.alpha
    page = Console(world.client, alpha, "readonly").get(f"/customers/{alpha.customer_id}")
    assert page.status_code == 200
    assert "Alpha Customer" in page.text
    assert '<dd data-field="phone">+8613900000000</dd>' in page.text
    assert '<dd data-field="summaries">Wanted</dd>' in page.text
    assert f'<tr data-account="{alpha.account_number}">' in page.text
    assert f'<a href="/rooms/{alpha.room_id}">' in page.text
    assert "100.00" in page.text  # the balance the account opened with


def test_the_room_page_the_grid_and_the_list_link_to_the_customer(world: World) -> None:
    alpha = world.alpha
    console = Console(world.client, alpha, "operator")
    link = f'href="/customers/{alpha.customer_id}"'
    assert link in console.get(f"/rooms/{alpha.room_id}").text
    assert link in console.get("/rooms?view=table").text
    found = console.get("/customers?q=139%200000%200000").text  # as a phone is read aloud
    assert link in found
    assert 'href="/customers"' in found  # in the navigation
    assert link not in console.get("/customers?q=nobody").text


def test_an_operator_corrects_the_phone_stored_normalised_and_audited(world: World) -> None:
    console = Console(world.client, world.alpha, "operator")
    answer = console.post(
        f"/customers/{world.alpha.customer_id}", form(world, phone="138 0013 8000")
    )
    assert answer.status_code == 200, answer.text
    assert 'data-result="customer"' in answer.text
    assert 'name="phone" maxlength="40" value="+8613800138000"' in answer.text
    assert stored(world)["phone"] == "+8613800138000"
    (entry,) = audit_entries(world)
    assert entry["detail"]["changed"] == ["phone"]  # only what was changed
    assert entry["actor"] == world.alpha.username("operator")


def test_an_operator_turns_the_customers_summaries_off_and_on(world: World) -> None:
    console = Console(world.client, world.alpha, "operator")
    path = f"/customers/{world.alpha.customer_id}"
    off = {key: value for key, value in form(world).items() if key != "summaries"}
    assert console.post(path, off).status_code == 200
    assert stored(world)["summaries_opt_out"] is True
    page = console.get(path).text
    assert 'name="summaries" >' in page  # the box unticked
    console.post(path, form(world, summaries="on"))
    assert stored(world)["summaries_opt_out"] is False


def test_a_bad_phone_is_said_in_the_form_and_changes_nothing(world: World) -> None:
    console = Console(world.client, world.alpha, "operator")
    before = stored(world)
    answer = console.post(
        f"/customers/{world.alpha.customer_id}",
        form(world, phone="138 0013 800", name="Renamed"),
    )
    assert answer.status_code == 422
    assert 'class="alert error"' in answer.text
    assert "phone: &#39;138 0013 800&#39; is not a valid number for CN" in answer.text
    assert stored(world) == before
    assert audit_entries(world) == []


@pytest.mark.parametrize("role", ["cashier", "readonly"])
def test_cashiers_and_readers_see_no_form_and_are_refused(world: World, role: str) -> None:
    console = Console(world.client, world.alpha, role)
    path = f"/customers/{world.alpha.customer_id}"
    page = console.get(path).text
    assert "Alpha Customer" in page and f'hx-post="{path}"' not in page
    before = stored(world)
    refused = console.post(path, form(world, phone="138 0013 8000"))
    assert refused.status_code == 403
    assert stored(world) == before


def test_another_organisations_customer_is_not_found(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    path = f"/customers/{world.bravo.customer_id}"
    assert console.get(path).status_code == 404
    refused = console.post(path, {"name": "Taken", "language": "en"})
    assert refused.status_code == 404
    assert "Taken" not in console.get("/customers").text


def test_the_page_reads_in_chinese(world: World) -> None:
    console = Console(world.client, world.alpha, "operator", locale="zh-CN")
    page = console.get(f"/customers/{world.alpha.customer_id}").text
    for text in ("客户", "电话", "发送扣费通知", "账户", "在用", "余额", "保存"):
        assert text in page, text
    listing = console.get("/customers").text
    assert "姓名或电话" in listing and "扣费通知" in listing and "共 1 位客户" in listing


LANDLINE_NOTE = (
    "The phone is a landline: it cannot receive SMS (voice calls reach it). "
    "Add a mobile number for SMS."
)


def test_a_landline_is_saved_and_the_card_says_sms_cannot_reach_it(world: World) -> None:
    """Voice calls reach a landline, so it is accepted; SMS to it fail, so the card says so
    when it is saved and while it is stored — and not once a mobile replaces it."""
    console = Console(world.client, world.alpha, "operator")
    path = f"/customers/{world.alpha.customer_id}"
    assert 'data-warning="phone"' not in console.get(path).text  # a mobile

    answer = console.post(path, form(world, phone="010 6552 9988"))
    assert answer.status_code == 200, answer.text
    assert 'data-result="customer"' in answer.text and stored(world)["phone"] == "+861065529988"
    assert f'<p class="alert info" data-warning="phone">{LANDLINE_NOTE}</p>' in answer.text
    readonly = Console(world.client, world.alpha, "readonly").get(path).text
    assert LANDLINE_NOTE in readonly
    chinese = Console(world.client, world.alpha, "operator", locale="zh-CN").get(path).text
    assert "该电话为座机：无法接收短信（可接听语音电话）。如需短信通知，请添加手机号码。" in chinese

    mobile = console.post(path, form(world, phone="13800138000"))
    assert 'data-warning="phone"' not in mobile.text
