"""The ``meterdesk`` command as a newcomer uses it, on the embedded SQLite in a temporary data
directory: places, a tariff from a JSON file, a meter, an account, money at the desk, readings
from CSV, balance, statement and quarantine — and the exit codes of errors (validation 2, not
found 3, conflict 4, idempotency conflict 5, insufficient funds 6).

The CLI runs on the real clock, so readings are dated a little after the account opens.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import insert, select, update
from typer.testing import CliRunner

from meterdesk.cli import cli
from meterdesk.cli import common as cli_common
from meterdesk.devices.tables import device_status
from meterdesk.metering.tables import meters
from meterdesk.sites.tables import customers

pytestmark = pytest.mark.integration

ORG = ["--org", "Acme"]
FLAT_TARIFF = {
    "utility": "electricity",
    "versions": [{"effective_from": "2026-01-01", "prices": {"flat": "1.20"}}],
}


def forget_cli_app() -> None:
    """The CLI builds its app once per process: close it, so each test builds its own."""
    if cli_common.app.cache_info().currsize:
        cli_common.app().db.engine.dispose()
    cli_common.app.cache_clear()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "data"
    monkeypatch.setenv("METERDESK_DATA_DIR", str(folder))
    for name in ("METERDESK_DATABASE_URL", "METERDESK_ORG", "METERDESK_ACTOR"):
        monkeypatch.delenv(name, raising=False)
    forget_cli_app()
    yield folder
    forget_cli_app()


def run(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, result.output
    return result


def run_json(*args: str) -> Any:
    return json.loads(run(*args, "--json").stdout)


def instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def set_up_places(tmp_path: Path) -> int:
    """org → site → building → floor → room → customer → tariff → meter; the customer's id."""
    run("org", "create", "Acme")
    run("site", "create", "Park", *ORG, "--timezone", "Asia/Shanghai")
    run("building", "create", "B1", *ORG, "--site", "Park")
    run("floor", "create", "F1", *ORG, "--site", "Park", "--building", "B1")
    run("room", "create", "101", *ORG, "--site", "Park", "--building", "B1", "--floor", "F1")
    customer = run_json("customer", "create", "Li Lei", *ORG, "--phone", "13900000000")
    tariff_file = tmp_path / "flat.json"
    tariff_file.write_text(json.dumps(FLAT_TARIFF), encoding="utf-8")
    run("tariff", "create", "flat", *ORG, "--file", str(tariff_file))
    run("meter", "create", "M1", *ORG, "--room", "Park/B1/F1/101")
    return int(customer["id"])


def open_account(customer: int) -> None:
    opened = run(
        "account", "open", "A-1", *ORG, "--customer", str(customer), "--meter", "M1",
        "--tariff", "flat", "--reading", "1000", "--credit", "50",
    )  # fmt: skip
    assert "account A-1 opened" in opened.stdout


def test_a_newcomer_runs_an_account_from_the_command_line(data_dir: Path, tmp_path: Path) -> None:
    customer = set_up_places(tmp_path)
    opened_at = datetime.now(UTC)
    open_account(customer)

    first = run("recharge", "A-1", "20", *ORG, "--key", "receipt-1")
    again = run("recharge", "A-1", "20", *ORG, "--key", "receipt-1")
    assert first.stdout.startswith("recharged 20.00: balance 70.00")
    assert "already" in again.stdout and "balance 70.00" in again.stdout

    readings = tmp_path / "readings.csv"
    hour = timedelta(hours=1)
    readings.write_text(
        "meter_number,measured_at,total\n"
        f"M1,{instant(opened_at + hour)},1005\n"
        f"M1,{instant(opened_at + 2 * hour)},1010\n"
        f"M1,{instant(opened_at + 2 * hour)},1010\n"  # sent twice
        f"M1,{instant(opened_at + 3 * hour)},900\n",  # the register went down
        encoding="utf-8",
    )
    report = run_json("readings", "import", str(readings), *ORG)
    assert (report["received"], report["accepted"]) == (4, 2)
    assert (report["duplicates"], report["quarantined"]) == (1, 1)
    assert report["deducted_fen"] == 1200  # 10 kWh at 1.20

    balance = run_json("account", "balance", "A-1", *ORG)
    assert (balance["balance"], balance["arrears"], balance["meters"]) == ("58.00", "0.00", ["M1"])

    statement = run_json(
        "account", "statement", "A-1", *ORG,
        "--from", instant(opened_at - hour), "--to", instant(datetime.now(UTC) + hour),
    )  # fmt: skip
    assert statement["opening_balance"] == "0.00"
    running = Decimal(statement["opening_balance"])
    for line in statement["lines"]:
        running += Decimal(line["balance_change"])
        assert Decimal(line["balance_after"]) == running
    assert statement["closing_balance"] == f"{running}" == "58.00"
    assert [line["reason"] for line in statement["lines"]] == [
        "recharge",
        "recharge",
        "deduction",
    ]
    # The text statement prints every entry's whole time in UTC, as its header says: a recharge's
    # time has microseconds, and cut to the column it lost its offset.
    text = run(
        "account", "statement", "A-1", *ORG,
        "--from", instant(opened_at - hour), "--to", instant(datetime.now(UTC) + hour),
    ).stdout.splitlines()  # fmt: skip
    entries = [row for row in text if row[:4].isdigit()]
    assert len(entries) == 3
    for row in entries:
        at = datetime.fromisoformat(row.split()[0])
        assert at.utcoffset() == timedelta(0) and at.microsecond == 0

    listed = run("quarantine", "list", *ORG)
    assert "M1" in listed.stdout and "decreased" in listed.stdout
    [item] = run_json("quarantine", "list", *ORG)
    assert (item["reason_code"], item["meter_number"]) == ("decreased", "M1")


def test_reimporting_the_same_readings_changes_nothing(data_dir: Path, tmp_path: Path) -> None:
    open_account(set_up_places(tmp_path))
    readings = tmp_path / "readings.csv"
    readings.write_text(
        f"meter_number,measured_at,total\nM1,{instant(datetime.now(UTC) + timedelta(hours=1))},1010\n",
        encoding="utf-8",
    )
    run("readings", "import", str(readings), *ORG)

    report = run_json("readings", "import", str(readings), *ORG)

    assert (report["accepted"], report["duplicates"], report["transfers"]) == (0, 1, 0)
    assert run_json("account", "balance", "A-1", *ORG)["balance"] == "38.00"


def test_error_exit_codes_say_what_kind_of_error_it_was(data_dir: Path, tmp_path: Path) -> None:
    open_account(set_up_places(tmp_path))
    run("recharge", "A-1", "20", *ORG, "--key", "receipt-1")

    # validation: 2
    assert (
        "not a decimal number" in run("recharge", "A-1", "abc", *ORG, "--key", "k", code=2).output
    )
    run("recharge", "A-1", "0.001", *ORG, "--key", "k", code=2)
    bad_tariff = tmp_path / "bad.json"
    bad_tariff.write_text('{"utility": "electricity", "versions": [', encoding="utf-8")
    assert (
        "not valid JSON"
        in run("tariff", "create", "x", *ORG, "--file", str(bad_tariff), code=2).output
    )
    run("meter", "create", "M2", *ORG, "--utility", "gas", "--room", "Park/B1/F1/101", code=2)
    # not found: 3
    assert "not found" in run("account", "balance", "NOPE", *ORG, code=3).output
    run("account", "balance", "A-1", "--org", "Nobody Ltd", code=3)
    run("recharge", "A-1", "5", "--org", "Acme", "--key", "k2", "--json", code=0)
    run("meter", "create", "M3", *ORG, "--room", "Park/B1/F9/101", code=3)
    # conflict: 4
    run("org", "create", "Acme", code=4)
    # idempotency conflict: 5
    conflict = run("recharge", "A-1", "30", *ORG, "--key", "receipt-1", code=5)
    assert "already used for a different request" in conflict.output
    assert "1:receipt-1" not in conflict.output  # the stored key is internal
    # insufficient funds: 6
    run("refund", "A-1", "1000", *ORG, "--key", "refund-1", code=6)

    # none of the failed commands moved money
    assert run_json("account", "balance", "A-1", *ORG)["balance"] == "75.00"


def test_an_accounts_meter_changes_tariff_from_its_last_reading(
    data_dir: Path, tmp_path: Path
) -> None:
    open_account(set_up_places(tmp_path))
    dearer = tmp_path / "dearer.json"
    version = {"effective_from": "2026-01-01", "prices": {"flat": "2.00"}}
    dearer.write_text(
        json.dumps({"utility": "electricity", "versions": [version]}), encoding="utf-8"
    )
    run("tariff", "create", "dearer", *ORG, "--file", str(dearer))
    hour = timedelta(hours=1)
    first = tmp_path / "first.csv"
    at = datetime.now(UTC)
    first.write_text(f"meter_number,measured_at,total\nM1,{instant(at + hour)},1005\n", "utf-8")
    run("readings", "import", str(first), *ORG)
    change = ("account", "set-tariff", "A-1", *ORG, "--meter", "M1", "--tariff", "dearer")

    done = run_json(*change, "--key", "switch-1")
    again = run(*change, "--key", "switch-1")
    same = run(*change, "--key", "switch-2")

    assert (done["changed"], done["previous_tariff"], done["tariff"]) == (True, "flat", "dearer")
    assert done["effective_at"] == (at + hour).isoformat()
    assert "already done with this key" in again.stdout
    assert "already billed by 'dearer'; nothing changed" in same.stdout
    run(*change[:-1], "nope", "--key", "switch-3", code=3)
    run(*change, "--key", "switch-1", "--json", code=0)  # the same request, the same answer
    second = tmp_path / "second.csv"
    second.write_text(
        f"meter_number,measured_at,total\nM1,{instant(at + 2 * hour)},1010\n", "utf-8"
    )
    report = run_json("readings", "import", str(second), *ORG)
    assert report["deducted_fen"] == 1000  # 5 kWh at 2.00, the new price
    assert run_json("account", "balance", "A-1", *ORG)["balance"] == "34.00"  # 50 − 6 − 10


def test_a_customers_message_language_is_set_at_creation_and_changed_later(
    data_dir: Path,
) -> None:
    run("org", "create", "Acme")
    english = run_json("customer", "create", "Anna", *ORG, "--language", "en")
    assert english["language"] == "en"
    default = run_json("customer", "create", "Li Lei", *ORG, "--phone", "13900000000")
    assert default["language"] == "zh-CN"

    updated = run(
        "customer", "update", str(default["id"]), *ORG, "--language", "en", "--phone", "",
        "--actor", "li",
    )  # fmt: skip
    assert f"customer {default['id']} updated (language, phone)" in updated.stdout
    assert (
        "not one of zh-CN, en"
        in run("customer", "update", str(default["id"]), *ORG, "--language", "fr", code=2).output
    )
    run("customer", "create", "X", *ORG, "--language", "de", code=2)
    run("customer", "update", "999", *ORG, "--language", "en", code=3)
    with cli_common.app().db.read() as conn:
        rows = conn.execute(select(customers.c.name, customers.c.phone, customers.c.language))
        assert sorted(tuple(r) for r in rows) == [("Anna", None, "en"), ("Li Lei", None, "en")]


def test_meter_list_shows_each_meters_line_state_and_switch(data_dir: Path, tmp_path: Path) -> None:
    """``meter list``: what the console's meter list shows — room, line address, online state,
    last contact, relay — with the same filters; a wrong filter is refused and lists nothing."""
    customer = set_up_places(tmp_path)
    run("meter", "create", "M2", *ORG, "--room", "Park/B1/F1/101")
    run("bus", "create", "line-1", *ORG, "--protocol", "dlt645", "--endpoint", "127.0.0.1:1")
    run("meter", "link", "M1", *ORG, "--bus", "line-1", "--address", "000000000001")
    seen = datetime(2026, 12, 7, 3, 4, 5, 678901, tzinfo=UTC)
    with cli_common.app().db.transaction() as conn:
        m1 = conn.execute(select(meters.c.id).where(meters.c.number == "M1")).scalar_one()
        conn.execute(
            insert(device_status).values(
                meter_id=m1, state="lost", last_seen_at=seen, failures=3, relay="open",
                updated_at=seen,
            )
        )  # fmt: skip

    listed = run_json("meter", "list", *ORG)
    assert [(m["number"], m["connection"], m["relay"]) for m in listed] == [
        ("M1", "lost", "open"),
        ("M2", "unknown", None),
    ]
    assert (listed[0]["address"], listed[0]["room"]) == ("000000000001", "101")
    assert [m["number"] for m in run_json("meter", "list", *ORG, "--connection", "lost")] == ["M1"]

    header, first, second = run("meter", "list", *ORG).stdout.splitlines()
    assert header.split()[:3] == ["meter", "utility", "room"]
    assert first.split() == [
        "M1", "electricity", "101", "dlt645", "000000000001", "lost",
        "2026-12-07T03:04:05+00:00", "open",
    ]  # fmt: skip
    assert second.split() == ["M2", "electricity", "101", "manual", "M2", "unknown", "-", "-"]
    assert run("meter", "list", *ORG, "--limit", "1").stdout.splitlines()[-1].startswith("… 1 of 2")
    assert "no meters" in run("meter", "list", *ORG, "--q", "nothing-like-it").stdout
    # --drift: M1's relay is open while its account's supply is on, and the tick can reach it
    open_account(customer)
    assert run_json("meter", "list", *ORG, "--drift") == []
    with cli_common.app().db.transaction() as conn:
        conn.execute(update(device_status).values(state="online"))
    assert [m["number"] for m in run_json("meter", "list", *ORG, "--drift")] == ["M1"]
    assert "connection" in run("meter", "list", *ORG, "--connection", "off", code=2).output
