"""Quantity credit (购量, decision 0006) from the command line as a newcomer uses it: open with
``--credit-unit quantity``, recharge and refund answers that say the m³ left, the balance in
text and ``--json``, an import with a ``credit_unit`` column, and a preset. Water at 5.00 per
m³: 50.03 buys 10.00 m³ and carries 0.03."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from builders import tou_definition
from test_cli import ORG, data_dir, instant, open_account, run, run_json, set_up_places

pytestmark = pytest.mark.integration
__all__ = ["data_dir"]  # the fixture, used by name

WATER = {
    "utility": "water",
    "versions": [{"effective_from": "2026-01-01", "prices": {"flat": "5.00"}}],
}
PLACE = "Park,B1,F1,101"


def water_meters(tmp_path: Path, *numbers: str) -> None:
    tariff = tmp_path / "water.json"
    tariff.write_text(json.dumps(WATER), encoding="utf-8")
    run("tariff", "create", "water", *ORG, "--file", str(tariff))
    for number in numbers:
        run("meter", "create", number, *ORG, "--utility", "water", "--kind", "water",
            "--room", "Park/B1/F1/101")  # fmt: skip


def open_quantity(customer: int, number: str = "Q-1", meter: str = "W1") -> str:
    return run(
        "account", "open", number, *ORG, "--customer", str(customer), "--meter", meter,
        "--tariff", "water", "--reading", "100", "--credit", "50.03", "--credit-unit", "quantity",
    ).stdout  # fmt: skip


def test_a_quantity_account_at_the_desk(data_dir: Path, tmp_path: Path) -> None:
    customer = set_up_places(tmp_path)
    water_meters(tmp_path, "W1")
    opened_at = datetime.now(UTC)
    assert "account Q-1 opened (id 1): 10.00 m³ left, 0.03 carried" in open_quantity(customer)

    shown = run("account", "balance", "Q-1", *ORG).stdout
    assert "quantity credit" in shown and "10.00 m³ left, 0.03 carried" in shown
    assert "bought 10.00 m³, used 0.00 m³, last price 5.00 per m³" in shown
    assert "balance 50.03 CNY" in shown

    recharged = run("recharge", "Q-1", "5", *ORG, "--key", "r-1").stdout
    # 5.00 + 0.03 carried buys 1.00 m³ more; 0.03 still carried
    assert recharged.startswith("recharged 5.00: 11.00 m³ left, 0.03 carried; balance 55.03")

    readings = tmp_path / "readings.csv"
    readings.write_text(
        f"meter_number,measured_at,total\nW1,{instant(opened_at + timedelta(hours=1))},108\n",
        encoding="utf-8",
    )
    run("readings", "import", str(readings), *ORG)

    balance = run_json("account", "balance", "Q-1", *ORG)
    assert (balance["credit_unit"], balance["balance"]) == ("quantity", "15.03")
    assert balance["quantity"] == {
        "unit": "m³",
        "left": "3.00",
        "bought": "11.00",
        "used": "8.00",
        "remainder": "0.03",
        "unused_value": "15.00",
        "price": "5.00",
        "lots": [{"quantity": "10.00", "price": "5.00"}, {"quantity": "1.00", "price": "5.00"}],
    }

    # a refund is money: the 0.03 carried, then 4.97 worth of the newest m³ (0.994 m³)
    refunded = run("refund", "Q-1", "5", *ORG, "--key", "f-1").stdout
    assert refunded.startswith("refunded: 2.006 m³ left, 0.00 carried; balance 10.03")

    again = run_json("recharge", "Q-1", "10", *ORG, "--key", "r-2")
    assert again["balance"] == "20.03"
    assert again["quantity"] == {"unit": "m³", "left": "4.006", "remainder": "0.00"}


def test_a_money_account_answers_as_before(data_dir: Path, tmp_path: Path) -> None:
    open_account(set_up_places(tmp_path))
    assert run_json("recharge", "A-1", "5", *ORG, "--key", "r-1")["quantity"] is None
    balance = run_json("account", "balance", "A-1", *ORG)
    assert (balance["credit_unit"], balance["quantity"]) == ("money", None)
    assert "m³" not in run("account", "balance", "A-1", *ORG).stdout
    assert "money" in run("account", "list", *ORG).stdout


def test_a_wrong_credit_unit_opens_nothing(data_dir: Path, tmp_path: Path) -> None:
    customer = set_up_places(tmp_path)
    water_meters(tmp_path, "W1", "W2")
    refused = run(
        "account", "open", "Q-1", *ORG, "--customer", str(customer), "--meter", "W1",
        "--tariff", "water", "--reading", "100", "--credit-unit", "litres", code=2,
    )  # fmt: skip
    assert "credit_unit: 'litres' is not 'money' or 'quantity'" in refused.output
    two = run(
        "account", "open", "Q-1", *ORG, "--customer", str(customer), "--meter", "W1",
        "--meter", "W2", "--tariff", "water", "--reading", "100", "--reading", "100",
        "--credit-unit", "quantity", code=2,
    )  # fmt: skip
    assert "holds one meter" in two.output
    run("account", "balance", "Q-1", *ORG, code=3)
    assert "--credit-unit" in run("account", "open", "--help").stdout


def test_import_and_presets_carry_the_credit_unit(data_dir: Path, tmp_path: Path) -> None:
    set_up_places(tmp_path)
    water_meters(tmp_path, "W1", "W2", "W3")
    sheet = tmp_path / "accounts.csv"
    sheet.write_text(
        "account_number,customer_name,site,building,floor,room,meter_numbers,tariffs,"
        "opening_readings,initial_credit,credit_unit\n"
        f"I-1,Han,{PLACE},W1,water,0,25,quantity\n"
        f"I-2,Han,{PLACE},W2,water,0,0,litres\n"
        f"I-3,Han,{PLACE},W2,water,0,0,\n",
        encoding="utf-8",
    )
    report = run("account", "import", str(sheet), *ORG, "--open", code=2).stdout
    assert "row 2: I-1: OK opened" in report
    assert "row 3: I-2: FAILED credit_unit: 'litres' is not 'money' or 'quantity'" in report
    assert "row 4: I-3: OK opened" in report
    assert "5.00 m³ left" in run("account", "balance", "I-1", *ORG).stdout
    assert run_json("account", "balance", "I-3", *ORG)["credit_unit"] == "money"

    run("account", "preset", "add", "P-1", *ORG, "--customer-name", "Wu",
        "--room", "Park/B1/F1/101", "--meter", "W3", "--tariff", "water",
        "--credit-unit", "quantity")  # fmt: skip
    assert "quantity credit" in run("account", "preset", "list", *ORG).stdout
    refused = run("account", "preset", "add", "P-2", *ORG, "--customer-name", "Wu",
        "--room", "Park/B1/F1/101", "--meter", "W3", "--meter", "W2", "--tariff", "water",
        "--credit-unit", "quantity", code=2)  # fmt: skip
    assert "holds one meter" in refused.output

    # a kWh bought ahead has no time-of-use band: refused at pre-entry, not at opening
    tou = tmp_path / "tou.json"
    tou.write_text(json.dumps(tou_definition()), encoding="utf-8")
    run("tariff", "create", "tou", *ORG, "--file", str(tou))
    refused = run("account", "preset", "add", "P-3", *ORG, "--customer-name", "Wu",
        "--room", "Park/B1/F1/101", "--meter", "M1", "--tariff", "tou",
        "--credit-unit", "quantity", code=2)  # fmt: skip
    assert "not time-of-use" in refused.output
    assert "P-3" not in run("account", "preset", "list", *ORG).stdout


def test_arrears_paid_after_closing_leave_nothing_used_ahead(
    data_dir: Path, tmp_path: Path
) -> None:
    customer = set_up_places(tmp_path)
    water_meters(tmp_path)
    # closed at once: a meter that may use much in an instant
    run("meter", "create", "W1", *ORG, "--utility", "water", "--kind", "water",
        "--room", "Park/B1/F1/101", "--max-rate", "1000000")  # fmt: skip
    run("account", "open", "Q-1", *ORG, "--customer", str(customer), "--meter", "W1",
        "--tariff", "water", "--reading", "100", "--credit", "10.03",
        "--credit-unit", "quantity")  # fmt: skip
    closed = run("account", "close", "Q-1", *ORG, "--meter", "W1", "--reading", "103.5",
                 "--key", "c-1").stdout  # fmt: skip
    # 3.5 m³ used of the 2 bought: 1.5 m³ used ahead at 5.00, less the 0.03 carried
    assert "arrears still owed 7.47" in closed
    assert run_json("account", "balance", "Q-1", *ORG)["quantity"]["left"] == "-1.50"
    assert "1.50 m³ used ahead" in run("account", "balance", "Q-1", *ORG).stdout

    run("pay-arrears", "Q-1", "7.47", *ORG, "--key", "a-1")
    balance = run_json("account", "balance", "Q-1", *ORG)
    assert (balance["arrears"], balance["quantity"]["left"]) == ("0.00", "0.00")
    assert "0.00 m³ left" in run("account", "balance", "Q-1", *ORG).stdout


WATER_TIERS = {
    "utility": "water",
    "versions": [
        {
            "effective_from": "2026-01-01",
            "prices": {},
            "tiers": {
                "period": "month",
                "mode": "price",
                "blocks": [{"up_to": "10", "price": "3.00"}, {"up_to": None, "price": "4.00"}],
            },
        }
    ],
}


def test_a_recharge_reversed_takes_back_its_own_lots(data_dir: Path, tmp_path: Path) -> None:
    customer = set_up_places(tmp_path)
    tariff = tmp_path / "tiers.json"
    tariff.write_text(json.dumps(WATER_TIERS), encoding="utf-8")
    run("tariff", "create", "tiers", *ORG, "--file", str(tariff))
    run("meter", "create", "W1", *ORG, "--utility", "water", "--kind", "water",
        "--room", "Park/B1/F1/101")  # fmt: skip
    run("account", "open", "Q-1", *ORG, "--customer", str(customer), "--meter", "W1",
        "--tariff", "tiers", "--reading", "100", "--credit-unit", "quantity")  # fmt: skip
    # 30.00 buys the first block's 10 m³ at 3.00; 20.00 then 5 m³ of the next at 4.00
    first = run_json("recharge", "Q-1", "30", *ORG, "--key", "r-1")["transfer_id"]
    second = run_json("recharge", "Q-1", "20", *ORG, "--key", "r-2")["transfer_id"]

    reversed_ = run("reverse", str(first), *ORG, "--key", "v-1").stdout
    assert f"transfer {first} reversed by transfer" in reversed_
    balance = run_json("account", "balance", "Q-1", *ORG)
    # its own 10 m³ at 3.00 are gone, the 5 m³ at 4.00 stay (the newest quantity worth 30.00
    # would have left 6.67 m³ at 3.00)
    assert (balance["balance"], balance["quantity"]["left"]) == ("20.00", "5.00")
    assert balance["quantity"]["lots"] == [{"quantity": "5.00", "price": "4.00"}]

    # a reversal is not reversed again: recharge instead
    reversal = int(reversed_.rsplit(" ", 1)[1])
    again = run("reverse", str(reversal), *ORG, "--key", "v-2", code=4)
    assert "not a reversal" in again.output
    assert run_json("reverse", str(second), *ORG, "--key", "v-3")["reversal_transfer_id"]
    balance = run_json("account", "balance", "Q-1", *ORG)
    assert (balance["balance"], balance["quantity"]["left"], balance["quantity"]["lots"]) == (
        "0.00",
        "0.00",
        [],
    )
