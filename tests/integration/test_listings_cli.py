"""``meterdesk … list`` and ``meterdesk audit list`` as a newcomer uses them on the embedded
SQLite: what was created is found again (the room path ``meter create`` takes, the customer id
``account open`` takes), one organisation at a time, in pages with a hint how to go on, with
columns that stay in line after Chinese names, and ``--json``."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.cells import cell_len
from test_cli import ORG, data_dir, open_account, run, run_json, set_up_places

pytestmark = pytest.mark.integration
__all__ = ["data_dir"]


def test_what_was_created_is_found_again(data_dir: Path, tmp_path: Path) -> None:
    customer = set_up_places(tmp_path)
    run("org", "create", "Other")
    run("site", "create", "Elsewhere", "--org", "Other", "--timezone", "Asia/Shanghai")
    assert [o["name"] for o in run_json("org", "list")] == ["Acme", "Other"]
    assert [s["name"] for s in run_json("site", "list", *ORG)] == ["Park"]
    assert [b["name"] for b in run_json("building", "list", *ORG, "--site", "Park")] == ["B1"]
    floors = run_json("floor", "list", *ORG, "--site", "Park", "--building", "B1")
    assert [(f["name"], f["level"]) for f in floors] == [("F1", 1)]
    rooms = run("room", "list", *ORG).stdout
    assert "Park/B1/F1/101" in rooms
    (listed,) = run_json("customer", "list", *ORG, "--q", "Li")
    assert listed["id"] == customer and listed["phone"] == "+8613900000000"
    assert run_json("customer", "list", *ORG, "--q", "nobody") == []
    assert "nothing found" in run("customer", "list", *ORG, "--q", "nobody").stdout
    (tariff,) = run_json("tariff", "list", *ORG)
    assert (tariff["name"], tariff["current_from"]) == ("flat", "2026-01-01")
    run("site", "list", "--org", "Nobody", code=3)
    run("building", "list", *ORG, "--site", "Nowhere", code=3)
    run("room", "list", *ORG, "--limit", "0", code=2)


def test_pages_say_how_to_go_on_and_chinese_names_keep_columns_in_line(
    data_dir: Path, tmp_path: Path
) -> None:
    set_up_places(tmp_path)
    run("customer", "create", "王小明", *ORG)
    run("customer", "create", "Ann", *ORG)
    first = run("customer", "list", *ORG, "--limit", "2").stdout.splitlines()
    assert first[-1] == "… more: add --after 2"
    second = run_json("customer", "list", *ORG, "--after", "2")
    assert [c["name"] for c in second] == ["Ann"]
    lines = run("customer", "list", *ORG).stdout.splitlines()
    # "王小明" is three characters but six terminal columns wide: the phone column still starts
    # at column 37 (id 5 + name 30 + two spaces) on every line
    for line in lines[1:]:
        phone = line.index("+8613900000000") if "Li Lei" in line else line.index("-")
        assert cell_len(line[:phone]) == 37, line


def test_the_audit_log_lists_who_did_what_newest_first(data_dir: Path, tmp_path: Path) -> None:
    open_account(set_up_places(tmp_path))
    run("recharge", "A-1", "20", *ORG, "--key", "r-1", "--actor", "cashier-li")
    entries = run_json("audit", "list", *ORG)
    assert entries[0]["action"] == "money.recharge" and entries[0]["actor"] == "cashier-li"
    assert [e["action"] for e in run_json("audit", "list", *ORG, "--actor", "cashier-li")] == [
        "money.recharge"
    ]
    text = run("audit", "list", *ORG, "--limit", "1").stdout.splitlines()
    assert text[0].split()[:3] == ["at", "(UTC)", "who"]
    assert "money.recharge" in text[1] and text[-1].startswith("… more: add --after ")
    assert run_json("audit", "list", *ORG, "--since", "2999-01-01T00:00:00Z") == []
    run("audit", "list", *ORG, "--since", "yesterday", code=2)


def test_room_status_is_the_room_monitor_from_the_shell(data_dir: Path, tmp_path: Path) -> None:
    open_account(set_up_places(tmp_path))  # A-1 in Park/B1/F1/101 with 50.00
    run("room", "create", "102", *ORG, "--site", "Park", "--building", "B1", "--floor", "F1")
    shown = run_json("room", "status", *ORG)
    assert shown["matched"] == 2 and shown["counts"]["vacant"] == 1, shown["counts"]
    rooms = {tile["room"]: tile for tile in shown["rooms"]}
    assert rooms["101"]["account_number"] == "A-1" and rooms["101"]["balance_fen"] == 5000
    assert rooms["102"]["state"] == "vacant"
    text = run("room", "status", *ORG, "--state", "vacant").stdout.splitlines()
    assert text[0].split()[:3] == ["room", "account", "customer"]
    assert "B1/F1/102" in text[1] and text[-1].startswith("1 of 1 rooms")
    page = run("room", "status", *ORG, "--limit", "1").stdout.splitlines()
    assert page[-1].startswith("1 of 2 rooms; more: add --offset 1")
    run("room", "status", *ORG, "--state", "sleepy", code=2)


def test_the_account_list_shows_balances_and_filters_by_status(
    data_dir: Path, tmp_path: Path
) -> None:
    open_account(set_up_places(tmp_path))  # A-1 with 50.00
    (account,) = run_json("account", "list", *ORG)
    assert (account["number"], account["status"], account["balance"]) == ("A-1", "open", "50.00")
    assert account["customer"] == "Li Lei" and account["arrears"] == "0.00"
    text = run("account", "list", *ORG).stdout.splitlines()
    assert text[0].split()[:3] == ["id", "account", "status"] and "50.00" in text[1]
    assert "no accounts" in run("account", "list", *ORG, "--status", "closed").stdout
    run("account", "list", *ORG, "--status", "sleeping", code=2)
