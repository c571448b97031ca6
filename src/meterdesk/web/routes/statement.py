"""Account statement (对账单) in the console: the balance over a period, day by day or every entry
with its running balance, and every entry as CSV. The period is given in the site's local days
(``from`` and ``to`` inclusive, 30 days to today by default, at most a year)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from meterdesk.api.deps import Caller, Cashier, Reader
from meterdesk.api.queries import accounts as account_queries
from meterdesk.api.routers import money
from meterdesk.api.schemas.accounts import MoneyIn
from meterdesk.api.schemas.common import Id
from meterdesk.billing import quantity, statements
from meterdesk.billing.tables import accounts
from meterdesk.reports.statement_days import by_day
from meterdesk.shared.money import format_money
from meterdesk.shared.text import spreadsheet_cell
from meterdesk.shared.time import local_date, local_midnight
from meterdesk.sites.tables import buildings, floors, rooms, sites
from meterdesk.web.forms import blank_to_none, build
from meterdesk.web.routes.actions import Key
from meterdesk.web.routes.common import new_key, org_zone, page

router = APIRouter(include_in_schema=False)
DateText = Annotated[str | None, Query(max_length=10)]
DEFAULT_DAYS = 30
MAX_DAYS = 366
ENTRIES_PER_PAGE = 200


@dataclass(frozen=True)
class Period:
    first: date
    last: date
    error: str | None = None  # why the dates asked for were not used: format | order | length

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """[start of the first day, start of the day after the last), as UTC instants."""
        return local_midnight(self.first, tz), local_midnight(self.last + timedelta(days=1), tz)


def period_of(first: str | None, last: str | None, today: date) -> Period:
    default = Period(today - timedelta(days=DEFAULT_DAYS - 1), today)
    try:
        chosen = Period(
            date.fromisoformat(first) if first else default.first,
            date.fromisoformat(last) if last else default.last,
        )
    except ValueError:
        return Period(default.first, default.last, "format")
    if chosen.first > chosen.last:
        return Period(default.first, default.last, "order")
    if (chosen.last - chosen.first).days >= MAX_DAYS:
        return Period(default.first, default.last, "length")
    return chosen


def _zone(caller: Caller, account_id: int) -> ZoneInfo:
    """The zone of the account's site (its room's), else the organisation's."""
    with caller.db.read() as conn:
        name = conn.execute(
            select(sites.c.timezone)
            .select_from(accounts)
            .join(rooms, rooms.c.id == accounts.c.room_id)
            .join(floors, floors.c.id == rooms.c.floor_id)
            .join(buildings, buildings.c.id == floors.c.building_id)
            .join(sites, sites.c.id == buildings.c.site_id)
            .where(accounts.c.id == account_id)
        ).scalar_one_or_none()
    return ZoneInfo(str(name)) if name else org_zone(caller)


def _statement(
    caller: Caller, account_id: int, first: str | None, last: str | None
) -> tuple[dict[str, Any], statements.Statement, ZoneInfo, Period]:
    with caller.db.read() as conn:
        account = account_queries.one_account(conn, caller.organisation_id, account_id)
    tz = _zone(caller, account_id)
    period = period_of(first, last, local_date(caller.db.clock(), tz))
    start, end = period.bounds(tz)
    found = statements.statement(
        caller.db,
        organisation_id=caller.organisation_id,
        number=str(account["number"]),
        start=start,
        end=end,
    )
    return account, found, tz, period


@router.get("/accounts/{account_id}/statement", response_class=HTMLResponse)
def statement_page(
    account_id: Id,
    request: Request,
    caller: Reader,
    first: Annotated[DateText, Query(alias="from")] = None,
    last: Annotated[DateText, Query(alias="to")] = None,
    detail: Annotated[str | None, Query(max_length=8)] = None,
    page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    account, found, tz, period = _statement(caller, account_id, first, last)
    entries = detail == "entries"
    offset = (page_number - 1) * ENTRIES_PER_PAGE
    context = {
        "account": account,
        "key": new_key(),  # the arrears payment form's (a closed account owing money)
        "owed": Decimal(str(account["arrears"])),
        "statement": found,
        "period": period,
        "tz": tz,
        "entries": entries,
        "days": [] if entries else list(reversed(by_day(found, tz))),
        "lines": found.lines[offset : offset + ENTRIES_PER_PAGE] if entries else [],
        "page": page_number,
        "pages": max(1, -(-len(found.lines) // ENTRIES_PER_PAGE)),
        "nav": "rooms",
        "quantity": _quantity(caller, account),
    }
    return page(request, caller, "statement.html", context)


def _quantity(caller: Caller, account: dict[str, Any]) -> quantity.QuantityView | None:
    """An open quantity account's (购量) holding today: the statement's balances stay money."""
    if account["status"] != "open":
        return None
    with caller.db.read() as conn:
        if not quantity.is_quantity(conn, int(account["id"])):
            return None
        return quantity.view(conn, int(account["id"]))


@router.post("/accounts/{account_id}/arrears-payment", response_class=HTMLResponse)
def pay_arrears(
    account_id: Id,
    request: Request,
    caller: Cashier,
    amount: Annotated[str, Form(max_length=20)],
    idempotency_key: Key,
    method: Annotated[str, Form(max_length=20)] = "cash",
    reference: Annotated[str | None, Form(max_length=200)] = None,
) -> Response:
    """Arrears of a closed account paid at the desk (欠费补缴), through the API's handler; the
    statement is shown again with the payment in it."""
    body = build(MoneyIn, amount=amount.strip(), method=method, reference=blank_to_none(reference))
    money.pay_arrears(account_id, body, request, caller, idempotency_key)
    back = f"/accounts/{account_id}/statement?detail=entries"
    return Response(status_code=204, headers={"HX-Redirect": back})


@router.get("/accounts/{account_id}/statement.csv")
def statement_csv(
    account_id: Id,
    caller: Reader,
    first: Annotated[DateText, Query(alias="from")] = None,
    last: Annotated[DateText, Query(alias="to")] = None,
) -> Response:
    account, found, tz, period = _statement(caller, account_id, first, last)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["time", "transfer", "reason", "memo", "method", "balance_change", "arrears_change",
         "balance_after", "arrears_after"]
    )  # fmt: skip
    writer.writerow(["opening", "", "", "", "", "", "", format_money(found.opening_balance),
                     format_money(found.opening_arrears)])  # fmt: skip
    for line in found.lines:
        writer.writerow(
            [line.at.astimezone(tz).isoformat(), line.transfer_id, line.reason,
             spreadsheet_cell(line.memo), line.method or "", format_money(line.balance_change),
             format_money(line.arrears_change), format_money(line.balance_after),
             format_money(line.arrears_after)]
        )  # fmt: skip
    name = f"statement-{account['number']}-{period.first}-{period.last}.csv"
    return Response(
        "\ufeff" + out.getvalue(),  # a BOM, so Excel reads the Chinese memos as UTF-8
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": attachment(name)},
    )


def attachment(name: str) -> str:
    """A Content-Disposition for ``name`` as it is (RFC 6266 ``filename*``, UTF-8) with an ASCII
    stand-in for old clients: a header is Latin-1, so an account numbered 甲-101 made the CSV a
    500 (UnicodeEncodeError), and a ``"`` in the number broke the quoted name."""
    plain = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"
