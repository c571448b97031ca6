"""The account statement in the console (对账单): day by day and every entry add up exactly to
the ledger's statement, the CSV holds every entry, and bad dates are said, not obeyed."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from apikit import World
from consolekit import Console


def _money(console: Console, world: World, amount: str, key: str) -> None:
    answer = console.client.post(
        f"/api/v1/accounts/{world.alpha.account_id}/recharge",
        json={"amount": amount, "method": "cash"},
        headers={**world.alpha.auth("cashier"), "Idempotency-Key": key},
    )
    assert answer.status_code in (200, 201), answer.text


def test_the_statement_page_shows_the_ledger_statement_day_by_day_and_entry_by_entry(
    world: World,
) -> None:
    console = Console(world.client, world.alpha, "readonly")
    _money(console, world, "12.34", "statement-page-1")
    api = console.client.get(
        f"/api/v1/accounts/{world.alpha.account_id}/statement",
        params={"end": "2100-01-01T00:00:00Z"},  # the default ends now: before this recharge
        headers=world.alpha.auth("readonly"),
    ).json()

    days = console.get(f"/accounts/{world.alpha.account_id}/statement")
    entries = console.get(f"/accounts/{world.alpha.account_id}/statement?detail=entries")

    assert days.status_code == entries.status_code == 200
    assert 'data-table="days"' in days.text and 'data-table="entries"' in entries.text
    assert "12.34" in entries.text
    closing = Decimal(api["closing_balance"])
    assert f"{closing:,.2f}" in days.text and f"{closing:,.2f}" in entries.text


def test_the_csv_holds_every_entry_and_its_changes_add_up_to_the_closing_balance(
    world: World,
) -> None:
    console = Console(world.client, world.alpha, "readonly")
    _money(console, world, "7.00", "statement-csv-1")

    answer = console.get(f"/accounts/{world.alpha.account_id}/statement.csv")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text.lstrip("\ufeff"))))
    opening, lines = rows[0], rows[1:]
    assert opening["time"] == "opening" and lines
    balance = Decimal(opening["balance_after"])
    for line in lines:
        balance += Decimal(line["balance_change"])
        assert balance == Decimal(line["balance_after"])
    assert any(line["reason"] == "recharge" and line["balance_change"] == "7.00" for line in lines)


def test_dates_that_make_no_sense_are_said_and_the_last_30_days_shown(world: World) -> None:
    console = Console(world.client, world.alpha, "readonly")
    base = f"/accounts/{world.alpha.account_id}/statement"

    for query, said in (
        ("?from=yesterday", "YYYY-MM-DD"),
        ("?from=2026-03-01&to=2026-02-01", "after the last"),
        ("?from=2020-01-01&to=2026-01-01", "At most 366 days"),
    ):
        answer = console.get(base + query)
        assert answer.status_code == 200
        assert said in answer.text, query
