"""``meterdesk notice send --send-at`` and ``meterdesk notice cancel`` as an operator uses them,
on the embedded SQLite: a time in the site's local time, shown in list and show; a cancel says
how many messages it stopped and how many had gone, twice the same; bad times exit 2 and write
nothing, another notice 3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from test_cli import ORG, data_dir, open_account, run, run_json, set_up_places

pytestmark = pytest.mark.integration
__all__ = ["data_dir"]
NOTICE = ["--subject", "B1 停水检修", "--text", "12 月 9 日 9:00–12:00 停水检修，请提前储水。"]
SHANGHAI = ZoneInfo("Asia/Shanghai")


def tomorrow_at_ten() -> tuple[str, datetime]:
    """Tomorrow 10:00 on the site's clock, as typed and as the instant it is."""
    day = datetime.now(SHANGHAI).date() + timedelta(days=1)
    local = datetime(day.year, day.month, day.day, 10, 0, tzinfo=SHANGHAI)
    return f"{day:%Y-%m-%d} 10:00", local.astimezone(UTC)


def test_an_operator_schedules_a_notice_and_cancels_it(data_dir: Path, tmp_path: Path) -> None:
    customer = set_up_places(tmp_path)
    open_account(customer)
    run("notification", "channel", "set", "log", *ORG, "--provider", "log")
    typed, instant = tomorrow_at_ten()

    said = run("notice", "send", *ORG, "--building", "Park/B1", *NOTICE, "--send-at", typed)
    assert f"scheduled for {instant:%Y-%m-%d %H:%M}Z" in said.stdout
    (notice,) = run_json("notice", "list", *ORG)
    assert datetime.fromisoformat(notice["send_at"]) == instant
    assert notice["cancelled_at"] is None and notice["delivery"]["pending"] == 1
    (message,) = run_json("notification", "log", *ORG, "--event", "system_notice")
    assert datetime.fromisoformat(message["next_attempt_at"]) == instant
    assert f"{instant:%Y-%m-%d %H:%M}Z" in run("notice", "list", *ORG).stdout
    shown = run("notice", "show", str(notice["id"]), *ORG).stdout
    assert f"sending: scheduled for {instant:%Y-%m-%d %H:%M}Z" in shown

    cancelled = run("notice", "cancel", str(notice["id"]), *ORG, "--actor", "op").stdout
    assert f"notice #{notice['id']} cancelled: 1 messages stopped, 0 had already gone" in cancelled
    again = run_json("notice", "cancel", str(notice["id"]), *ORG)
    assert again["already_cancelled"] and (again["stopped"], again["gone"]) == (1, 0)
    assert again["cancelled_by"] == "op"
    shown = run("notice", "show", str(notice["id"]), *ORG).stdout
    assert "sending: cancelled" in shown and "messages: cancelled 1" in shown
    assert "cancelled" in run("notice", "list", *ORG).stdout
    (message,) = run_json("notification", "log", *ORG, "--status", "cancelled")
    assert "was cancelled before this message went out" in message["last_error"]


def test_bad_times_and_unknown_notices_exit_with_what_went_wrong(
    data_dir: Path, tmp_path: Path
) -> None:
    open_account(set_up_places(tmp_path))
    past = (datetime.now(SHANGHAI) - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M")
    far = (datetime.now(SHANGHAI) + timedelta(days=91)).strftime("%Y-%m-%d %H:%M")
    sent = ["notice", "send", *ORG, "--all", *NOTICE, "--send-at"]
    assert "not in the future" in run(*sent, past, code=2).output
    assert "at most 90 days ahead" in run(*sent, far, code=2).output
    assert "not a date and time" in run(*sent, "next monday", code=2).output
    run("notice", "send", *ORG, "--building", "Park/B9", *NOTICE, "--send-at", far, code=3)
    assert run_json("notice", "list", *ORG) == []
    assert "notice 99 not found" in run("notice", "cancel", "99", *ORG, code=3).output
