"""``meterdesk alarm-plan | friendly | policy`` as an operator manages them, on the embedded
SQLite: plans and profiles listed, shown and revised (a revision decides again for every account
on it: a tenant already below a raised level is warned at once), an account's policy shown —
and the exit codes of bad input (validation 2, not found 3, conflict 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import ORG, data_dir, open_account, run, run_json, set_up_places

pytestmark = pytest.mark.integration
__all__ = ["data_dir"]

LEVELS = [
    {"level": 1, "amount": "20.00", "channels": ["log"]},
    {"level": 2, "amount": "5.00", "repeat_count": 2, "repeat_interval_hours": 12},
]


def levels_file(tmp_path: Path, name: str, levels: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(levels), encoding="utf-8")
    return str(path)


def test_an_operator_lists_shows_and_revises_an_alarm_plan(data_dir: Path, tmp_path: Path) -> None:
    open_account(set_up_places(tmp_path))  # A-1 with 50.00
    run("notification", "channel", "set", "log", *ORG, "--provider", "log")
    run("alarm-plan", "create", "Shops", *ORG, "--file", levels_file(tmp_path, "a.json", LEVELS))
    run("policy", "set", "A-1", *ORG, "--alarm-plan", "Shops")
    listed = run("alarm-plan", "list", *ORG).stdout
    assert "Shops (id 1)" in listed
    assert "level 1: balance ≤ 20.00; sent once; channels log" in listed
    assert "level 2: balance ≤ 5.00; sent 3 times, 12 h apart" in listed
    assert run_json("alarm-plan", "show", "Shops", *ORG)["levels"][0]["amount"] == "20.00"
    assert run_json("notification", "log", *ORG, "--event", "alarm_level_1") == []

    raised = levels_file(tmp_path, "b.json", [{**LEVELS[0], "amount": "60.00"}, LEVELS[1]])
    updated = run("alarm-plan", "update", "Shops", *ORG, "--file", raised, "--rename", "Shops+")
    assert "alarm plan Shops+ updated; 1 open account(s) decided again" in updated.stdout
    (warned,) = run_json("notification", "log", *ORG, "--event", "alarm_level_1")
    assert warned["params"]["account"] == "A-1"  # 50.00 is below the new 60.00: warned now
    shown = run("policy", "show", "A-1", *ORG).stdout
    assert "account A-1: supply on" in shown and "alarm plan      Shops+" in shown
    assert "alarms sent     level 1: 1" in shown
    assert run_json("policy", "show", "A-1", *ORG)["alarm_plan"] == "Shops+"

    run("alarm-plan", "update", "Shops", *ORG, "--file", raised, code=3)  # renamed
    bad = levels_file(tmp_path, "c.json", [{"level": 1, "amount": "10", "days_left": 2}])
    run("alarm-plan", "update", "Shops+", *ORG, "--file", bad, code=2)  # amount or days, not both
    run("alarm-plan", "create", "Other", *ORG, "--file", levels_file(tmp_path, "d.json", LEVELS))
    run("alarm-plan", "update", "Other", *ORG, "--file", raised, "--rename", "Shops+", code=4)
    assert run_json("alarm-plan", "show", "Shops+", *ORG)["levels"][0]["amount"] == "60.00"


def test_an_operator_lists_shows_and_revises_a_friendly_profile(
    data_dir: Path, tmp_path: Path
) -> None:
    open_account(set_up_places(tmp_path))
    run("friendly", "create", "Nights", *ORG, "--window", "20:00-08:00", "--weekends")
    run("policy", "set", "A-1", *ORG, "--friendly", "Nights")
    assert "Nights (id 1): 20:00-08:00; and weekends" in run("friendly", "list", *ORG).stdout
    updated = run(
        "friendly", "update", "Nights", *ORG, "--window", "21:00-07:00", "--holidays"
    ).stdout
    assert "friendly-hours profile Nights updated; 1 open account(s) decided again" in updated
    shown = run_json("friendly", "show", "Nights", *ORG)
    assert shown["windows"] == [{"start": "21:00", "end": "07:00"}]
    assert (shown["weekends"], shown["holidays"]) == (False, True)
    assert "friendly hours  Nights" in run("policy", "show", "A-1", *ORG).stdout
    run("friendly", "update", "Nights", *ORG, "--window", "25:00-07:00", code=2)
    run("friendly", "show", "Days", *ORG, code=3)
    run("policy", "show", "A-404", *ORG, code=3)
    assert run_json("friendly", "show", "Nights", *ORG) == shown
