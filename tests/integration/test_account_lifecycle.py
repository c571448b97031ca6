"""An account's life: opening (with an opening reading and initial credit, or from a preset in
one action), bulk import from CSV and Excel with a per-row report, closing with the final
reading, final charges, refund and arrears — and organisation scoping: ids of another
organisation are "not found"."""

from __future__ import annotations

import contextlib
import csv
import gc
import os
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import (
    ACTOR,
    D,
    Org,
    all_transfers,
    deducted,
    flat_definition,
    make_meter,
    make_org,
    make_tariff,
    minutes,
    one_meter_account,
    open_account,
    owed,
    quarantined,
    reading,
    row_counts,
    stored_readings,
    wallet,
)
from openpyxl import Workbook
from openpyxl.utils import get_column_letter
from sqlalchemy import func, select

from meterdesk.billing import accounts, cashier, cashier_refund, corrections, presets, statements
from meterdesk.billing.ingest import Ingestor
from meterdesk.db.database import Database
from meterdesk.metering import service as metering
from meterdesk.shared.errors import ConflictError, NotFoundError, ValidationError
from meterdesk.shared.time import FakeClock
from meterdesk.sites import service as sites
from meterdesk.sites.tables import customers
from meterdesk.tariffs import service as tariffs

pytestmark = pytest.mark.integration


def close(db: Database, org: Org, number: str, finals: dict[int, str], key: str = "close-1") -> Any:
    return accounts.close_account(
        db,
        organisation_id=org.id,
        number=number,
        final_readings=[accounts.FinalReading(m, D(total)) for m, total in finals.items()],
        refund_method="cash",
        actor=ACTOR,
        idempotency_key=key,
    )


def customer_count(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(customers)).scalar_one())


# --- opening -----------------------------------------------------------------------------------


def test_opening_stores_the_opening_reading_and_credits_the_initial_money(db: Database) -> None:
    setup = one_meter_account(db, credit="88.80", opening="1234.5")

    [opening] = stored_readings(db, setup.meter_id)
    assert opening[3] == D("1234.5")
    assert wallet(db, setup.account) == D("88.80")
    [credit] = all_transfers(db)
    assert (credit["reason"], credit["amount_fen"], credit["method"]) == ("recharge", 8880, "cash")
    assert credit["credit_account_id"] == setup.account.wallet_id
    assert setup.account.initial_transfer_id == credit["id"]


def test_nothing_before_the_opening_reading_is_billed_only_what_follows(db: Database) -> None:
    setup = one_meter_account(db, price="1", credit="100", opening="1000")

    Ingestor(db).ingest([reading(setup.meter_id, minutes(60), "1007.5")])

    assert wallet(db, setup.account) == D("92.50")


def test_an_opening_reading_below_the_meters_last_reading_is_refused_and_changes_nothing(
    db: Database, clock: FakeClock
) -> None:
    org = make_org(db)
    tariff = make_tariff(db, org)
    meter = make_meter(db, org)
    Ingestor(db).ingest([reading(meter, minutes(-60), "500")])
    before = row_counts(db)

    with pytest.raises(ValidationError, match="does not fit"):
        open_account(db, org, "A-1", [(meter, tariff, "400")], credit="50")

    assert row_counts(db) == before
    assert quarantined(db, org) == []


def test_a_meter_belongs_to_one_open_account_at_a_time(db: Database) -> None:
    setup = one_meter_account(db)

    with pytest.raises(ConflictError, match="already belongs to an open account"):
        open_account(db, setup.org, "A-2", [(setup.meter_id, setup.tariff_id, "1000")])


def test_a_taken_account_number_is_a_conflict_and_changes_nothing(db: Database) -> None:
    setup = one_meter_account(db)
    spare = make_meter(db, setup.org, "M-2")
    before = row_counts(db)

    with pytest.raises(ConflictError, match="already exists"):
        open_account(db, setup.org, setup.account.number, [(spare, setup.tariff_id, "0")])

    assert row_counts(db) == before


def test_a_water_tariff_cannot_price_an_electricity_meter(db: Database) -> None:
    org = make_org(db)
    water = make_tariff(db, org, "water", flat_definition("3.5", utility="water"))
    meter = make_meter(db, org)

    with pytest.raises(ValidationError, match="measures electricity but the tariff prices water"):
        open_account(db, org, "A-1", [(meter, water, "0")])


def test_an_account_with_several_meters_pays_for_all_from_one_wallet(db: Database) -> None:
    org = make_org(db)
    tariff = make_tariff(db, org, "flat", flat_definition("1"))
    water_tariff = make_tariff(db, org, "water", flat_definition("3.5", utility="water"))
    power, water = make_meter(db, org, "E1"), make_meter(db, org, "W1", utility="water")
    account = open_account(db, org, "A-1", [(power, tariff, "10"), (water, water_tariff, "2")])

    Ingestor(db).ingest([reading(power, minutes(60), "15"), reading(water, minutes(60), "4")])

    assert wallet(db, account) == D("88.00")  # 100 − 5 × 1.00 − 2 × 3.50


# --- presets -----------------------------------------------------------------------------------


def preset_row(number: str, meters: str, **extra: str) -> dict[str, str]:
    row = {
        "account_number": number,
        "customer_name": "Han Meimei",
        "customer_phone": "13800138000",
        "site": "Park",
        "building": "B1",
        "floor": "F1",
        "room": "101",
        "meter_numbers": meters,
        "tariffs": "flat",
        "initial_credit": "60",
    }
    row.update(extra)
    return row


def test_a_preset_opens_in_one_action_from_the_meters_recent_last_reading(
    db: Database, clock: FakeClock
) -> None:
    org = make_org(db)
    make_tariff(db, org, "flat", flat_definition("1"))
    meter = make_meter(db, org, "M1")
    pipeline = Ingestor(db)
    pipeline.ingest([reading(meter, minutes(0), "100"), reading(meter, minutes(60), "110")])
    presets.add_preset(
        db, organisation_id=org.id, data=presets.PresetData.from_row(preset_row("P-1", "M1"))
    )
    clock.advance(timedelta(hours=20))  # the 110 reading is 19 hours old

    account_id = presets.open_preset(db, organisation_id=org.id, account_number="P-1", actor=ACTOR)
    pipeline.ingest([reading(meter, minutes(21 * 60), "117")])

    balance = statements.balance(db, organisation_id=org.id, number="P-1")
    assert (balance.balance, balance.arrears, balance.meters) == (D("53.00"), D("0.00"), ["M1"])
    assert deducted(db, account_id) == D("7.00")  # from the 110 baseline, not from 100
    assert presets.pending_presets(db, organisation_id=org.id) == []
    with pytest.raises(ConflictError, match="already opened"):
        presets.open_preset(db, organisation_id=org.id, account_number="P-1", actor=ACTOR)


def test_a_preset_is_refused_when_the_meters_last_reading_is_exactly_a_day_old(
    db: Database, clock: FakeClock
) -> None:
    """The rule is "less than 24 h": at exactly 24 h the baseline is already too old."""
    org = make_org(db)
    make_tariff(db, org, "flat", flat_definition("1"))
    meter = make_meter(db, org, "M1")
    Ingestor(db).ingest([reading(meter, minutes(0), "100")])
    presets.add_preset(
        db, organisation_id=org.id, data=presets.PresetData.from_row(preset_row("P-1", "M1"))
    )
    clock.advance(timedelta(hours=24))
    before = row_counts(db)

    with pytest.raises(ValidationError, match="give an opening reading"):
        presets.open_preset(db, organisation_id=org.id, account_number="P-1", actor=ACTOR)

    assert row_counts(db) == before
    assert [p["account_number"] for p in presets.pending_presets(db, organisation_id=org.id)] == [
        "P-1"
    ]


def test_a_preset_opens_from_a_last_reading_one_second_under_a_day_old(
    db: Database, clock: FakeClock
) -> None:
    org = make_org(db)
    make_tariff(db, org, "flat", flat_definition("1"))
    meter = make_meter(db, org, "M1")
    Ingestor(db).ingest([reading(meter, minutes(0), "100")])
    presets.add_preset(
        db, organisation_id=org.id, data=presets.PresetData.from_row(preset_row("P-1", "M1"))
    )
    clock.advance(timedelta(hours=24) - timedelta(seconds=1))

    account_id = presets.open_preset(db, organisation_id=org.id, account_number="P-1", actor=ACTOR)

    assert presets.pending_presets(db, organisation_id=org.id) == []
    assert account_id > 0


def test_a_preset_for_a_meter_without_readings_is_refused(db: Database) -> None:
    org = make_org(db)
    make_tariff(db, org, "flat", flat_definition("1"))
    make_meter(db, org, "M1")
    presets.add_preset(
        db, organisation_id=org.id, data=presets.PresetData.from_row(preset_row("P-1", "M1"))
    )

    with pytest.raises(ValidationError, match="has no reading yet"):
        presets.open_preset(db, organisation_id=org.id, account_number="P-1", actor=ACTOR)


def test_a_preset_naming_an_unknown_meter_is_refused_when_entered(db: Database) -> None:
    org = make_org(db)
    make_tariff(db, org, "flat", flat_definition("1"))

    with pytest.raises(NotFoundError, match="meter 'M9' not found"):
        presets.add_preset(
            db, organisation_id=org.id, data=presets.PresetData.from_row(preset_row("P-1", "M9"))
        )


# --- bulk import -------------------------------------------------------------------------------

HEADER = [*preset_row("x", "x"), "opening_readings", "payment_method"]


def import_world(db: Database) -> tuple[Org, dict[str, int]]:
    org = make_org(db)
    make_tariff(db, org, "flat", flat_definition("1"))
    return org, {number: make_meter(db, org, number) for number in ("M1", "M2", "M3", "M4")}


def import_rows() -> list[dict[str, str]]:
    """Row 2 good; 3 unknown meter; 4 missing the room; 5 fails late (an unknown payment method
    after the customer, ledger accounts and meter assignment were written); 6 good, two meters."""
    return [
        preset_row("A-1", "M1", opening_readings="100"),
        preset_row("A-2", "M9", opening_readings="5"),
        preset_row("A-3", "M2", room="", opening_readings="5"),
        preset_row("A-4", "M2", opening_readings="7", customer_name="Wei", payment_method="gold"),
        preset_row("A-5", "M3;M4", opening_readings="1;2", initial_credit="25.50"),
    ]


def assert_import_report(db: Database, org: Org, results: list[presets.RowResult]) -> None:
    assert [(r.row, r.account_number, r.ok) for r in results] == [
        (2, "A-1", True),
        (3, "A-2", False),
        (4, "A-3", False),
        (5, "A-4", False),
        (6, "A-5", True),
    ]
    messages = [r.message for r in results]
    assert messages[0] == messages[4] == "opened"
    assert "meter 'M9' not found" in messages[1]
    assert "missing room" in messages[2]
    assert "method: 'gold'" in messages[3]
    assert statements.account_numbers(db, organisation_id=org.id) == ["A-1", "A-5"]
    assert statements.balance(db, organisation_id=org.id, number="A-5").balance == D("25.50")
    assert statements.balance(db, organisation_id=org.id, number="A-5").meters == ["M3", "M4"]


def test_a_csv_import_opens_the_good_rows_and_a_bad_row_changes_nothing(
    db: Database, tmp_path: Path
) -> None:
    org, _ = import_world(db)
    path = tmp_path / "accounts.csv"
    with path.open("w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(import_rows())
    customers_before = customer_count(db)

    results = presets.import_accounts(
        db, organisation_id=org.id, rows=presets.read_rows(path), open_now=True, actor=ACTOR
    )

    assert_import_report(db, org, results)
    assert customer_count(db) == customers_before + 1  # Han Meimei once; "Wei" rolled back
    assert [row[3] for row in stored_readings(db)] == [D("100"), D("1"), D("2")]


def excel_file(path: Path) -> Path:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HEADER)
    for row in import_rows():
        cells: list[object] = [row.get(name, "") for name in HEADER]
        if row["account_number"] == "A-1":  # numbers as Excel stores them
            cells[HEADER.index("opening_readings")] = 100
            cells[HEADER.index("initial_credit")] = 60
        sheet.append(cells)
    sheet.append([None] * len(HEADER))  # an empty row at the end is skipped
    book.save(path)
    return path


def collect_quietly() -> None:
    """Collect a leaked workbook here, should one leak again, rather than in whichever later
    test the garbage collector happens to run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def handles_open_on(path: Path) -> int:
    """How many file descriptors of this process point at ``path`` (Linux)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return count


def test_an_excel_import_reads_numbers_and_reports_per_row(db: Database, tmp_path: Path) -> None:
    org, _ = import_world(db)
    rows = presets.read_rows(excel_file(tmp_path / "accounts.xlsx"))

    results = presets.import_accounts(
        db, organisation_id=org.id, rows=rows, open_now=True, actor=ACTOR
    )

    assert_import_report(db, org, results)
    assert statements.balance(db, organisation_id=org.id, number="A-1").balance == D("60.00")


def test_an_import_can_pre_enter_accounts_to_open_later(db: Database, clock: FakeClock) -> None:
    org, meter_ids = import_world(db)
    Ingestor(db).ingest([reading(meter_ids["M1"], minutes(0), "50")])

    results = presets.import_accounts(
        db,
        organisation_id=org.id,
        rows=[preset_row("A-1", "M1"), preset_row("A-1", "M1")],
        open_now=False,
        actor=ACTOR,
    )

    assert (results[0].ok, results[0].message) == (True, "pre-entered")
    assert not results[1].ok and "already exists" in results[1].message
    presets.open_preset(db, organisation_id=org.id, account_number="A-1", actor=ACTOR)
    assert statements.balance(db, organisation_id=org.id, number="A-1").balance == D("60.00")


def test_a_cell_merged_down_a_column_counts_for_each_of_its_rows(
    db: Database, tmp_path: Path
) -> None:
    """Property managers merge 合并单元格 the site and building over the rows of one building:
    each row is of that building (read alone, every row after the first missed its site)."""
    org, _ = import_world(db)
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HEADER)
    for number, meter in (("A-1", "M1"), ("A-2", "M2"), ("A-3", "M3")):
        row = preset_row(number, meter, opening_readings="5")
        sheet.append([row.get(name, "") for name in HEADER])
    for name in ("site", "building"):
        column = get_column_letter(HEADER.index(name) + 1)
        sheet.merge_cells(f"{column}2:{column}4")  # keeps the value of the first cell only
    sheet.merge_cells("A6:C6")  # a note across columns stays a note (an empty-key row: skipped)
    sheet["A6"] = ""
    path = tmp_path / "merged.xlsx"
    book.save(path)

    rows = presets.read_rows(path)
    assert [(r["account_number"], r["site"], r["building"]) for r in rows] == [
        ("A-1", "Park", "B1"),
        ("A-2", "Park", "B1"),
        ("A-3", "Park", "B1"),
    ]
    results = presets.import_accounts(
        db, organisation_id=org.id, rows=rows, open_now=True, actor=ACTOR
    )
    assert [(r.row, r.ok, r.message) for r in results] == [
        (2, True, "opened"),
        (3, True, "opened"),
        (4, True, "opened"),
    ]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts handles in /proc")
def test_reading_an_excel_file_closes_it(tmp_path: Path) -> None:
    """load_workbook(read_only=True) keeps the file open until the workbook is closed; left to
    the garbage collector the handle lingers (and sometimes surfaces as a ResourceWarning, an
    error in this suite, in whichever test happens to run then)."""
    path = excel_file(tmp_path / "accounts.xlsx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            presets.read_rows(path)
            still_open = handles_open_on(path)
    finally:
        collect_quietly()

    assert still_open == 0


def test_a_file_that_is_neither_csv_nor_excel_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "accounts.txt"
    path.write_text("account_number\nA-1\n")

    with pytest.raises(ValidationError, match=r"give a \.csv or \.xlsx file"):
        presets.read_rows(path)


# --- closing -----------------------------------------------------------------------------------


def test_closing_bills_the_final_reading_and_refunds_the_remaining_credit(
    db: Database, clock: FakeClock
) -> None:
    setup = one_meter_account(db, price="1", credit="100")
    Ingestor(db).ingest([reading(setup.meter_id, minutes(60), "1010")])
    clock.advance(timedelta(hours=2))

    closed = close(db, setup.org, "A-1", {setup.meter_id: "1015"})

    assert (closed.refunded, closed.arrears) == (D("85.00"), D("0.00"))
    assert deducted(db, setup.account.account_id) == D("15.00")
    assert (wallet(db, setup.account), owed(db, setup.account)) == (D("0.00"), D("0.00"))
    settlement = next(t for t in all_transfers(db) if t["id"] == closed.refund_transfer_id)
    assert (settlement["reason"], settlement["amount_fen"]) == ("settlement", 8500)
    assert statements.balance(db, organisation_id=setup.org.id, number="A-1").status == "closed"


def test_closing_keeps_the_arrears_owed(db: Database, clock: FakeClock) -> None:
    setup = one_meter_account(db, price="1", credit="10")
    clock.advance(timedelta(hours=1))

    closed = close(db, setup.org, "A-1", {setup.meter_id: "1030"})

    assert (closed.refunded, closed.arrears) == (D("0.00"), D("20.00"))
    assert closed.refund_transfer_id is None
    balance = statements.balance(db, organisation_id=setup.org.id, number="A-1")
    assert (balance.status, balance.balance, balance.arrears) == ("closed", D("0.00"), D("20.00"))


def test_closing_turns_an_overdraft_in_use_into_arrears(db: Database, clock: FakeClock) -> None:
    setup = one_meter_account(db, price="1", credit="10", overdraft="50")
    clock.advance(timedelta(hours=1))

    closed = close(db, setup.org, "A-1", {setup.meter_id: "1030"})

    assert (closed.refunded, closed.arrears) == (D("0.00"), D("20.00"))
    assert (wallet(db, setup.account), owed(db, setup.account)) == (D("0.00"), D("20.00"))


def test_a_closed_account_cannot_be_closed_again_nor_recharged(
    db: Database, clock: FakeClock
) -> None:
    setup = one_meter_account(db, price="1", credit="10")
    clock.advance(timedelta(hours=1))
    close(db, setup.org, "A-1", {setup.meter_id: "1005"})

    with pytest.raises(ConflictError, match="already closed"):
        close(db, setup.org, "A-1", {setup.meter_id: "1006"}, key="close-2")
    with pytest.raises(ConflictError, match="closed"):
        cashier.recharge(
            db,
            organisation_id=setup.org.id,
            account_id=setup.account.account_id,
            amount="10",
            method="cash",
            actor=ACTOR,
            idempotency_key="late-recharge",
        )


def test_closing_needs_a_final_reading_for_every_meter_of_the_account(
    db: Database, clock: FakeClock
) -> None:
    org = make_org(db)
    tariff = make_tariff(db, org)
    first, second = make_meter(db, org, "M1"), make_meter(db, org, "M2")
    open_account(db, org, "A-1", [(first, tariff, "0"), (second, tariff, "0")])
    clock.advance(timedelta(hours=1))

    with pytest.raises(ValidationError, match="one final reading for each meter"):
        close(db, org, "A-1", {first: "5"})
    assert statements.balance(db, organisation_id=org.id, number="A-1").status == "open"


def test_a_refused_final_reading_says_which_meter_and_why(db: Database, clock: FakeClock) -> None:
    """The close rolls back, so the quarantine's reason must reach the operator in the error:
    the meter, the latest reading it went down from, the elapsed time in whole seconds."""
    org = make_org(db)
    tariff = make_tariff(db, org)
    meter = make_meter(db, org, "M1")
    open_account(db, org, "A-1", [(meter, tariff, "100")])
    clock.advance(timedelta(hours=1, microseconds=376153))
    with pytest.raises(ValidationError) as refused:
        close(db, org, "A-1", {meter: "99"})
    assert "meter M1: register went down from 100" in str(refused.value)
    with pytest.raises(ValidationError) as jumped:
        close(db, org, "A-1", {meter: "99999"}, key="close-2")
    assert "meter M1: " in str(jumped.value) and " in 1:00:00 exceeds" in str(jumped.value)
    assert statements.balance(db, organisation_id=org.id, number="A-1").status == "open"


def test_after_closing_the_next_tenant_pays_only_from_their_own_opening(
    db: Database, clock: FakeClock
) -> None:
    setup = one_meter_account(db, price="1", credit="100")
    clock.advance(timedelta(hours=1))
    close(db, setup.org, "A-1", {setup.meter_id: "1010"})
    pipeline = Ingestor(db)
    pipeline.ingest([reading(setup.meter_id, minutes(90), "1012")])  # nobody's: not billed
    clock.advance(timedelta(hours=1))
    customer = sites.create_customer(db, organisation_id=setup.org.id, name="Next tenant")
    request = accounts.OpenAccount(
        number="A-2",
        customer_id=customer,
        meters=[accounts.MeterOpening(setup.meter_id, setup.tariff_id, D("1013"))],
        initial_credit="20",
    )
    second = accounts.open_account(db, organisation_id=setup.org.id, request=request, actor=ACTOR)

    pipeline.ingest([reading(setup.meter_id, minutes(180), "1016")])

    assert deducted(db, setup.account.account_id) == D("10.00")
    assert deducted(db, second.account_id) == D("3.00")
    assert wallet(db, second) == D("17.00")


def test_a_failed_opening_leaves_no_trace_in_a_long_lived_ingestor(db: Database) -> None:
    """The first attempt (tariff "cheap", payment method "bitcoin") fails in
    cashier.recharge_in after accounts._assign_meters bumped the config counter and ran the
    shared ingestor, which cached the new assignment. The corrected attempt must not be priced
    from that cache: "dear" gives 20.00 (a bug once gave 5.00 from "cheap", and a foreign-key
    error on PostgreSQL)."""
    org = make_org(db)
    cheap = make_tariff(db, org, "cheap", flat_definition("0.50"))
    dear = make_tariff(db, org, "dear", flat_definition("2.00"))
    meter = make_meter(db, org)
    shared = Ingestor(db)  # as bootstrap.App keeps one for the whole process
    wrong = accounts.OpenAccount(
        number="A-1",
        customer_id=org.customer_id,
        meters=[accounts.MeterOpening(meter, cheap, D("100"))],
        initial_credit="50",
        payment_method="bitcoin",
    )
    with pytest.raises(ValidationError, match="method"):
        accounts.open_account(
            db, organisation_id=org.id, request=wrong, actor=ACTOR, ingestor=shared
        )
    account = open_account(db, org, "A-1", [(meter, dear, "100")], credit="50", ingestor=shared)

    shared.ingest([reading(meter, minutes(60), "110")])

    assert deducted(db, account.account_id) == D("20.00")


# --- organisation scoping ----------------------------------------------------------------------


@pytest.fixture
def two_orgs(db: Database) -> tuple[Any, Org]:
    """Org A with an account, a quarantined reading and a preset; Org B empty but complete."""
    setup = one_meter_account(db, price="1")
    Ingestor(db).ingest([reading(setup.meter_id, minutes(60), "10")])  # decreased: quarantined
    make_meter(db, setup.org, "M2")
    presets.add_preset(
        db,
        organisation_id=setup.org.id,
        data=presets.PresetData.from_row(preset_row("P-1", "M2")),
    )
    stranger = make_org(db, "Org B")
    make_tariff(db, stranger, "flat")
    return setup, stranger


def test_another_organisations_account_is_not_found_at_the_desk(
    db: Database, two_orgs: tuple[Any, Org]
) -> None:
    setup, stranger = two_orgs
    money = {"amount": "10", "method": "cash", "actor": ACTOR, "idempotency_key": "k"}

    with pytest.raises(NotFoundError):
        cashier.recharge(
            db, organisation_id=stranger.id, account_id=setup.account.account_id, **money
        )  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        cashier_refund.refund(
            db, organisation_id=stranger.id, account_id=setup.account.account_id, **money
        )  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        statements.balance(db, organisation_id=stranger.id, number="A-1")
    with pytest.raises(NotFoundError):
        statements.statement(
            db, organisation_id=stranger.id, number="A-1", start=minutes(0), end=minutes(60)
        )
    with pytest.raises(NotFoundError):
        close(db, stranger, "A-1", {setup.meter_id: "1001"})
    assert wallet(db, setup.account) == D("100.00")


def test_another_organisations_customer_meter_and_tariff_are_not_found(
    db: Database, two_orgs: tuple[Any, Org]
) -> None:
    setup, stranger = two_orgs
    own_tariff = tariffs.find_tariff(db, organisation_id=stranger.id, name="flat")
    own_meter = make_meter(db, stranger, "B-M1")

    for customer, meter, tariff in (
        (setup.org.customer_id, own_meter, own_tariff),
        (stranger.customer_id, setup.meter_id, own_tariff),
        (stranger.customer_id, own_meter, setup.tariff_id),
    ):
        request = accounts.OpenAccount(
            number="B-1",
            customer_id=customer,
            meters=[accounts.MeterOpening(meter, tariff, D("0"))],
        )
        with pytest.raises(NotFoundError):
            accounts.open_account(db, organisation_id=stranger.id, request=request, actor=ACTOR)
    assert statements.account_numbers(db, organisation_id=stranger.id) == []


def test_another_organisations_places_and_tariffs_are_not_found(
    db: Database, two_orgs: tuple[Any, Org]
) -> None:
    setup, stranger = two_orgs

    with pytest.raises(NotFoundError):
        sites.create_building(db, organisation_id=stranger.id, site_id=setup.org.site_id, name="X")
    with pytest.raises(NotFoundError):
        metering.create_meter(
            db,
            organisation_id=stranger.id,
            spec=metering.MeterSpec("X1", "electricity", "single_phase", room_id=setup.org.room_id),
            actor=ACTOR,
        )
    with pytest.raises(NotFoundError):
        tariffs.describe(db, organisation_id=stranger.id, tariff_id=setup.tariff_id)
    with pytest.raises(NotFoundError):
        presets.open_preset(db, organisation_id=stranger.id, account_number="P-1", actor=ACTOR)


def test_another_organisations_quarantine_is_invisible_and_cannot_be_released(
    db: Database, two_orgs: tuple[Any, Org]
) -> None:
    setup, stranger = two_orgs
    [item] = quarantined(db, setup.org)

    assert quarantined(db, stranger) == []
    with pytest.raises(NotFoundError):
        corrections.release(db, organisation_id=stranger.id, quarantine_id=item["id"], actor="x")
    assert [i["id"] for i in quarantined(db, setup.org)] == [item["id"]]


def test_discarding_another_organisations_quarantined_reading_is_not_found(
    db: Database, two_orgs: tuple[Any, Org]
) -> None:
    setup, stranger = two_orgs
    [item] = quarantined(db, setup.org)

    with pytest.raises(NotFoundError):
        corrections.discard(db, organisation_id=stranger.id, quarantine_id=item["id"], actor="x")


def test_replacing_another_organisations_meter_is_not_found(
    db: Database, two_orgs: tuple[Any, Org]
) -> None:
    """Like a meter id that does not exist at all — a different answer would tell the caller
    that the id exists elsewhere."""
    setup, stranger = two_orgs
    replacement = corrections.Replacement(setup.meter_id, minutes(120), D("1001"), D("0"))

    with pytest.raises(NotFoundError):
        corrections.replace_meter(
            db, organisation_id=stranger.id, replacement=replacement, actor="x"
        )
