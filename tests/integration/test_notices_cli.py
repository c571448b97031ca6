"""``meterdesk notice send | list | show`` as an operator uses it, on the embedded SQLite: a
notice to a building, a room and everyone; the repeat with its key sends nothing; the exit
codes of bad input (validation 2, not found 3, conflict 4, another notice under a key 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli import ORG, data_dir, open_account, run, run_json, set_up_places

pytestmark = pytest.mark.integration
__all__ = ["data_dir"]
NOTICE = ["--subject", "B1 停水检修", "--text", "12 月 9 日 9:00–12:00 停水检修，请提前储水。"]


def test_an_operator_sends_lists_and_shows_notices(data_dir: Path, tmp_path: Path) -> None:
    customer = set_up_places(tmp_path)
    open_account(customer)
    run("notification", "channel", "set", "log", *ORG, "--provider", "log")

    sent = run_json("notice", "send", *ORG, "--building", "Park/B1", *NOTICE, "--key", "n-1")
    assert (sent["recipient_count"], sent["replayed"], sent["urgent"]) == (1, False, False)
    assert sent["scope_kind"] == "building" and sent["delivery"]["pending"] == 1
    again = run("notice", "send", *ORG, "--building", "Park/B1", *NOTICE, "--key", "n-1").stdout
    assert f"notice #{sent['id']} was already sent with this key" in again
    (message,) = run_json("notification", "log", *ORG, "--event", "system_notice")
    assert (
        message["event_key"] == f"notice:{sent['id']}:customer:{customer}"
        and message["urgency"] == "normal"
    )

    urgent = run_json(
        "notice", "send", *ORG, "--room", "Park/B1/F1/101", "--subject", "现在停水",
        "--text", "管道抢修。", "--urgent", "--channel", "sms",
    )  # fmt: skip
    assert urgent["urgent"] and urgent["channels"] == ["sms"] and urgent["scope_ids"]
    everyone = run_json("notice", "send", *ORG, "--all", *NOTICE)
    assert everyone["scope_kind"] == "organisation"

    listed = run_json("notice", "list", *ORG)
    assert [n["id"] for n in listed] == [everyone["id"], urgent["id"], sent["id"]]
    text = run("notice", "list", *ORG).stdout
    assert "B1 停水检修" in text and "pending 1" in text and "building" in text
    shown = run("notice", "show", str(sent["id"]), *ORG).stdout
    assert "scope: building" in shown and "请提前储水" in shown and "messages: pending 1" in shown
    assert run_json("notice", "show", str(sent["id"]), *ORG)["delivery"]["pending"] == 1


def test_bad_notices_exit_with_what_went_wrong(data_dir: Path, tmp_path: Path) -> None:
    set_up_places(tmp_path)  # no account opened yet
    assert "exactly one of" in run("notice", "send", *ORG, *NOTICE, code=2).output
    assert (
        "exactly one of"
        in run("notice", "send", *ORG, "--all", "--site", "Park", *NOTICE, code=2).output
    )
    run("notice", "send", *ORG, "--building", "Park", *NOTICE, code=2)
    run("notice", "send", *ORG, "--all", "--subject", "x" * 61, "--text", "t", code=2)
    run(
        "notice", "send", *ORG, "--all", "--subject", "s", "--text", "t", "--channel", "log", code=2
    )
    run("notice", "send", *ORG, "--building", "Park/B9", *NOTICE, code=3)
    assert "no open account" in run("notice", "send", *ORG, "--all", *NOTICE, code=4).output
    run("notice", "show", "99", *ORG, code=3)
    assert run_json("notice", "list", *ORG) == []


def test_the_same_key_for_another_notice_is_refused(data_dir: Path, tmp_path: Path) -> None:
    open_account(set_up_places(tmp_path))
    run("notice", "send", *ORG, "--all", *NOTICE, "--key", "k")
    run("notice", "send", *ORG, "--all", "--subject", "另一个", "--text", "t", "--key", "k", code=5)
    assert len(run_json("notice", "list", *ORG)) == 1
