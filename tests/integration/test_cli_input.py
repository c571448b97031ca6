"""Bad input at the ``meterdesk`` command line: a clear message and exit code 2, never a
traceback, and nothing changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from test_cli import ORG, data_dir, open_account, run, run_json, set_up_places

from meterdesk.billing.tables import account_controls
from meterdesk.cli import common as cli_common

pytestmark = pytest.mark.integration
__all__ = ["data_dir"]


@pytest.mark.parametrize(
    "amount",
    [
        "1e30",  # quantizing to fen overflowed the decimal context: InvalidOperation
        "99999999999999999999",  # fitted the context but not a BIGINT of fen
        "1e2",  # scientific notation, which the API refuses
        "١٠٠",  # Arabic-Indic digits: Decimal() reads them as 100
        "1_000",  # Decimal() reads underscores as digit separators
    ],
)
def test_a_recharge_of_an_impossible_amount_is_refused(
    data_dir: Path, tmp_path: Path, amount: str
) -> None:
    open_account(set_up_places(tmp_path))

    refused = run("recharge", "A-1", amount, *ORG, "--key", "receipt-1", code=2)

    assert "amount" in refused.output
    assert run_json("account", "balance", "A-1", *ORG)["balance"] == "50.00"


def test_an_account_import_that_is_not_utf8_is_refused_with_its_line(
    data_dir: Path, tmp_path: Path
) -> None:
    set_up_places(tmp_path)
    path = tmp_path / "accounts.csv"
    path.write_bytes(
        "account_number,customer_name,site,building,floor,room,meter_numbers,tariffs\n"
        "A-9,张三,Park,B1,F1,101,M1,flat\n".encode("gbk")
    )

    refused = run("account", "import", str(path), *ORG, code=2)  # was a UnicodeDecodeError

    assert "line 2 is not UTF-8" in refused.output
    assert run_json("account", "list", *ORG) == []


def test_a_reading_dated_beyond_the_calendar_is_refused_with_its_line(
    data_dir: Path, tmp_path: Path
) -> None:
    open_account(set_up_places(tmp_path))
    path = tmp_path / "readings.csv"
    path.write_text("meter_number,measured_at,total\nM1,99999999999999999,1005\n")

    refused = run("readings", "import", str(path), *ORG, code=2)  # was an OverflowError

    assert "line 2: time: '99999999999999999' ms since the epoch is out of range" in refused.output


def test_a_readings_import_names_the_line_as_the_file_numbers_it(
    data_dir: Path, tmp_path: Path
) -> None:
    # Blank lines were dropped before counting: the error named the line above the bad one.
    open_account(set_up_places(tmp_path))
    path = tmp_path / "readings.csv"
    path.write_text("meter_number,measured_at,total\n\nM1,2026-11-02T08:00:00+08:00,abc\n")

    refused = run("readings", "import", str(path), *ORG, code=2)

    assert "line 3: total: 'abc' is not a decimal number" in refused.output


@pytest.mark.parametrize(
    ("content", "said"),
    [
        # a misspelt band column was ignored, and the band registers with it
        (b"meter_number,measured_at,total,peek\nM1,1793577600000,1005,3\n", "column 'peek'"),
        # Excel's plain "CSV" is GBK: a UnicodeDecodeError traceback
        (
            "meter_number,measured_at,total\nM1,1793577600000,1005\n张".encode("gbk"),
            "line 3 is not",
        ),
    ],
)
def test_a_readings_file_that_would_be_misread_is_refused(
    data_dir: Path, tmp_path: Path, content: bytes, said: str
) -> None:
    open_account(set_up_places(tmp_path))
    path = tmp_path / "readings.csv"
    path.write_bytes(content)

    refused = run("readings", "import", str(path), *ORG, code=2)

    assert said in refused.output
    assert run_json("account", "balance", "A-1", *ORG)["balance"] == "50.00"


@pytest.mark.parametrize(
    ("option", "said"),
    [
        # stored, and never looked up: the operator believed an alarm was set
        (["--alarm-amount", "9=30"], "alarm level '9': a level number from 1 to 3"),
        (["--alarm-amount", "abc=30"], "alarm level 'abc'"),
        (["--alarm-amount", "1=-5"], "alarm level 1: cannot be negative"),
        (["--emergency-credit", "-5"], "emergency_credit: cannot be negative"),
        (["--restore-above", "-5"], "restore_threshold: cannot be negative"),
    ],
)
def test_a_policy_the_api_would_refuse_is_refused_at_the_command_line(
    data_dir: Path, tmp_path: Path, option: list[str], said: str
) -> None:
    open_account(set_up_places(tmp_path))
    before = stored_policy()

    refused = run("policy", "set", "A-1", *ORG, *option, code=2)

    assert said in refused.output
    assert stored_policy() == before


def stored_policy() -> list[Any]:
    with cli_common.app().db.read() as conn:
        return [tuple(row) for row in conn.execute(select(account_controls))]


def test_a_json_file_nested_too_deeply_is_refused(data_dir: Path, tmp_path: Path) -> None:
    set_up_places(tmp_path)
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)

    refused = run("tariff", "create", "deep", *ORG, "--file", str(path), code=2)  # RecursionError

    assert "deep.json: JSON nested too deeply" in refused.output


@pytest.mark.parametrize(
    ("level", "said"),
    [
        ({"days_left": float("nan")}, "days_left: a number of days above 0"),  # stored as NaN
        ({"amount": "5", "repeat_interval_hours": 1e308}, "repeat_interval_hours above 0"),
        ({"amount": "5", "repeat_count": 10**9}, "repeat_count from 0 to 100"),
    ],
)
def test_an_alarm_plan_file_outside_the_apis_bounds_is_refused(
    data_dir: Path, tmp_path: Path, level: dict[str, Any], said: str
) -> None:
    set_up_places(tmp_path)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps([{"level": 1, **level}]))  # NaN as json.dumps writes it

    refused = run("alarm-plan", "create", "odd", *ORG, "--file", str(path), code=2)

    assert said in refused.output


def test_an_actor_longer_than_its_column_is_refused(data_dir: Path, tmp_path: Path) -> None:
    open_account(set_up_places(tmp_path))

    refused = run("recharge", "A-1", "5", *ORG, "--key", "r-1", "--actor", "a" * 101, code=2)

    assert "--actor: at most 100 characters" in refused.output
    assert run_json("account", "balance", "A-1", *ORG)["balance"] == "50.00"


def test_a_reference_or_memo_longer_than_the_apis_is_refused(
    data_dir: Path, tmp_path: Path
) -> None:
    open_account(set_up_places(tmp_path))
    long_reference = ["--reference", "r" * 201]

    recharge = run("recharge", "A-1", "5", *ORG, "--key", "r-1", *long_reference, code=2)
    refund = run("refund", "A-1", "5", *ORG, "--key", "f-1", *long_reference, code=2)
    reverse = run("reverse", "1", *ORG, "--key", "v-1", "--memo", "m" * 301, code=2)

    assert "reference: at most 200 characters" in recharge.output + refund.output
    assert "memo: at most 300 characters" in reverse.output
    assert run_json("account", "balance", "A-1", *ORG)["balance"] == "50.00"
