"""Bad input through the API as a client sends it, on SQLite and PostgreSQL: a clear ``422`` (or
a failed row in an import report) naming the field, never a 5xx, and nothing changed."""

from __future__ import annotations

from typing import Any

from apikit import World, key

HEADER = "account_number,customer_name,site,building,floor,room,meter_numbers,tariffs"


def csv_row(number: str, *extra: str, meter: str = "Alpha-M3") -> str:
    cells = [number, "Imported", "Alpha Park", "Alpha B1", "Alpha F1", "Alpha 102", meter]
    return ",".join([*cells, "Alpha Flat", *extra])


def import_csv(world: World, text: str, name: str, *, open_now: bool = True) -> Any:
    return world.client.post(
        "/api/v1/account-imports",
        files={"file": ("accounts.csv", text.encode(), "text/csv")},
        data={"open_now": str(open_now).lower()},
        headers={**world.alpha.auth("admin"), **key(name)},
    )


def accounts_numbered(world: World, number: str) -> list[Any]:
    answer = world.client.get(f"/api/v1/accounts?number={number}", headers=world.alpha.auth())
    return [a for a in answer.json()["items"] if a["number"] == number]


def test_an_import_row_with_an_impossible_credit_fails_alone(any_world: World) -> None:
    # "1e30" raised InvalidOperation out of the import (a 500) after the rows before it were
    # committed; now that row fails with its reason and the others go on.
    text = f"{HEADER},initial_credit\n{csv_row('H-1', '1e30')}\n"

    response = import_csv(any_world, text, "huge")

    assert response.status_code == 201, response.text
    (row,) = response.json()["rows"]
    assert (row["row"], row["ok"]) == (2, False)
    assert "initial_credit" in row["message"]
    assert accounts_numbered(any_world, "H-1") == []
