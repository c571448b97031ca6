"""``meterdesk notification …`` as an operator uses it, on the embedded SQLite: channels set and
listed (secrets only as environment-variable names), the log of a recharge's message with
filters and ``--json``, one message's attempts, a failed message sent again, quiet hours — and
the exit codes of bad input (validation 2, not found 3, conflict 4)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_cli import ORG, data_dir, instant, open_account, run, run_json, set_up_places

from meterdesk.cli import common as cli_common
from meterdesk.notifications.channels.base import (
    DeliveryResult,
    OutgoingMessage,
    PermanentDeliveryError,
)
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.dispatcher import Dispatcher
from meterdesk.notifications.model import Channel
from support.outbox import write_tied_history

pytestmark = pytest.mark.integration
__all__ = ["data_dir"]


class Refusing:
    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        raise PermanentDeliveryError("number does not exist")


def fail_everything_due() -> None:
    registry = ChannelRegistry(overrides={Channel.LOG: Refusing()})
    asyncio.run(Dispatcher(cli_common.app().db, registry).drain())


def a_recharge_with_a_message(tmp_path: Path) -> int:
    open_account(set_up_places(tmp_path))
    assert (
        "log      log enabled"
        in run("notification", "channel", "set", "log", *ORG, "--provider", "log").stdout
    )
    run("recharge", "A-1", "20", *ORG, "--key", "receipt-1")
    (message,) = run_json("notification", "log", *ORG)
    assert (message["event_kind"], message["status"]) == ("recharge_credited", "pending")
    return int(message["id"])


def test_the_log_shows_a_recharges_message_with_filters(data_dir: Path, tmp_path: Path) -> None:
    message_id = a_recharge_with_a_message(tmp_path)
    assert len(run_json("notification", "log", *ORG, "--account", "A-1")) == 1
    assert run_json("notification", "log", *ORG, "--event", "refund") == []
    assert run_json("notification", "log", *ORG, "--status", "failed") == []
    assert run_json("notification", "log", *ORG, "--since", "2999-01-01T00:00:00Z") == []
    text = run("notification", "log", *ORG).stdout
    assert f"#{message_id}" in text and "recharge_credited" in text and "in all: pending 1" in text
    header, line = text.splitlines()[:2]  # a header says what each column is; the account shows
    assert header.split()[:4] == ["#", "queued", "(UTC)", "event"] and " A-1 " in line
    shown = run_json("notification", "show", str(message_id), *ORG)
    assert shown["params"]["amount"] == "20.00" and shown["attempt_log"] == []
    assert "no delivery attempt yet" in run("notification", "show", str(message_id), *ORG).stdout
    run("notification", "log", *ORG, "--event", "party", code=2)
    run("notification", "log", *ORG, "--account", "NOPE", code=3)
    run("notification", "show", "999", *ORG, code=3)


def test_the_log_pages_a_time_bounded_list_by_the_time_queued(data_dir: Path) -> None:
    """``--before`` the last id shown goes on after that message in the list's order: with
    ``--until`` the time queued, then id (ids and times out of step, equal times); each once."""
    run("org", "create", "Acme")
    run("org", "create", "Other")
    db = cli_common.app().db
    start = datetime(2026, 11, 2, tzinfo=UTC)
    others = [cli_common.organisation_id("Other")]
    history = write_tied_history(db, cli_common.organisation_id("Acme"), start, others=others)
    until = instant(start + timedelta(minutes=5))
    expected = [id_ for at, id_ in history if at < start + timedelta(minutes=5)]
    listed: list[int] = []
    while True:
        before = ["--before", str(listed[-1])] if listed else []
        page = run_json("notification", "log", *ORG, "--until", until, "--limit", "3", *before)
        listed += [row["id"] for row in page]
        if len(page) < 3:
            break
    assert listed == expected and expected != sorted(expected, reverse=True)
    assert (
        "no message 999999"
        in run("notification", "log", *ORG, "--until", until, "--before", "999999", code=2).stderr
    )


def test_a_failed_message_is_sent_again(data_dir: Path, tmp_path: Path) -> None:
    message_id = a_recharge_with_a_message(tmp_path)
    assert (
        "only failed or suppressed"
        in run("notification", "retry", str(message_id), *ORG, code=4).stderr
    )
    fail_everything_due()
    failed = run_json("notification", "show", str(message_id), *ORG)
    assert failed["status"] == "failed" and failed["last_error"] == "number does not exist"
    assert [a["result"] for a in failed["attempt_log"]] == ["failed"]
    again = run("notification", "retry", str(message_id), *ORG, "--actor", "li")
    assert f"notification #{message_id} is pending again" in again.stdout
    assert run_json("notification", "log", *ORG, "--status", "pending")[0]["attempts"] == 0


def test_channels_keep_secrets_in_the_environment(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("org", "create", "Acme")
    monkeypatch.delenv("METERDESK_HOOK_SECRET", raising=False)
    made = run_json(
        "notification", "channel", "set", "webhook", *ORG, "--provider", "webhook",
        "--set", "url=https://example.com/hook", "--secret-ref", "secret=METERDESK_HOOK_SECRET",
        "--event", "supply_cut",
    )  # fmt: skip
    assert made["secrets"] == [
        {"name": "secret", "variable": "METERDESK_HOOK_SECRET", "set": False}
    ]
    assert made["events"] == ["supply_cut"] and "not set" in made["problem"]
    monkeypatch.setenv("METERDESK_HOOK_SECRET", "hunter2-hunter2")
    listed = run("notification", "channel", "list", *ORG).stdout
    assert "secret=METERDESK_HOOK_SECRET (set)" in listed and "hunter2" not in listed
    assert "sms      not configured (providers: aliyun, tencent)" in listed
    by_channel = {c["channel"]: c for c in run_json("notification", "channel", "list", *ORG)}
    assert len(by_channel) == 8 and by_channel["webhook"]["problem"] is None
    refused = run(
        "notification", "channel", "set", "email", *ORG, "--provider", "smtp",
        "--set", "password=hunter2", code=2,
    )  # fmt: skip
    assert "looks like a secret" in refused.stderr


def test_channel_settings_from_a_json_file(data_dir: Path, tmp_path: Path) -> None:
    run("org", "create", "Acme")
    settings = tmp_path / "smtp.json"
    settings.write_text(json.dumps({"host": "mail.example.com", "port": 587, "sender": "a@b"}))
    made = run_json(
        "notification", "channel", "set", "email", *ORG, "--provider", "smtp",
        "--config-file", str(settings), "--disabled",
    )  # fmt: skip
    assert made["config"]["port"] == 587 and made["enabled"] is False and made["problem"] is None
    settings.write_text("[1, 2]")
    bad = ("--config-file", str(settings))
    run("notification", "channel", "set", "email", *ORG, "--provider", "smtp", *bad, code=2)


def test_quiet_hours_are_shown_set_and_cleared(data_dir: Path) -> None:
    run("org", "create", "Acme")
    assert run("notification", "quiet-hours", *ORG).stdout.strip() == "no quiet hours"
    set_ = run("notification", "quiet-hours", *ORG, "--start", "22:00", "--end", "07:00")
    assert set_.stdout.strip() == "quiet 22:00–07:00"
    assert run_json("notification", "quiet-hours", *ORG) == {"start": "22:00", "end": "07:00"}
    run("notification", "quiet-hours", *ORG, "--start", "22:00", code=2)
    run("notification", "quiet-hours", *ORG, "--clear", "--start", "01:00", code=2)
    run("notification", "quiet-hours", *ORG, "--clear")
    assert run_json("notification", "quiet-hours", *ORG) == {"start": None, "end": None}


def test_a_test_message_is_queued_and_delivered(data_dir: Path, tmp_path: Path) -> None:
    set_up_places(tmp_path)
    run("notification", "channel", "set", "log", *ORG, "--provider", "log")
    made = run_json("notification", "channel", "test", "log", *ORG, "--language", "en")
    assert (made["event_kind"], made["address"], made["status"]) == (
        "channel_test",
        "stdout",
        "pending",
    )
    assert "notification show" in run("notification", "channel", "test", "log", *ORG).stdout
    refused = run("notification", "channel", "test", "email", *ORG, "--to", "x@y.z", code=2)
    assert "not configured" in refused.output


def test_the_mini_program_channel_is_set_and_listed_from_the_cli(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("org", "create", "Acme")
    monkeypatch.setenv("METERDESK_MINI_SECRET", "mini-app-secret")
    settings = tmp_path / "mini.json"
    fields = {"thing1": "{place}", "thing2": "{subject}"}
    settings.write_text(
        json.dumps({"templates": {"supply_cut": {"template_id": "t-cut", "fields": fields}}}),
        encoding="utf-8",
    )
    made = run_json(
        "notification", "channel", "set", "wechat_mini", *ORG, "--provider", "wechat_mini",
        "--set", "app_id=wx-mini", "--secret-ref", "app_secret=METERDESK_MINI_SECRET",
        "--config-file", str(settings),
    )  # fmt: skip
    assert made["problem"] is None and made["config"]["app_id"] == "wx-mini"
    by_channel = {c["channel"]: c for c in run_json("notification", "channel", "list", *ORG)}
    assert by_channel["wechat_mini"]["secrets"] == [
        {"name": "app_secret", "variable": "METERDESK_MINI_SECRET", "set": True}
    ]
    assert "wechat_mini" in run("notification", "channel", "list", *ORG).stdout
