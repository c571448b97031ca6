"""``meterdesk account`` and the desk: open, pre-enter, import, close, balance, statement,
recharge, refund, reverse."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer

from meterdesk.billing import (
    accounts,
    cashier,
    cashier_arrears,
    cashier_refund,
    presets,
    quantity_show,
    statements,
)
from meterdesk.cli.common import (
    ActorOption,
    JsonOption,
    OrgOption,
    app,
    emit,
    handled,
    organisation_id,
    parse_when,
    to_jsonable,
    who,
)
from meterdesk.cli.places import room_id, warn
from meterdesk.metering.service import find_meter
from meterdesk.shared.contacts import sms_warning
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.money import to_decimal
from meterdesk.tariffs.service import find_tariff

account_cli = typer.Typer(
    help="Customer accounts (电户): open, close, balance, statement.", no_args_is_help=True
)
preset_cli = typer.Typer(
    help="Pre-entered accounts, opened later with one command.", no_args_is_help=True
)
account_cli.add_typer(preset_cli, name="preset")

CreditUnitOption = Annotated[
    str,
    typer.Option(
        "--credit-unit",
        help="money (default): the balance is money, use is priced when measured. quantity "
        "(购量): the tenant buys kWh or m³ at the price in force that day (flat or tiered "
        "tariff, not time-of-use), sees quantity left and is cut when it is used up; one "
        "meter, platform billing, no overdraft",
    ),
]
KeyOption = Annotated[
    str, typer.Option("--key", help="idempotency key: repeating it never moves money twice")
]


def _account_id(org: int, number: str) -> int:
    with app().db.read() as conn:
        return int(str(accounts.account_by_number(conn, organisation_id=org, number=number)["id"]))


def _openings(
    org: int, meters: list[str], tariff_names: list[str], readings: list[str]
) -> list[accounts.MeterOpening]:
    if len(tariff_names) not in (1, len(meters)):
        raise ValidationError("--tariff: give one, or one per --meter")
    if readings and len(readings) != len(meters):
        raise ValidationError(
            "--reading: give one per --meter (or none to use each meter's last reading)"
        )
    names = tariff_names * len(meters) if len(tariff_names) == 1 else tariff_names
    with app().db.read() as conn:
        meter_ids = [find_meter(conn, organisation_id=org, number=m) for m in meters]
    return [
        accounts.MeterOpening(
            meter_id,
            find_tariff(app().db, organisation_id=org, name=name),
            to_decimal(reading, field="reading") if reading else None,
        )
        for meter_id, name, reading in zip(
            meter_ids, names, readings or [""] * len(meters), strict=True
        )
    ]


@account_cli.command("open")
def open_(
    number: str,
    org: OrgOption,
    customer: Annotated[int, typer.Option(help="customer id")],
    meter: Annotated[
        list[str], typer.Option(help="meter number (repeat for one account, many meters)")
    ],
    tariff: Annotated[
        list[str], typer.Option(help="tariff name (one for all meters, or one per meter)")
    ],
    reading: Annotated[list[str] | None, typer.Option(help="opening reading per meter")] = None,
    room: Annotated[str | None, typer.Option(help="SITE/BUILDING/FLOOR/ROOM")] = None,
    credit: Annotated[str, typer.Option(help="initial credit")] = "0",
    overdraft: Annotated[str, typer.Option(help="allowed overdraft")] = "0",
    mode: Annotated[str, typer.Option(help="platform|meter billing")] = "platform",
    method: Annotated[str, typer.Option()] = "cash",
    credit_unit: CreditUnitOption = "money",
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Open an account (开户) for a customer with one or more meters (one meter for quantity
    credit)."""
    with handled():
        o = organisation_id(org)
        request = accounts.OpenAccount(
            number=number,
            customer_id=customer,
            room_id=room_id(o, room) if room else None,
            meters=_openings(o, meter, tariff, reading or []),
            billing_mode=mode,
            overdraft_limit=overdraft,
            initial_credit=credit,
            payment_method=method,
            credit_unit=credit_unit,
        )
        opened = accounts.open_account(
            app().db, organisation_id=o, request=request, actor=who(actor), ingestor=app().ingestor
        )
        held = quantity_show.held(app().db, opened.account_id) if credit_unit != "money" else None
        emit(
            opened,
            as_json,
            lambda v: (
                f"account {v.number} opened (id {v.account_id})"
                + (f": {quantity_show.left_text(held)}" if held else "")
            ),
        )


@preset_cli.command("add")
def preset_add(
    number: str,
    org: OrgOption,
    customer_name: Annotated[str, typer.Option()],
    room: Annotated[str, typer.Option(help="SITE/BUILDING/FLOOR/ROOM")],
    meter: Annotated[list[str], typer.Option()],
    tariff: Annotated[list[str], typer.Option()],
    customer_phone: Annotated[
        str, typer.Option(help="mobile or landline, + and country code outside CN; stored as E.164")
    ] = "",
    customer_email: Annotated[str, typer.Option()] = "",
    customer_wechat_mini_openid: Annotated[
        str, typer.Option(help="the mini program's openid (小程序), not the official account's")
    ] = "",
    credit: Annotated[str, typer.Option()] = "0",
    overdraft: Annotated[str, typer.Option()] = "0",
    credit_unit: CreditUnitOption = "money",
    as_json: JsonOption = False,
) -> None:
    """Pre-enter an account's data to open it later with `account preset open`."""
    with handled():
        parts = room.split("/")
        if len(parts) != 4:
            raise ValidationError("--room: give SITE/BUILDING/FLOOR/ROOM")
        data = presets.PresetData.from_row(
            {
                "account_number": number,
                "customer_name": customer_name,
                "customer_phone": customer_phone,
                "customer_email": customer_email,
                "customer_wechat_mini_openid": customer_wechat_mini_openid,
                "site": parts[0],
                "building": parts[1],
                "floor": parts[2],
                "room": parts[3],
                "meter_numbers": ";".join(meter),
                "tariffs": ";".join(tariff),
                "initial_credit": credit,
                "overdraft_limit": overdraft,
                "credit_unit": credit_unit,
            }
        )
        new = presets.add_preset(app().db, organisation_id=organisation_id(org), data=data)
        warning = sms_warning(data.customer_phone or None, field="customer_phone")
        emit(
            {"id": new, "account_number": number, "phone_warning": warning},
            as_json,
            lambda v: f"account {number} pre-entered",
        )
        warn(warning)


@preset_cli.command("open")
def preset_open(
    number: str, org: OrgOption, actor: ActorOption = "", as_json: JsonOption = False
) -> None:
    """Open a pre-entered account in one action (baseline: each meter's last reading)."""
    with handled():
        new = presets.open_preset(
            app().db,
            organisation_id=organisation_id(org),
            account_number=number,
            actor=who(actor),
            ingestor=app().ingestor,
        )
        emit(
            {"account_id": new, "number": number},
            as_json,
            lambda v: f"account {number} opened (id {new})",
        )


@preset_cli.command("list")
def preset_list(org: OrgOption, as_json: JsonOption = False) -> None:
    """Pre-entered accounts not opened yet."""
    with handled():
        found = presets.pending_presets(app().db, organisation_id=organisation_id(org))
        emit(
            found,
            as_json,
            lambda v: (
                "\n".join(
                    f"{p['account_number']}  {p['customer_name']}  "
                    f"{p['site']}/{p['building']}/{p['floor']}/{p['room']}  "
                    f"meters {', '.join(p['meter_numbers'])}"
                    + ("  quantity credit (购量)" if p.get("credit_unit") == "quantity" else "")
                    for p in v
                )
                or "no pending presets"
            ),
        )


@account_cli.command("import")
def import_(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help=".csv (UTF-8) or .xlsx with a header row of: "
            + ", ".join(presets.COLUMNS)
            + " (several meters, tariffs and readings separated by ';'; see docs/api.md)",
        ),
    ],
    org: OrgOption,
    open_now: Annotated[
        bool, typer.Option("--open/--preset", help="open at once, or only pre-enter")
    ] = False,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Bulk-open (or pre-enter) accounts from Excel/CSV; prints what happened to every row."""
    with handled():
        rows = presets.read_rows(file)
        results = presets.import_accounts(
            app().db,
            organisation_id=organisation_id(org),
            rows=rows,
            open_now=open_now,
            actor=who(actor),
        )
        emit(
            results,
            as_json,
            lambda v: (
                "\n".join(
                    f"row {r.row}: {r.account_number or '?'}: {'OK ' if r.ok else 'FAILED '}{r.message}"
                    + (f"\n  warning: {r.phone_warning}" if r.phone_warning else "")
                    for r in v
                )
                + f"\n{sum(r.ok for r in v)} of {len(v)} rows done"
            ),
        )
        if not all(r.ok for r in results):
            raise typer.Exit(2)


@account_cli.command("close")
def close(
    number: str,
    org: OrgOption,
    meter: Annotated[list[str], typer.Option(help="meter number")],
    reading: Annotated[list[str], typer.Option(help="final reading per meter")],
    key: KeyOption,
    method: Annotated[str, typer.Option(help="how the remaining credit is paid back")] = "cash",
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Close an account (销户): final readings, final charges, refund of the remaining credit."""
    with handled():
        o = organisation_id(org)
        if len(meter) != len(reading):
            raise ValidationError("give one --reading per --meter")
        with app().db.read() as conn:
            finals = [
                accounts.FinalReading(
                    find_meter(conn, organisation_id=o, number=m), to_decimal(r, field="reading")
                )
                for m, r in zip(meter, reading, strict=True)
            ]
        closed = accounts.close_account(
            app().db,
            organisation_id=o,
            number=number,
            final_readings=finals,
            refund_method=method,
            actor=who(actor),
            idempotency_key=key,
            ingestor=app().ingestor,
        )
        emit(
            closed,
            as_json,
            lambda v: (
                f"account {v.number} closed: refunded {v.refunded}, arrears still owed {v.arrears}"
            ),
        )


@account_cli.command("balance")
def balance(number: str, org: OrgOption, as_json: JsonOption = False) -> None:
    """Balance, arrears and meters of an account; for quantity credit (购量) also the quantity
    left, bought and used, the money carried to the next purchase and the last price."""
    with handled():
        found = statements.balance(app().db, organisation_id=organisation_id(org), number=number)
        if as_json:
            emit(_balance_dict(found), True)
        else:
            emit(found, False, _balance_text)


def _balance_dict(found: statements.AccountBalance) -> dict[str, object]:
    shown = to_jsonable(found)
    shown["quantity"] = quantity_show.as_dict(found.quantity) if found.quantity else None
    return dict(shown)


def _balance_text(v: statements.AccountBalance) -> str:
    money = (
        f"balance {v.balance} CNY, arrears {v.arrears}, overdraft allowed {v.overdraft_limit}, "
        f"meters {', '.join(v.meters)}"
    )
    if v.quantity is None:
        return f"account {v.number} ({v.status}, {v.billing_mode} billing): {money}"
    q = quantity_show.as_dict(v.quantity)
    return (
        f"account {v.number} ({v.status}, {v.billing_mode} billing, quantity credit 购量): "
        f"{quantity_show.left_text(v.quantity)}\n"
        f"  bought {q['bought']} {q['unit']}, used {q['used']} {q['unit']}, "
        f"last price {q['price']} per {q['unit']}, unused quantity worth {q['unused_value']}\n"
        f"  {money}"
    )


@account_cli.command("statement")
def statement(
    number: str,
    org: OrgOption,
    start: Annotated[
        str | None, typer.Option("--from", help="ISO time, default 30 days ago")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO time, default now")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every entry of the account in a period with the running balance (对账单)."""
    with handled():
        until = parse_when(end) or datetime.now(UTC)
        since = parse_when(start) or until - timedelta(days=30)
        found = statements.statement(
            app().db, organisation_id=organisation_id(org), number=number, start=since, end=until
        )
        emit(found, as_json, _statement_text)


def _statement_text(s: statements.Statement) -> str:
    lines = [
        f"statement of account {s.number}, {_utc(s.start)} – {_utc(s.end)}",
        f"{'time (UTC)':<26}{'entry':<22}{'change':>12}{'balance':>12}{'arrears':>10}",
        f"{'':<26}{'opening':<22}{'':>12}{s.opening_balance:>12}{s.opening_arrears:>10}",
    ]
    for line in s.lines:
        change = line.balance_change if line.balance_change else -line.arrears_change
        lines.append(
            f"{_utc(line.at):<26}{line.reason:<22}{change:>12}{line.balance_after:>12}{line.arrears_after:>10}"
        )
    lines.append(f"{'':<26}{'closing':<22}{'':>12}{s.closing_balance:>12}{s.closing_arrears:>10}")
    lines.extend(f"  total {reason}: {amount}" for reason, amount in sorted(s.totals.items()))
    return "\n".join(lines)


def _utc(at: datetime) -> str:
    """A statement's time to the second, in UTC as its header says (a recharge's time carries
    microseconds, which cut to the column used to lose its offset)."""
    return at.astimezone(UTC).isoformat(timespec="seconds")


def _desk_money(
    use_case: Callable[..., cashier.MoneyResult],
    number: str,
    amount: str,
    org: str,
    key: str,
    method: str,
    reference: str | None,
    actor: str,
) -> cashier.MoneyResult:
    """A recharge, refund or arrears payment of the account numbered ``number``."""
    o = organisation_id(org)
    return use_case(
        app().db,
        organisation_id=o,
        account_id=_account_id(o, number),
        amount=amount,
        method=method,
        actor=who(actor),
        idempotency_key=key,
        reference=reference,
    )


def recharge(
    number: str,
    amount: str,
    org: OrgOption,
    key: KeyOption,
    method: Annotated[str, typer.Option(help="cash|card|transfer|wechat|alipay")] = "cash",
    reference: Annotated[str | None, typer.Option(help="receipt or payment reference")] = None,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Recharge (充值) an account; arrears are repaid first. A quantity-credit account (购量)
    buys kWh or m³ with it at today's price; the answer says how much is left."""
    with handled():
        done = _desk_money(cashier.recharge, number, amount, org, key, method, reference, actor)
        verb = "already recharged (same key)" if done.replayed else "recharged"
        _emit_desk(
            done,
            as_json,
            f"{verb} {Decimal(amount):.2f}",
            f"balance {done.balance}, arrears {done.arrears} (transfer {done.transfer_id})",
        )


def _emit_desk(done: cashier.MoneyResult, as_json: bool, what: str, money: str) -> None:
    """A recharge's or refund's answer; a quantity account's also says the quantity left and
    the money carried (``quantity`` in JSON, null for a money account), as the desk call's
    transaction saw it."""
    held = done.quantity
    if as_json:
        emit(
            {**to_jsonable(done), "quantity": quantity_show.left_dict(held) if held else None}, True
        )
    elif held is None:
        emit(done, False, lambda _: f"{what}: {money}")
    else:
        emit(done, False, lambda _: f"{what}: {quantity_show.left_text(held)}; {money}")


def pay_arrears(
    number: str,
    amount: str,
    org: OrgOption,
    key: KeyOption,
    method: Annotated[str, typer.Option(help="cash|card|transfer|wechat|alipay")] = "cash",
    reference: Annotated[str | None, typer.Option(help="receipt or payment reference")] = None,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Collect arrears a closed account still owes (欠费补缴); an open account's next recharge
    repays them instead."""
    with handled():
        done = _desk_money(
            cashier_arrears.pay_arrears, number, amount, org, key, method, reference, actor
        )
        emit(
            done,
            as_json,
            lambda v: (
                f"{'already paid (same key)' if v.replayed else 'paid'} {Decimal(amount):.2f} "
                f"of arrears: still owed {v.arrears} (transfer {v.transfer_id})"
            ),
        )


def refund(
    number: str,
    amount: str,
    org: OrgOption,
    key: KeyOption,
    method: Annotated[str, typer.Option()] = "cash",
    reference: Annotated[str | None, typer.Option()] = None,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Refund (退费) part of an account's credit. The amount is money, also for a
    quantity-credit account (购量): first the money carried, then the newest unused kWh or m³
    worth it at the prices they were bought at are taken back."""
    with handled():
        done = _desk_money(
            cashier_refund.refund, number, amount, org, key, method, reference, actor
        )
        _emit_desk(
            done,
            as_json,
            "already refunded (same key)" if done.replayed else "refunded",
            f"balance {done.balance} (transfer {done.transfer_id})",
        )


def reverse(
    transfer: int,
    org: OrgOption,
    key: KeyOption,
    memo: Annotated[str | None, typer.Option()] = None,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Reverse (冲正) a recharge, refund or arrears payment entered by mistake, with an opposite
    entry."""
    with handled():
        new = cashier_refund.reverse(
            app().db,
            organisation_id=organisation_id(org),
            transfer_id=transfer,
            actor=who(actor),
            idempotency_key=key,
            memo=memo,
        )
        emit(
            {"reversal_transfer_id": new},
            as_json,
            lambda v: f"transfer {transfer} reversed by transfer {new}",
        )
