"""The console's notification log and channel settings: every role sees the log with status
colours and filters, a failed message shows its attempts and is sent again by those allowed,
channel settings and quiet hours are changed by admins only, secrets are asked for as
environment-variable names, another organisation's messages are not found."""

from __future__ import annotations

import asyncio

import pytest
from apikit import ROLES, World, unreachable
from consolekit import HTMX, Console

from meterdesk.notifications.channels.base import (
    DeliveryResult,
    OutgoingMessage,
    PermanentDeliveryError,
)
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.dispatcher import Dispatcher
from meterdesk.notifications.model import Channel
from meterdesk.sites import service as sites


class Refusing:
    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        raise PermanentDeliveryError("mailbox does not exist")


def fail_due_messages(world: World) -> None:
    registry = ChannelRegistry(overrides={Channel.LOG: Refusing()}, clock=world.db.clock)
    asyncio.run(Dispatcher(world.db, registry).drain())


@pytest.mark.parametrize("role", ROLES)
def test_every_role_reads_the_log_and_the_settings(world: World, role: str) -> None:
    console = Console(world.client, world.alpha, role)
    log = console.get("/notifications")
    assert log.status_code == 200, log.text
    assert f'data-notification="{world.alpha.notification_id}"' in log.text
    assert "Recharge credited" in log.text and 'data-status="pending"' in log.text
    assert 'href="/notifications"' in log.text and "Bravo" not in log.text
    settings = console.get("/settings/notifications")
    assert settings.status_code == 200 and 'data-channel="webhook"' in settings.text
    can_change = role == "admin"
    assert ('hx-post="/settings/notifications/channels/log"' in settings.text) is can_change
    assert ('hx-post="/settings/notifications/quiet-hours"' in settings.text) is can_change


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ("status=pending", True),
        ("status=failed", False),
        ("event=recharge_credited", True),
        ("event=refund", False),
        ("channel=log", True),
        ("channel=sms", False),
        ("account=Alpha-ACC-1", True),
        ("account=Bravo-ACC-1", False),
    ],
)
def test_the_log_filters(world: World, query: str, shown: bool) -> None:
    page = Console(world.client, world.alpha, "readonly").get(f"/notifications?{query}").text
    assert (f'data-notification="{world.alpha.notification_id}"' in page) is shown


def test_an_unknown_account_says_so(world: World) -> None:
    page = Console(world.client, world.alpha, "readonly").get("/notifications?account=Bravo-ACC-1")
    assert "No account Bravo-ACC-1." in page.text and "No messages." in page.text


def test_a_failed_message_shows_its_attempts_and_is_sent_again(world: World) -> None:
    fail_due_messages(world)
    console = Console(world.client, world.alpha, "operator")
    page = console.get("/notifications?status=failed").text
    row = page.split(f'data-notification="{world.alpha.notification_id}"')[1].split("</tr>")[0]
    assert 'data-status="failed"' in row and "mailbox does not exist" in row
    assert 'data-action="retry"' in row
    attempts = console.get(f"/notifications/{world.alpha.notification_id}/attempts", **HTMX)
    assert "mailbox does not exist" in attempts.text and "Failed" in attempts.text
    done = console.post(
        f"/notifications/{world.alpha.notification_id}/retry", {"idempotency_key": "retry-12345678"}
    )
    assert done.status_code == 200, done.text
    assert 'data-result="retried"' in done.text and 'data-status="pending"' in done.text
    again = console.post(
        f"/notifications/{world.alpha.notification_id}/retry", {"idempotency_key": "retry-87654321"}
    )
    assert again.status_code == 409 and "only failed or suppressed" in again.text


def test_a_message_nobody_could_get_is_refused_until_the_tenant_has_an_address(
    world: World,
) -> None:
    bare, failed = unreachable(world)
    console = Console(world.client, world.alpha, "operator")
    form = {"idempotency_key": "retry-bare-1234"}
    refused = console.post(f"/notifications/{failed}/retry", form)
    assert refused.status_code == 409
    assert f"customer {bare} has no phone for sms" in refused.text and "Not done" in refused.text
    sites.update_customer(
        world.db,
        organisation_id=world.alpha.id,
        customer_id=bare,
        change=sites.CustomerChange(phone="13700000000"),
        actor="t",
    )
    done = console.post(f"/notifications/{failed}/retry", form)
    assert done.status_code == 200, done.text
    assert 'data-result="retried"' in done.text and "+8613700000000" in done.text


def test_cashiers_see_no_retry_and_may_not_retry(world: World) -> None:
    fail_due_messages(world)
    console = Console(world.client, world.alpha, "cashier")
    assert 'data-action="retry"' not in console.get("/notifications").text
    refused = console.post(
        f"/notifications/{world.alpha.notification_id}/retry", {"idempotency_key": "retry-12345678"}
    )
    assert refused.status_code == 403


def test_another_organisations_message_is_not_found(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    assert console.get(f"/notifications/{world.bravo.notification_id}/attempts").status_code == 404
    refused = console.post(
        f"/notifications/{world.bravo.notification_id}/retry", {"idempotency_key": "retry-12345678"}
    )
    assert refused.status_code == 404


CHANNEL_FORM = {
    "provider": "webhook",
    "config": '{"url": "https://example.com/hook"}',
    "enabled": "on",
    "secret_name": ["secret"],
    "secret_variable": ["METERDESK_CONSOLE_TEST_SECRET"],
    "events": ["supply_cut", "supply_restored"],
}


def test_an_admin_saves_a_channel_and_sees_what_is_missing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("METERDESK_CONSOLE_TEST_SECRET", raising=False)
    console = Console(world.client, world.alpha, "admin")
    saved = console.post("/settings/notifications/channels/webhook", CHANNEL_FORM)
    assert saved.status_code == 200, saved.text
    assert 'data-result="channel"' in saved.text
    assert "METERDESK_CONSOLE_TEST_SECRET is not set" in saved.text
    monkeypatch.setenv("METERDESK_CONSOLE_TEST_SECRET", "the-value-itself")
    page = console.get("/settings/notifications").text
    card = page.split('data-channel="webhook"')[1].split("</section>")[0]
    assert "Ready" in card and "the-value-itself" not in card
    assert 'value="supply_cut" checked' in card and 'value="refund" checked' not in card


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({**CHANNEL_FORM, "config": '{"url": '}, "not valid JSON"),
        ({**CHANNEL_FORM, "config": '{"password": "x"}'}, "looks like a secret"),
        ({**CHANNEL_FORM, "secret_variable": ["plain secret"]}, "secret_refs"),
    ],
)
def test_bad_channel_settings_are_explained(
    world: World, form: dict[str, object], message: str
) -> None:
    console = Console(world.client, world.alpha, "admin")
    refused = console.post("/settings/notifications/channels/webhook", form)
    assert refused.status_code == 422 and message in refused.text
    page = console.get("/settings/notifications").text
    assert "Not configured" in page.split('data-channel="webhook"')[1].split("</section>")[0]


def test_only_admins_change_channels_and_quiet_hours(world: World) -> None:
    console = Console(world.client, world.alpha, "operator")
    assert console.post("/settings/notifications/channels/webhook", CHANNEL_FORM).status_code == 403
    quiet = {"start": "22:00", "end": "07:00"}
    assert console.post("/settings/notifications/quiet-hours", quiet).status_code == 403


def test_quiet_hours_are_saved_and_cleared(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    saved = console.post("/settings/notifications/quiet-hours", {"start": "22:00", "end": "07:00"})
    assert saved.status_code == 200 and 'value="22:00"' in saved.text
    assert 'value="07:00"' in console.get("/settings/notifications").text
    half = console.post("/settings/notifications/quiet-hours", {"start": "22:00"})
    assert half.status_code == 422
    cleared = console.post("/settings/notifications/quiet-hours", {"clear": "1"})
    assert 'value=""' in cleared.text


def test_the_pages_speak_chinese(world: World) -> None:
    console = Console(world.client, world.alpha, "admin", locale="zh-CN")
    log = console.get("/notifications").text
    assert "消息通知" in log and "充值到账" in log and "待发送" in log
    settings = console.get("/settings/notifications").text
    assert "免打扰时段" in settings and "短信" in settings and "环境变量" in settings


def test_an_admin_sends_a_test_message_and_follows_it_in_the_log(world: World) -> None:
    console = Console(world.client, world.alpha, "admin")
    card = console.get("/settings/notifications").text.split('data-channel="log"')[1]
    assert "Send a test message" in card.split("</section>")[0]
    sent = console.post("/settings/notifications/channels/log/test", {"language": "en"})
    assert sent.status_code == 200, sent.text
    assert 'data-result="test-message"' in sent.text and "queued for stdout" in sent.text
    assert "/notifications?channel=log&amp;event=channel_test" in sent.text
    log = console.get("/notifications?channel=log&event=channel_test").text
    assert "Test message" in log and "stdout" in log
    refused = console.post("/settings/notifications/channels/sms/test", {"address": "13800000000"})
    assert refused.status_code == 422 and "not configured" in refused.text


def test_operators_see_no_test_button_and_may_not_send(world: World) -> None:
    console = Console(world.client, world.alpha, "operator")
    assert "Send a test message" not in console.get("/settings/notifications").text
    assert console.post("/settings/notifications/channels/log/test", {}).status_code == 403


MINI_FORM = {
    "provider": "wechat_mini",
    "config": '{"templates": {"supply_cut": {"template_id": "t-cut", "fields": {"thing1": "{place}"}}}}',
    "enabled": "on",
    "secret_name": ["app_secret"],
    "secret_variable": ["METERDESK_CONSOLE_MINI_SECRET"],
}


def test_the_mini_program_channel_has_its_card_and_says_what_is_missing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("METERDESK_CONSOLE_MINI_SECRET", raising=False)
    console = Console(world.client, world.alpha, "admin")
    card = console.get("/settings/notifications").text.split('data-channel="wechat_mini"')[1]
    card = card.split("</section>")[0]
    assert "WeChat mini program" in card and "Not configured" in card
    assert 'name="secret_name" value="app_secret"' in card

    saved = console.post("/settings/notifications/channels/wechat_mini", MINI_FORM)
    assert saved.status_code == 200, saved.text
    assert "wechat_mini: setting &#39;app_id&#39; is missing" in saved.text
    fixed = {**MINI_FORM, "config": MINI_FORM["config"][:-1] + ', "app_id": "wx-mini"}'}
    saved = console.post("/settings/notifications/channels/wechat_mini", fixed)
    assert "environment variable METERDESK_CONSOLE_MINI_SECRET is not set" in saved.text
    monkeypatch.setenv("METERDESK_CONSOLE_MINI_SECRET", "the-mini-secret")
    card = console.get("/settings/notifications").text.split('data-channel="wechat_mini"')[1]
    assert "Ready" in card.split("</section>")[0]

    chinese = Console(world.client, world.alpha, "admin", locale="zh-CN")
    assert "微信小程序" in chinese.get("/settings/notifications").text
