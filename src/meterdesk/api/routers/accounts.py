"""Accounts (电户): open, list, balance, statement, close, change a meter's tariff (改电价);
pre-entered accounts and bulk import.

Putting money on an account needs the money permission as well: opening with initial credit,
opening a preset or importing rows that carry initial credit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from meterdesk.access.model import Permission, PermissionDeniedError
from meterdesk.api.deps import AccountsWriter, Caller, IdempotencyKey, Reader
from meterdesk.api.errors import ERROR_RESPONSES
from meterdesk.api.idempotency import run_once
from meterdesk.api.pagination import Cursor, Limit, Page, after_id
from meterdesk.api.queries import accounts as queries
from meterdesk.api.queries.common import Window
from meterdesk.api.schemas.accounts import (
    AccountIn,
    AccountOut,
    BalanceOut,
    ClosedOut,
    CloseIn,
    MeterTariffOut,
    OpenedAccountOut,
    QuantityOut,
    StatementLineOut,
    StatementOut,
    TariffChangeIn,
    TariffChangeOut,
)
from meterdesk.api.schemas.common import Id, Instant
from meterdesk.billing import accounts, quantity_show, statements, tariff_change
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.money import format_money, parse_quantity
from meterdesk.shared.time import require_utc

router = APIRouter(responses=ERROR_RESPONSES, tags=["accounts"])
STATEMENT_DAYS = 31
# the earliest end whose default window still starts inside what a datetime can hold
MIN_STATEMENT_END = datetime.min.replace(tzinfo=UTC) + timedelta(days=STATEMENT_DAYS)


def replay_doc(model: type[BaseModel]) -> dict[int | str, dict[str, object]]:
    return {200: {"model": model, "description": "Idempotent replay of the first answer"}}


def require_money(caller: Caller, amount: str | None) -> None:
    """Crediting money needs the money permission too (a cashier's or an admin's)."""
    try:
        credit = Decimal(amount or "0")
    except InvalidOperation:
        return  # the service refuses it with a clear message
    if credit != 0 and Permission.MONEY_WRITE not in caller.principal.permissions():
        raise PermissionDeniedError("putting credit on an account needs the cashier or admin role")


def number_of(caller: Caller, account_id: Id) -> str:
    with caller.db.read() as conn:
        return queries.account_number(conn, caller.organisation_id, account_id)


@router.get("/accounts", response_model=Page[AccountOut])
def list_accounts(
    caller: Reader,
    status: Literal["open", "closed"] | None = None,
    customer_id: Id | None = None,
    room_id: Id | None = None,
    q: Annotated[str | None, Query(max_length=64, description="part of the account number")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AccountOut]:
    where = queries.AccountFilter(status, customer_id, room_id, q)
    with caller.db.read() as conn:
        rows, next_cursor = queries.list_accounts(
            conn, caller.organisation_id, where, Window(after_id(cursor), limit)
        )
    return Page[AccountOut](
        items=[AccountOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


def _open(caller: Caller, body: AccountIn, key: str) -> OpenedAccountOut:
    request = accounts.OpenAccount(
        number=body.number,
        customer_id=body.customer_id,
        room_id=body.room_id,
        meters=[
            accounts.MeterOpening(
                m.meter_id,
                m.tariff_id,
                None if m.reading is None else parse_quantity(m.reading, field="reading"),
            )
            for m in body.meters
        ],
        billing_mode=body.billing_mode,
        overdraft_limit=body.overdraft_limit,
        initial_credit=body.initial_credit,
        payment_method=body.payment_method,
        credit_unit=body.credit_unit,
        idempotency_key=key,
    )
    opened = accounts.open_account(
        caller.db, organisation_id=caller.organisation_id, request=request, actor=caller.actor
    )
    return OpenedAccountOut(
        id=opened.account_id,
        number=opened.number,
        meter_ids=opened.meter_ids,
        initial_transfer_id=opened.initial_transfer_id,
    )


@router.post(
    "/accounts",
    response_model=OpenedAccountOut,
    status_code=201,
    responses=replay_doc(OpenedAccountOut),
)
def open_account(
    body: AccountIn, request: Request, caller: AccountsWriter, key: IdempotencyKey
) -> JSONResponse:
    """Open an account (开户) for a customer with one or more meters and their tariffs."""
    require_money(caller, body.initial_credit)
    return run_once(
        caller,
        request,
        key=key,
        payload=body,
        action="account.open",
        subject=f"account:{body.number}",
        perform=lambda: (_open(caller, body, key), False),
    )


@router.get("/accounts/{account_id}", response_model=AccountOut)
def get_account(account_id: Id, caller: Reader) -> AccountOut:
    with caller.db.read() as conn:
        return AccountOut.model_validate(
            queries.one_account(conn, caller.organisation_id, account_id)
        )


@router.get("/accounts/{account_id}/balance", response_model=BalanceOut)
def get_balance(account_id: Id, caller: Reader) -> BalanceOut:
    """Credit left (negative while an allowed overdraft is used), arrears and meters; for a
    quantity-credit account (购量) also ``quantity``: left, bought, used, the money carried, the
    last price and the lots."""
    found = statements.balance(
        caller.db, organisation_id=caller.organisation_id, number=number_of(caller, account_id)
    )
    return BalanceOut(
        account_id=account_id,
        number=found.number,
        status=found.status,
        billing_mode=found.billing_mode,
        balance=format_money(found.balance),
        arrears=format_money(found.arrears),
        overdraft_limit=format_money(found.overdraft_limit),
        meters=found.meters,
        credit_unit=found.credit_unit,
        quantity=(
            None
            if found.quantity is None
            else QuantityOut.model_validate(quantity_show.as_dict(found.quantity))
        ),
    )


@router.get("/accounts/{account_id}/statement", response_model=StatementOut)
def get_statement(
    account_id: Id,
    caller: Reader,
    start: Instant | None = None,
    end: Instant | None = None,
) -> StatementOut:
    """Every entry in ``[start, end)`` with the running balance (default: the last 31 days)."""
    until = require_utc(end, field="end") if end is not None else caller.db.clock()
    if start is not None:
        since = require_utc(start, field="start")
    elif until < MIN_STATEMENT_END:
        raise ValidationError(f"end: out of range ({until.isoformat()})")
    else:
        since = until - timedelta(days=STATEMENT_DAYS)
    found = statements.statement(
        caller.db,
        organisation_id=caller.organisation_id,
        number=number_of(caller, account_id),
        start=since,
        end=until,
    )
    return StatementOut(
        account_id=account_id,
        number=found.number,
        start=found.start,
        end=found.end,
        opening_balance=format_money(found.opening_balance),
        opening_arrears=format_money(found.opening_arrears),
        closing_balance=format_money(found.closing_balance),
        closing_arrears=format_money(found.closing_arrears),
        totals={reason: format_money(total) for reason, total in found.totals.items()},
        lines=[_line(line) for line in found.lines],
    )


def _line(line: statements.StatementLine) -> StatementLineOut:
    money = ("balance_change", "arrears_change", "balance_after", "arrears_after")
    values = {name: getattr(line, name) for name in StatementLineOut.model_fields}
    return StatementLineOut.model_validate(
        {name: format_money(v) if name in money else v for name, v in values.items()}
    )


def _final_readings(body: CloseIn) -> list[accounts.FinalReading]:
    return [
        accounts.FinalReading(
            r.meter_id,
            parse_quantity(r.total, field="total"),
            None
            if r.bands is None
            else {b: parse_quantity(v, field=b) for b, v in r.bands.items()},
        )
        for r in body.final_readings
    ]


@router.post(
    "/accounts/{account_id}/close",
    response_model=ClosedOut,
    status_code=201,
    responses=replay_doc(ClosedOut),
)
def close_account(
    account_id: Id, body: CloseIn, request: Request, caller: AccountsWriter, key: IdempotencyKey
) -> JSONResponse:
    """Close (销户): final readings, final charges, refund of the credit left; arrears stay owed."""
    number = number_of(caller, account_id)

    def perform() -> tuple[BaseModel, bool]:
        closed = accounts.close_account(
            caller.db,
            organisation_id=caller.organisation_id,
            number=number,
            final_readings=_final_readings(body),
            refund_method=body.refund_method,
            actor=caller.actor,
            idempotency_key=key,
        )
        answer = ClosedOut(
            account_id=account_id,
            number=closed.number,
            refunded=format_money(closed.refunded),
            arrears=format_money(closed.arrears),
            refund_transfer_id=closed.refund_transfer_id,
        )
        return answer, False

    return run_once(
        caller,
        request,
        key=key,
        payload=body,
        action="account.close",
        subject=f"account:{number}",
        perform=perform,
    )


METER_TARIFF = "/accounts/{account_id}/meters/{meter_id}/tariff"


@router.get(METER_TARIFF, response_model=MeterTariffOut)
def get_meter_tariff(account_id: Id, meter_id: Id, caller: Reader) -> MeterTariffOut:
    """The tariff a meter of an open account is billed by, and from when a change made now
    would apply (the meter's latest accepted reading)."""
    with caller.db.read() as conn:
        point = tariff_change.switch_point(
            conn, organisation_id=caller.organisation_id, account_id=account_id, meter_id=meter_id
        )
    return MeterTariffOut(
        account_id=account_id,
        account_number=point.account_number,
        meter_id=meter_id,
        meter_number=point.meter_number,
        tariff_id=point.tariff_id,
        tariff=point.tariff,
        since=point.tariff_since,
        change_from=point.effective_at,
    )


@router.put(METER_TARIFF, response_model=TariffChangeOut)
def change_meter_tariff(
    account_id: Id,
    meter_id: Id,
    body: TariffChangeIn,
    request: Request,
    caller: AccountsWriter,
    key: IdempotencyKey,
) -> JSONResponse:
    """Change the tariff of a meter of an open account (改电价). The new tariff prices what the
    meter measures after its latest accepted reading; everything up to that reading (also a
    reading that arrives late) stays priced by the old one. The same tariff changes nothing
    (``changed: false``)."""
    number = number_of(caller, account_id)  # 404 for another organisation's account

    def perform() -> tuple[BaseModel, bool]:
        done = tariff_change.change_tariff(
            caller.db,
            organisation_id=caller.organisation_id,
            account_id=account_id,
            meter_id=meter_id,
            tariff_id=body.tariff_id,
            actor=caller.actor,
            idempotency_key=key,
        )
        fields = {name: getattr(done, name) for name in TariffChangeOut.model_fields}
        return TariffChangeOut.model_validate(fields), done.replayed

    return run_once(
        caller,
        request,
        key=key,
        payload=body,
        action="account.tariff_change",
        subject=f"account:{number}",
        perform=perform,
        status_code=200,
    )
