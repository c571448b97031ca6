"""The notification log, retries, channel settings and quiet hours through the API: filters and
pages over the outbox, each message's delivery attempts, a failed message sent again (once per
key, audited), channel settings whose secrets stay in the environment — never returned — and
the quiet window."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from apikit import World, error_code, key, unreachable

from meterdesk.notifications import queueing
from meterdesk.notifications.channels.base import (
    DeliveryResult,
    OutgoingMessage,
    PermanentDeliveryError,
)
from meterdesk.notifications.channels.log import LogChannel
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.dispatcher import Dispatcher
from meterdesk.notifications.model import Channel
from support.outbox import write_tied_history

API = "/api/v1"
SECRET_VALUE = "s3cr3t-never-shown"  # noqa: S105 - a test value that must never be echoed


def get(world: World, path: str, role: str = "readonly") -> Any:
    response = world.client.get(f"{API}{path}", headers=world.alpha.auth(role))
    assert response.status_code == 200, response.text
    return response.json()


class Refusing:
    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        raise PermanentDeliveryError("the provider refused the template")


def deliver(world: World, adapter: Any) -> None:
    registry = ChannelRegistry(overrides={Channel.LOG: adapter}, clock=world.db.clock)
    asyncio.run(Dispatcher(world.db, registry).drain())


def queue(world: World, event: str, key_: str, **params: Any) -> int:
    (found,) = queueing.enqueue(
        world.db,
        organisation_id=world.alpha.id,
        event=event,
        key=key_,
        params=params,
        account_id=world.alpha.account_id,
    )
    return found


def test_the_log_lists_the_worlds_message_with_its_snapshot(world: World) -> None:
    (item,) = get(world, "/notifications")["items"]
    assert item["id"] == world.alpha.notification_id
    assert (item["event_kind"], item["channel"], item["status"]) == (
        "recharge_credited",
        "log",
        "pending",
    )
    assert item["params"]["amount"] == "100.00" and item["params"]["customer"] == "Alpha Customer"
    assert get(world, "/notification-counts") == {
        "pending": 1,
        "sending": 0,
        "sent": 0,
        "failed": 0,
        "suppressed": 0,
        "cancelled": 0,
    }


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("status=pending", 1),
        ("status=failed", 0),
        ("event=recharge_credited", 1),
        ("event=refund", 0),
        ("channel=log", 1),
        ("channel=sms", 0),
        ("account_id={account}", 1),
        ("customer_id={customer}", 0),  # the log channel's row names no customer
        ("since=2026-11-02T00:00:00Z", 1),
        ("since=2026-11-02T00:00:01Z", 0),
        ("until=2026-11-02T00:00:00Z", 0),
    ],
)
def test_the_log_filters(world: World, query: str, found: int) -> None:
    ids = {"account": world.alpha.account_id, "customer": world.alpha.customer_id}
    assert len(get(world, f"/notifications?{query.format(**ids)}")["items"]) == found


def test_bad_filters_are_422(world: World) -> None:
    for query in ("status=lost", "event=party", "since=2026-11-02T00:00:00"):
        response = world.client.get(f"{API}/notifications?{query}", headers=world.alpha.auth())
        assert response.status_code == 422, query


def test_the_log_pages_newest_first(world: World) -> None:
    made = [queue(world, "refund", f"refund:{n}", amount="1.00", balance="99.00") for n in range(3)]
    first = get(world, "/notifications?limit=2")
    rest = get(world, f"/notifications?limit=2&cursor={first['next_cursor']}")
    ids = [n["id"] for n in first["items"] + rest["items"]]
    assert ids == [*reversed(made), world.alpha.notification_id]
    assert rest["next_cursor"] is None


@pytest.mark.integration
def test_a_time_bounded_log_pages_through_equal_times_once_each(any_world: World) -> None:
    """With ``since``/``until`` the log is in the order the messages were queued (then id), and
    each cursor goes on after its message in that order: every message once, also when ids and
    times are out of step and several share an instant, on SQLite and PostgreSQL."""
    start = any_world.clock() + timedelta(days=1)
    history = write_tied_history(
        any_world.db, any_world.alpha.id, start, others=[any_world.bravo.id]
    )
    until = (start + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    expected = [id_ for at, id_ in history if at < start + timedelta(minutes=5)]
    expected.append(any_world.alpha.notification_id)  # the world's own, a day before
    assert expected != sorted(expected, reverse=True)  # ids and times out of step
    listed, cursor = [], ""
    while cursor is not None:
        page = get(any_world, f"/notifications?until={until}&limit=2&cursor={cursor}")
        assert len(page["items"]) == 2 or page["next_cursor"] is None
        listed += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
    assert listed == expected
    unknown = any_world.client.get(
        f"{API}/notifications?until={until}&cursor=999999999", headers=any_world.alpha.auth()
    )
    assert unknown.status_code == 422 and error_code(unknown) == "validation_error"


def test_a_delivered_message_shows_its_attempt(world: World) -> None:
    deliver(world, LogChannel(io.StringIO()))
    found = get(world, f"/notifications/{world.alpha.notification_id}")
    assert found["status"] == "sent" and found["attempts"] == 1
    (attempt,) = found["attempt_log"]
    assert attempt["result"] == "sent" and attempt["attempt"] == 1
    assert attempt["provider_message_id"] == f"log-{world.alpha.notification_id}"
    assert "100.00" in (attempt["detail"] or "")


def retry(world: World, name: str, role: str = "operator") -> Any:
    return world.client.post(
        f"{API}/notifications/{world.alpha.notification_id}/retry",
        headers={**world.alpha.auth(role), **key(name)},
    )


def test_a_failed_message_is_sent_again_once_per_key(world: World) -> None:
    assert error_code(retry(world, "r-0")) == "conflict"  # still pending: nothing to retry
    deliver(world, Refusing())
    failed = get(world, f"/notifications/{world.alpha.notification_id}")
    assert failed["status"] == "failed" and "refused the template" in failed["last_error"]
    again = retry(world, "r-1")
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "pending" and again.json()["attempts"] == 0
    assert [a["result"] for a in again.json()["attempt_log"]] == ["failed"]
    replay = retry(world, "r-1")
    assert replay.headers["Idempotent-Replay"] == "true" and replay.json() == again.json()
    deliver(world, LogChannel(io.StringIO()))
    sent = get(world, f"/notifications/{world.alpha.notification_id}")
    assert sent["status"] == "sent"
    assert [a["result"] for a in sent["attempt_log"]] == ["failed", "sent"]
    entries = world.client.get(f"{API}/audit?limit=500", headers=world.alpha.auth()).json()
    actions = {e["action"]: e for e in entries["items"]}
    assert actions["api.notifications.retry"]["source"] == "testclient"
    assert actions["notifications.retry"]["detail"] == {"was": "failed"}


@dataclass
class Accepting:
    seen: list[OutgoingMessage] = field(default_factory=list)

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        self.seen.append(message)
        return DeliveryResult(f"sms-{message.outbox_id}")


def test_a_message_nobody_could_get_goes_to_the_phone_added_since(world: World) -> None:
    bare, failed = unreachable(world)
    path, headers = f"{API}/notifications/{failed}/retry", world.alpha.auth("operator")
    refused = world.client.post(path, headers={**headers, **key("r-bare")})
    assert refused.status_code == 409 and error_code(refused) == "conflict"
    assert f"customer {bare} has no phone for sms" in refused.json()["error"]["message"]
    still = get(world, f"/notifications/{failed}")
    assert (still["status"], still["address"], still["attempt_log"]) == ("failed", "", [])

    patched = world.client.patch(
        f"{API}/customers/{bare}", json={"phone": "13700000000"}, headers=world.alpha.auth()
    )
    assert patched.status_code == 200, patched.text
    again = world.client.post(path, headers={**headers, **key("r-bare")})  # a refusal is not kept
    assert again.status_code == 200, again.text
    assert (again.json()["status"], again.json()["address"]) == ("pending", "+8613700000000")
    sms = Accepting()
    registry = ChannelRegistry(
        overrides={Channel.SMS: sms, Channel.LOG: LogChannel(io.StringIO())}, clock=world.db.clock
    )
    asyncio.run(Dispatcher(world.db, registry).drain())
    assert [m.address for m in sms.seen] == ["+8613700000000"]
    assert get(world, f"/notifications/{failed}")["status"] == "sent"


@pytest.mark.parametrize("role", ["cashier", "readonly"])
def test_cashiers_and_readonly_may_not_retry(world: World, role: str) -> None:
    assert retry(world, "r-x", role=role).status_code == 403


def put_channel(world: World, channel: str, body: dict[str, Any], role: str = "admin") -> Any:
    return world.client.put(
        f"{API}/notification-channels/{channel}", json=body, headers=world.alpha.auth(role)
    )


WEBHOOK = {
    "provider": "webhook",
    "config": {"url": "https://example.com/hook"},
    "secret_refs": {"secret": "METERDESK_TEST_WEBHOOK_SECRET"},
    "events": ["supply_cut", "supply_restored"],
}


def test_every_channel_is_listed_configured_or_not(world: World) -> None:
    channels = {c["channel"]: c for c in get(world, "/notification-channels")["items"]}
    assert list(channels) == [
        "sms", "voice", "email", "wechat", "wechat_mini", "push", "webhook", "log"
    ]  # fmt: skip
    assert channels["log"]["configured"] and channels["log"]["problem"] is None
    assert not channels["sms"]["configured"] and channels["sms"]["providers"] == [
        "aliyun",
        "tencent",
    ]


def test_a_secret_shows_as_its_variable_and_whether_it_is_set_never_its_value(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("METERDESK_TEST_WEBHOOK_SECRET", raising=False)
    saved = put_channel(world, "webhook", WEBHOOK)
    assert saved.status_code == 200, saved.text
    body = saved.json()
    assert body["secrets"] == [
        {"name": "secret", "variable": "METERDESK_TEST_WEBHOOK_SECRET", "set": False}
    ]
    assert "METERDESK_TEST_WEBHOOK_SECRET is not set" in body["problem"]
    assert body["events"] == ["supply_cut", "supply_restored"] and body["enabled"] is True
    monkeypatch.setenv("METERDESK_TEST_WEBHOOK_SECRET", SECRET_VALUE)
    shown = get(world, "/notification-channels/webhook")
    assert shown["secrets"][0]["set"] is True and shown["problem"] is None
    everything = world.client.get(f"{API}/notification-channels", headers=world.alpha.auth())
    audit = world.client.get(f"{API}/audit?limit=500", headers=world.alpha.auth())
    assert SECRET_VALUE not in everything.text + audit.text + saved.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {**WEBHOOK, "config": {"url": "https://x", "secret": SECRET_VALUE}},
            "looks like a secret",
        ),
        ({**WEBHOOK, "secret_refs": {"secret": SECRET_VALUE}}, "secret_refs"),
        ({**WEBHOOK, "provider": "aliyun"}, "unknown provider"),
        ({**WEBHOOK, "events": ["party"]}, "events"),
    ],
)
def test_bad_channel_settings_are_422_and_nothing_is_stored(
    world: World, body: dict[str, Any], message: str
) -> None:
    refused = put_channel(world, "webhook", body)
    assert refused.status_code == 422 and message in refused.json()["error"]["message"]
    assert SECRET_VALUE not in refused.text
    assert get(world, "/notification-channels/webhook")["configured"] is False


def test_settings_without_a_needed_value_say_what_is_missing(world: World) -> None:
    saved = put_channel(world, "email", {"provider": "smtp", "config": {"host": "mail"}}).json()
    assert saved["problem"] == "email: setting 'port' is missing"
    assert saved["secrets"] == [{"name": "password", "variable": None, "set": False}]


@pytest.mark.parametrize("role", ["operator", "cashier", "readonly"])
def test_only_an_admin_changes_channels_and_quiet_hours(world: World, role: str) -> None:
    assert put_channel(world, "webhook", WEBHOOK, role=role).status_code == 403
    quiet = world.client.put(
        f"{API}/notification-quiet-hours",
        json={"start": "22:00", "end": "07:00"},
        headers=world.alpha.auth(role),
    )
    assert quiet.status_code == 403


def put_quiet(world: World, body: dict[str, Any]) -> Any:
    return world.client.put(
        f"{API}/notification-quiet-hours", json=body, headers=world.alpha.auth("admin")
    )


def test_quiet_hours_are_set_and_cleared(world: World) -> None:
    assert get(world, "/notification-quiet-hours") == {"start": None, "end": None}
    assert put_quiet(world, {"start": "22:00", "end": "07:30"}).json() == {
        "start": "22:00",
        "end": "07:30",
    }
    assert get(world, "/notification-quiet-hours") == {"start": "22:00", "end": "07:30"}
    assert put_quiet(world, {"start": "22:00"}).status_code == 422
    assert put_quiet(world, {"start": "24:00", "end": "07:00"}).status_code == 422
    assert get(world, "/notification-quiet-hours")["start"] == "22:00"
    assert put_quiet(world, {"start": None, "end": None}).json() == {"start": None, "end": None}


def test_quiet_hours_hold_a_normal_message(world: World) -> None:
    put_quiet(world, {"start": "00:00", "end": "23:59"})  # Shanghai: always quiet, but a minute
    world.clock.advance(timedelta(minutes=1))
    made = queue(world, "refund", "refund:quiet", amount="1.00", balance="99.00")
    found = get(world, f"/notifications/{made}")
    assert found["urgency"] == "normal" and found["next_attempt_at"] > found["created_at"]


# --- a test message per channel ----------------------------------------------------------------


def send_test(world: World, channel: str, body: dict[str, Any], role: str = "admin") -> Any:
    return world.client.post(
        f"{API}/notification-channels/{channel}/test", json=body, headers=world.alpha.auth(role)
    )


def test_a_test_message_goes_out_at_once_and_shows_in_the_log(world: World) -> None:
    put_quiet(world, {"start": "00:00", "end": "23:59"})  # quiet all day: a test still goes now
    sent = send_test(world, "log", {"language": "en"})
    assert sent.status_code == 202, sent.text
    made = sent.json()
    assert (made["event_kind"], made["channel"], made["address"], made["status"]) == (
        "channel_test",
        "log",
        "stdout",
        "pending",
    )
    stream = io.StringIO()
    deliver(world, LogChannel(stream))
    found = get(world, f"/notifications/{made['id']}")
    assert found["status"] == "sent" and found["language"] == "en"
    assert "Test message from meterdesk on the log channel" in stream.getvalue()
    again = send_test(world, "log", {}).json()  # each press is a message of its own
    assert again["id"] != made["id"] and again["language"] == "zh-CN"
    entries = world.client.get(f"{API}/audit?limit=500", headers=world.alpha.auth()).json()
    tests = [e for e in entries["items"] if e["action"] == "notifications.test_message"]
    assert len(tests) == 2 and tests[0]["source"] == "testclient"


@pytest.mark.parametrize(
    ("channel", "body", "message"),
    [
        ("sms", {}, "not configured"),
        ("log", {"address": "someone@example.com"}, "configured target"),
        ("email", {"address": "not an address"}, "not an e-mail address"),
        ("email", {}, "give an address"),
        ("log", {"language": "fr"}, "language"),
    ],
)
def test_a_test_message_that_cannot_go_is_422_and_nothing_is_queued(
    world: World, channel: str, body: dict[str, Any], message: str
) -> None:
    put_channel(world, "email", {"provider": "smtp", "config": {"host": "mail", "port": 25}})
    before = get(world, "/notifications")["items"]
    refused = send_test(world, channel, body)
    assert refused.status_code == 422, refused.text
    assert message in refused.text
    assert get(world, "/notifications")["items"] == before


def test_a_disabled_channel_sends_no_test(world: World) -> None:
    put_channel(world, "log", {"provider": "log", "enabled": False})
    refused = send_test(world, "log", {})
    assert refused.status_code == 422 and "disabled" in refused.json()["error"]["message"]


@pytest.mark.parametrize("role", ["operator", "cashier", "readonly"])
def test_only_an_admin_sends_test_messages(world: World, role: str) -> None:
    assert send_test(world, "log", {}, role=role).status_code == 403


def test_a_test_message_is_not_an_event_to_subscribe_to(world: World) -> None:
    refused = put_channel(world, "webhook", {**WEBHOOK, "events": ["channel_test"]})
    assert refused.status_code == 422


def test_the_mini_program_channel_is_set_through_the_api_and_says_what_is_wrong(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METERDESK_TEST_MINI_SECRET", SECRET_VALUE)
    fields = {"thing1": "{place}", "amount2": "{balance}元"}
    body = {
        "provider": "wechat_mini",
        "config": {
            "app_id": "wx-mini",
            "miniprogram_state": "beta",
            "templates": {"balance_alarm": {"template_id": "t", "fields": fields}},
        },
        "secret_refs": {"app_secret": "METERDESK_TEST_MINI_SECRET"},
    }
    saved = put_channel(world, "wechat_mini", body)
    assert saved.status_code == 200, saved.text
    assert saved.json()["problem"] == (
        "wechat_mini: bad settings: miniprogram_state 'beta' is not one of formal, trial, developer"
    )
    body["config"]["miniprogram_state"] = "trial"  # type: ignore[index]
    saved = put_channel(world, "wechat_mini", body)
    assert saved.json()["problem"] is None and saved.json()["providers"] == ["wechat_mini"]
    wrong = put_channel(world, "wechat_mini", {**body, "provider": "wechat"})
    assert wrong.status_code == 422 and "unknown provider 'wechat'" in wrong.text
