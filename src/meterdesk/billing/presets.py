"""Pre-entered accounts (预录入) and bulk opening from a spreadsheet.

A preset holds everything needed to open an account — customer, room, meters with tariffs,
initial credit, overdraft — so that opening it later is one action. Bulk import reads CSV or
Excel rows; each row is checked and applied in its own transaction, so a bad row changes nothing
and the report says, per row, what was done or exactly why not.

Columns (header names, case-insensitive): account_number, customer_name, customer_phone,
customer_email, site, building, floor, room, meter_numbers, tariffs, opening_readings,
initial_credit, overdraft_limit, billing_mode, payment_method, credit_unit (empty: money;
quantity: 购量, decision 0006 — one meter, platform billing, a flat or tiered tariff),
customer_wechat_mini_openid (the mini program's openid, for its subscription messages). Several
meters are separated by ``;`` in meter_numbers, with matching ``;``-separated tariffs and
opening_readings (one tariff may serve all meters; an empty opening reading means "use the
meter's last reading").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any
from zipfile import BadZipFile

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from meterdesk.billing.accounts import MeterOpening, OpenAccount, open_account_in
from meterdesk.billing.ingest import Ingestor
from meterdesk.billing.model import BillingMode
from meterdesk.billing.quantity_model import (
    CreditUnit,
    check_opening,
    check_tariff,
    parse_credit_unit,
)
from meterdesk.billing.tables import account_presets
from meterdesk.db.database import Database
from meterdesk.ledger.model import PaymentMethod
from meterdesk.metering.service import find_meter
from meterdesk.shared.contacts import (
    optional_email,
    optional_openid,
    optional_phone,
    sms_warning,
)
from meterdesk.shared.errors import ConflictError, MeterdeskError, NotFoundError, ValidationError
from meterdesk.shared.money import parse_unsigned_money, to_decimal
from meterdesk.shared.sheets import SheetRow, csv_lines, table
from meterdesk.sites.service import RoomPath, find_room, same_customer_in
from meterdesk.sites.tables import customers
from meterdesk.tariffs.repository import load_tariff
from meterdesk.tariffs.tables import tariffs

COLUMNS = (
    "account_number",
    "customer_name",
    "customer_phone",
    "customer_email",
    "site",
    "building",
    "floor",
    "room",
    "meter_numbers",
    "tariffs",
    "opening_readings",
    "initial_credit",
    "overdraft_limit",
    "billing_mode",
    "payment_method",
    "credit_unit",
    "customer_wechat_mini_openid",
)
REQUIRED = (
    "account_number",
    "customer_name",
    "site",
    "building",
    "floor",
    "room",
    "meter_numbers",
    "tariffs",
)


# The longest value each text column holds (the API's PresetIn and the database columns): a
# longer one was a 500 on PostgreSQL in the middle of an import (StringDataRightTruncation), and
# stored as it was on SQLite.
LENGTHS = {
    "account_number": 64,
    "customer_name": 200,
    "customer_phone": 40,
    "customer_email": 200,
    "customer_wechat_mini_openid": 64,
    "site": 200,
    "building": 200,
    "floor": 100,
    "room": 100,
    "meter_numbers": 64,  # each
    "tariffs": 200,  # each
}
LISTED = ("meter_numbers", "tariffs")


@dataclass(frozen=True)
class PresetData:
    account_number: str
    customer_name: str
    site: str
    building: str
    floor: str
    room: str
    meter_numbers: list[str]
    tariffs: list[str]
    opening_readings: list[str] = field(default_factory=list)
    customer_phone: str = ""
    customer_email: str = ""
    initial_credit: str = "0"
    overdraft_limit: str = "0"
    billing_mode: str = "platform"
    payment_method: str = "cash"
    credit_unit: str = CreditUnit.MONEY.value  # presets stored before it: money
    customer_wechat_mini_openid: str = ""

    def with_contacts_normalised(self) -> PresetData:
        """The phone as E.164 and the e-mail normalised (shared/contacts.py), or a
        ValidationError naming the column: checked for every way a preset comes in (the API
        builds one from its body, not from a row) and again when one stored before the check
        is opened, so no customer is created with a number the providers cannot use."""
        return replace(
            self,
            customer_phone=optional_phone(self.customer_phone, field="customer_phone") or "",
            customer_email=optional_email(self.customer_email, field="customer_email") or "",
            customer_wechat_mini_openid=_mini_openid(self.customer_wechat_mini_openid),
        )

    @classmethod
    def from_row(cls, row: dict[str, str]) -> PresetData:
        clean = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        missing = [name for name in REQUIRED if not clean.get(name)]
        if missing:
            raise ValidationError(f"missing {', '.join(missing)}")
        for name, limit in LENGTHS.items():
            parts = _split(clean.get(name, "")) if name in LISTED else [clean.get(name, "")]
            if any(len(part) > limit for part in parts):
                raise ValidationError(f"{name}: longer than {limit} characters")
        meters = _split(clean["meter_numbers"])
        tariff_names = _split(clean["tariffs"])
        readings = (
            _split(clean.get("opening_readings", ""), keep_empty=True)
            if clean.get("opening_readings")
            else []
        )
        if len(tariff_names) not in (1, len(meters)):
            raise ValidationError("tariffs: give one tariff, or one per meter")
        if readings and len(readings) != len(meters):
            raise ValidationError(
                "opening_readings: give one per meter (empty = use the last reading)"
            )
        for value in readings:
            if value:
                to_decimal(value, field="opening_readings")
        # Checked now, as the API's presets are: a pre-entered row with credit -5 or method
        # "gold" was stored and could then never be opened.
        parse_unsigned_money(clean.get("initial_credit") or "0", field="initial_credit")
        parse_unsigned_money(clean.get("overdraft_limit") or "0", field="overdraft_limit")
        _one_of(BillingMode, clean.get("billing_mode") or "platform", "billing_mode")
        _one_of(PaymentMethod, clean.get("payment_method") or "cash", "payment_method")
        parse_credit_unit(clean.get("credit_unit") or CreditUnit.MONEY.value)
        return cls(
            account_number=clean["account_number"],
            customer_name=clean["customer_name"],
            site=clean["site"],
            building=clean["building"],
            floor=clean["floor"],
            room=clean["room"],
            meter_numbers=meters,
            tariffs=tariff_names * len(meters) if len(tariff_names) == 1 else tariff_names,
            opening_readings=readings,
            customer_phone=optional_phone(clean.get("customer_phone"), field="customer_phone")
            or "",
            customer_email=optional_email(clean.get("customer_email"), field="customer_email")
            or "",
            initial_credit=clean.get("initial_credit") or "0",
            overdraft_limit=clean.get("overdraft_limit") or "0",
            billing_mode=clean.get("billing_mode") or "platform",
            payment_method=clean.get("payment_method") or "cash",
            credit_unit=clean.get("credit_unit") or CreditUnit.MONEY.value,
            customer_wechat_mini_openid=_mini_openid(clean.get("customer_wechat_mini_openid")),
        )


def _mini_openid(value: str | None) -> str:
    return optional_openid(value, field="customer_wechat_mini_openid") or ""


def _one_of(kind: type[StrEnum], value: str, field: str) -> None:
    if value not in {member.value for member in kind}:
        choices = ", ".join(member.value for member in kind)
        raise ValidationError(f"{field}: {value!r} is not one of {choices}")


def _split(value: str, *, keep_empty: bool = False) -> list[str]:
    parts = [part.strip() for part in value.split(";")]
    return parts if keep_empty else [part for part in parts if part]


def add_preset(db: Database, *, organisation_id: int, data: PresetData) -> int:
    with db.transaction() as conn:
        return _add_preset_in(conn, db, organisation_id, data)


def _add_preset_in(conn: Connection, db: Database, organisation_id: int, data: PresetData) -> int:
    data = data.with_contacts_normalised()
    # refuse now what could not be opened later
    _, _, tariff_ids = _resolve(conn, organisation_id, data)
    _check_quantity(conn, data, tariff_ids)
    try:
        result = conn.execute(
            insert(account_presets).values(
                organisation_id=organisation_id,
                account_number=data.account_number,
                payload=json.dumps(asdict(data), ensure_ascii=False),
                status="pending",
                created_at=db.clock(),
                opened_account_id=None,
            )
        )
    except IntegrityError:
        raise ConflictError(
            f"a preset for account {data.account_number!r} already exists"
        ) from None
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def open_preset(
    db: Database,
    *,
    organisation_id: int,
    account_number: str,
    actor: str,
    ingestor: Ingestor | None = None,
) -> int:
    with db.transaction() as conn:
        row = (
            conn.execute(
                select(account_presets).where(
                    account_presets.c.organisation_id == organisation_id,
                    account_presets.c.account_number == account_number,
                )
            )
            .mappings()
            .one_or_none()
        )
        if row is None:
            raise NotFoundError(f"no preset for account {account_number!r}")
        if row["status"] != "pending":
            raise ConflictError(f"the preset for account {account_number!r} was already opened")
        data = PresetData(**json.loads(row["payload"]))
        account_id = _open_in(conn, db, organisation_id, data, actor, ingestor)
        conn.execute(
            update(account_presets)
            .where(account_presets.c.id == row["id"])
            .values(status="opened", opened_account_id=account_id)
        )
        return account_id


def _open_in(
    conn: Connection,
    db: Database,
    organisation_id: int,
    data: PresetData,
    actor: str,
    ingestor: Ingestor | None,
) -> int:
    data = data.with_contacts_normalised()
    room_id, meter_ids, tariff_ids = _resolve(conn, organisation_id, data)
    customer_id = _customer(conn, db, organisation_id, data)
    readings = data.opening_readings or [""] * len(meter_ids)
    request = OpenAccount(
        number=data.account_number,
        customer_id=customer_id,
        room_id=room_id,
        meters=[
            MeterOpening(m, t, Decimal(r) if r else None)
            for m, t, r in zip(meter_ids, tariff_ids, readings, strict=True)
        ],
        billing_mode=data.billing_mode,
        overdraft_limit=data.overdraft_limit,
        initial_credit=data.initial_credit,
        payment_method=data.payment_method,
        credit_unit=data.credit_unit,
        idempotency_key=f"open:{organisation_id}:{data.account_number}",
    )
    return open_account_in(
        conn,
        db=db,
        organisation_id=organisation_id,
        request=request,
        actor=actor,
        ingestor=ingestor,
    ).account_id


def _check_quantity(conn: Connection, data: PresetData, tariff_ids: list[int]) -> None:
    """What opening a quantity-credit account (购量) would refuse, refused when it is
    pre-entered: a wrong unit, several meters, meter billing, an overdraft, a time-of-use
    tariff."""
    if parse_credit_unit(data.credit_unit) is not CreditUnit.QUANTITY:
        return
    check_opening(
        data.billing_mode == BillingMode.PLATFORM.value,
        len(data.meter_numbers),
        parse_unsigned_money(data.overdraft_limit or "0", field="overdraft_limit"),
    )
    for tariff_id in tariff_ids:
        check_tariff(load_tariff(conn, tariff_id))


def _resolve(
    conn: Connection, organisation_id: int, data: PresetData
) -> tuple[int, list[int], list[int]]:
    room_id = find_room(
        conn,
        organisation_id=organisation_id,
        path=RoomPath(data.site, data.building, data.floor, data.room),
    )
    meter_ids = [
        find_meter(conn, organisation_id=organisation_id, number=n) for n in data.meter_numbers
    ]
    tariff_ids = []
    for name in data.tariffs:
        found = conn.execute(
            select(tariffs.c.id).where(
                tariffs.c.organisation_id == organisation_id, tariffs.c.name == name
            )
        ).scalar_one_or_none()
        if found is None:
            raise NotFoundError(f"tariff {name!r} not found")
        tariff_ids.append(int(found))
    return room_id, meter_ids, tariff_ids


def _customer(conn: Connection, db: Database, organisation_id: int, data: PresetData) -> int:
    """The customer with this name and phone (compared as a number:
    :func:`sites.service.same_customer_in`), created when new."""
    found = same_customer_in(conn, organisation_id, data.customer_name, data.customer_phone or None)
    if found is not None:
        return found
    result = conn.execute(
        insert(customers).values(
            organisation_id=organisation_id,
            name=data.customer_name,
            phone=data.customer_phone or None,
            email=data.customer_email or None,
            wechat_openid=None,
            wechat_mini_openid=data.customer_wechat_mini_openid or None,
            created_at=db.clock(),
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


@dataclass(frozen=True)
class RowResult:
    row: int  # 1-based line of the data in the file (header = 1)
    account_number: str
    ok: bool
    message: str
    # set on a row stored with a landline: accepted (voice calls reach it), but SMS cannot
    phone_warning: str | None = None


def read_rows(path: Path) -> list[SheetRow]:
    """The data rows of a CSV or Excel file under its header (the first non-empty row).

    A file the import would misread is refused whole, before anything is stored, with the line
    to fix: text that is not UTF-8, a column the import does not know (a misspelt
    ``initial_credit`` would have opened every account without its credit), a column named
    twice, a value beyond the named columns, an Excel formula with no saved result (it reads as
    an empty cell)."""
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return table(_excel_lines(path), path.name, COLUMNS)
    if path.suffix.lower() == ".csv":
        return table(csv_lines(path), path.name, COLUMNS)
    raise ValidationError(f"{path.name}: give a .csv or .xlsx file")


def _excel_lines(path: Path) -> list[tuple[int, list[str]]]:
    from openpyxl.utils import get_column_letter

    values = _sheet(path, data_only=True)
    written = _sheet(path, data_only=False)  # the formulas themselves
    filled = _merged_down(path)
    lines = []
    for number, (row, formulas) in enumerate(zip(values, written, strict=False), start=1):
        if any((number, column) in filled for column in range(1, len(row) + 1)):
            row = tuple(filled.get((number, column), value) for column, value in enumerate(row, 1))
        for column, (value, formula) in enumerate(zip(row, formulas, strict=False), start=1):
            if value is None and isinstance(formula, str) and formula.startswith("="):
                raise ValidationError(
                    f"{path.name}: row {number}, column {get_column_letter(column)}: the formula {formula} has no "
                    "saved result (open and save the file in Excel, or type the value)"
                )
        lines.append((number, [_cell_text(value) for value in row]))
    return lines


def _cell_text(value: object) -> str:
    """A cell as the text typed into it. A whole number Excel saved as a float (a phone number
    such as 1.3800138E10 in the file) reads as ``13800138000``, not ``13800138000.0``, which
    would be a different, 12-digit number."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _merged_down(path: Path) -> dict[tuple[int, int], object]:
    """(row, column) → value for the cells under the first of a merged block in one column: a
    sheet that merges 合并单元格 "B1" over the rows of a building means B1 on each of them (read
    alone, every row after the first had no building). Blocks over several columns (a title)
    are left as they are."""
    from openpyxl import load_workbook

    workbook = load_workbook(path, data_only=True)  # merged ranges need the full reader
    try:
        sheet = workbook.active
        found: dict[tuple[int, int], object] = {}
        if sheet is None:
            return found
        for block in sheet.merged_cells.ranges:
            if block.min_col != block.max_col or block.min_row == block.max_row:
                continue
            value = sheet.cell(block.min_row, block.min_col).value
            for row in range(block.min_row + 1, block.max_row + 1):
                found[(row, block.min_col)] = value
        return found
    finally:
        workbook.close()


def _sheet(path: Path, *, data_only: bool) -> list[tuple[object, ...]]:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = load_workbook(path, read_only=True, data_only=data_only)
        try:  # a read-only workbook keeps the file open until closed
            sheet = workbook.active
            if sheet is None:
                raise ValidationError(f"{path.name}: the workbook has no sheet")
            return list(sheet.iter_rows(values_only=True))  # from row 1, empty rows included
        finally:
            workbook.close()
    # Not a zip, or a zip without a readable sheet (ParseError is a SyntaxError): a 500 before.
    except (BadZipFile, InvalidFileException, KeyError, ValueError, SyntaxError) as error:
        raise ValidationError(
            f"{path.name}: not an Excel workbook this import can read ({type(error).__name__})"
        ) from None


def import_accounts(
    db: Database,
    *,
    organisation_id: int,
    rows: Sequence[dict[str, str]],
    open_now: bool,
    actor: str,
) -> list[RowResult]:
    """Each row in its own transaction; returns one result per row (numbered as in the file
    for rows from :func:`read_rows`). A row stored with a landline is done, with its
    ``phone_warning``: SMS cannot reach the tenant, voice calls can."""
    ingestor = Ingestor(db)
    results = []
    for position, row in enumerate(rows, start=2):
        line = row.line if isinstance(row, SheetRow) else position
        number = (row.get("account_number") or "").strip()
        try:
            data = PresetData.from_row(row)
            with db.transaction() as conn:
                if open_now:
                    _open_in(conn, db, organisation_id, data, actor, ingestor)
                    message = "opened"
                else:
                    _add_preset_in(conn, db, organisation_id, data)
                    message = "pre-entered"
            warning = sms_warning(data.customer_phone or None, field="customer_phone")
            results.append(RowResult(line, number, True, message, warning))
        except MeterdeskError as error:
            results.append(RowResult(line, number, False, str(error)))
    return results


def pending_presets(db: Database, *, organisation_id: int) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = (
            conn.execute(
                select(account_presets).where(
                    account_presets.c.organisation_id == organisation_id,
                    account_presets.c.status == "pending",
                )
            )
            .mappings()
            .all()
        )
        return [{"account_number": r["account_number"], **json.loads(r["payload"])} for r in rows]
