"""``meterdesk org | site | building | floor | room | customer | tariff | user list`` and
``meterdesk audit list`` — finding what is there from the shell. Before these, a newcomer who
had created rooms and customers could not look them up again (``account open`` takes a customer
id, ``meter create`` a room path) without the console or the API.

Each list reads what the API's list reads (``api/queries``), one organisation at a time, in id
order (the audit log newest first), ``--limit`` long; when more follow, the last line says how
to go on (``--after ID``). ``--json`` prints the rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.cells import cell_len
from sqlalchemy import select

from meterdesk.access import service as access
from meterdesk.api.pagination import after_id
from meterdesk.api.queries import accounts as account_queries
from meterdesk.api.queries import audit as audit_queries
from meterdesk.api.queries import places as place_queries
from meterdesk.api.queries import tariffs as tariff_queries
from meterdesk.api.queries.common import Window
from meterdesk.cli.common import (
    JsonOption,
    OrgOption,
    app,
    emit,
    handled,
    organisation_id,
    pad,
    parse_when,
)
from meterdesk.cli.places import building_id, site_id
from meterdesk.reports import room_grid
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.money import format_money, from_fen
from meterdesk.shared.time import local_date, zone
from meterdesk.sites.tables import organisations

audit_cli = typer.Typer(
    help="The audit log (操作日志): who did what to money, supply and settings, and when.",
    no_args_is_help=True,
)

Limit = Annotated[int, typer.Option(help="at most this many (1–1000)")]
After = Annotated[int | None, typer.Option(help="go on after this id (the last line says which)")]


def _window(after: int | None, limit: int) -> Window:
    if not 1 <= limit <= 1000:
        raise ValidationError("--limit: between 1 and 1000")
    return Window(after=after, limit=limit)


def _listed(
    rows: Sequence[Any],
    cursor: str | None,
    as_json: bool,
    line: Callable[[Any], str],
    header: str,
    empty: str = "nothing found",
) -> None:
    """The rows, then how to go on when more follow."""
    found = [dict(row) for row in rows]
    more = after_id(cursor)

    def text(value: list[dict[str, Any]]) -> str:
        if not value:
            return empty
        lines = [header, *(line(row) for row in value)]
        if more is not None:
            lines.append(f"… more: add --after {more}")
        return "\n".join(lines)

    emit(found, as_json, text)


def org_list(as_json: JsonOption = False) -> None:
    """Every organisation in this database."""
    with handled(), app().db.read() as conn:
        rows = conn.execute(select(organisations).order_by(organisations.c.id)).mappings().all()
        _listed(
            rows,
            None,
            as_json,
            lambda r: f"{r['id']:<5} {pad(r['name'], 40)} {r['timezone']}",
            f"{'id':<5} {'name':<40} time zone",
        )


def site_list(
    org: OrgOption, after: After = None, limit: Limit = 200, as_json: JsonOption = False
) -> None:
    """The organisation's sites (projects / parks)."""
    with handled():
        o, window = organisation_id(org), _window(after, limit)
        with app().db.read() as conn:
            rows, cursor = place_queries.list_sites(conn, o, window)
        _listed(
            rows,
            cursor,
            as_json,
            lambda r: f"{r['id']:<5} {pad(r['name'], 40)} {r['timezone']}",
            f"{'id':<5} {'name':<40} time zone",
        )


def building_list(
    org: OrgOption,
    site: Annotated[str, typer.Option(help="site name")],
    after: After = None,
    limit: Limit = 200,
    as_json: JsonOption = False,
) -> None:
    """The buildings of a site."""
    with handled():
        o, window = organisation_id(org), _window(after, limit)
        found = site_id(o, site)
        with app().db.read() as conn:
            rows, cursor = place_queries.list_buildings(conn, o, found, window)
        _listed(rows, cursor, as_json, lambda r: f"{r['id']:<5} {r['name']}", f"{'id':<5} name")


def floor_list(
    org: OrgOption,
    site: Annotated[str, typer.Option(help="site name")],
    building: Annotated[str, typer.Option(help="building name")],
    after: After = None,
    limit: Limit = 200,
    as_json: JsonOption = False,
) -> None:
    """The floors of a building."""
    with handled():
        o, window = organisation_id(org), _window(after, limit)
        found = building_id(o, site, building)
        with app().db.read() as conn:
            rows, cursor = place_queries.list_floors(conn, o, found, window)
        _listed(
            rows,
            cursor,
            as_json,
            lambda r: f"{r['id']:<5} {r['level']:<6} {r['name']}",
            f"{'id':<5} {'level':<6} name",
        )


def room_list(
    org: OrgOption,
    site: Annotated[str | None, typer.Option(help="only this site")] = None,
    q: Annotated[str | None, typer.Option(help="room name contains")] = None,
    after: After = None,
    limit: Limit = 200,
    as_json: JsonOption = False,
) -> None:
    """Rooms with the path other commands take (SITE/BUILDING/FLOOR/ROOM), kind and area."""
    with handled():
        o, window = organisation_id(org), _window(after, limit)
        where = place_queries.RoomFilter(site_id=site_id(o, site) if site else None, q=q)
        with app().db.read() as conn:
            rows, cursor = place_queries.list_rooms(conn, o, where, window)
        _listed(
            rows,
            cursor,
            as_json,
            lambda r: f"{r['id']:<5} {pad(_path(r), 48)} {r['kind']:<12} {r['area_m2'] or ''}",
            f"{'id':<5} {'room (SITE/BUILDING/FLOOR/ROOM)':<48} {'kind':<12} m²",
        )


def _path(row: dict[str, Any]) -> str:
    return f"{row['site']}/{row['building']}/{row['floor']}/{row['name']}"


def account_list(
    org: OrgOption,
    status: Annotated[str | None, typer.Option(help="open | closed")] = None,
    q: Annotated[str | None, typer.Option(help="account number contains")] = None,
    after: After = None,
    limit: Limit = 200,
    as_json: JsonOption = False,
) -> None:
    """Accounts with their customer, billing mode, credit unit (money, or quantity: 购量),
    balance in money and arrears."""
    with handled():
        o, window = organisation_id(org), _window(after, limit)
        if status not in (None, "open", "closed"):
            raise ValidationError("--status: open or closed")
        where = account_queries.AccountFilter(status=status, q=q)
        with app().db.read() as conn:
            rows, cursor = account_queries.list_accounts(conn, o, where, window)
        _listed(
            rows,
            cursor,
            as_json,
            lambda r: (
                f"{r['id']:<5} {pad(r['number'], 12)} {r['status']:<7} "
                f"{r['billing_mode']:<9} {r['credit_unit']:<8} {pad((r['customer'] or '-')[:14], 28)} "
                f"{r['balance']:>12} {r['arrears']:>10}"
            ),
            f"{'id':<5} {'account':<12} {'status':<7} {'billing':<9} {'credit':<8} "
            f"{pad('customer', 28)} "
            f"{'balance':>12} {'arrears':>10}",
            empty="no accounts",
        )


def customer_list(
    org: OrgOption,
    q: Annotated[str | None, typer.Option(help="name or phone contains")] = None,
    after: After = None,
    limit: Limit = 200,
    as_json: JsonOption = False,
) -> None:
    """Customers with the id ``account open --customer`` takes, and whether they get deduction
    summaries (``customer update --no-summaries``)."""
    with handled():
        o, window = organisation_id(org), _window(after, limit)
        with app().db.read() as conn:
            rows, cursor = place_queries.list_customers(conn, o, q, window)
        _listed(
            rows,
            cursor,
            as_json,
            lambda r: (
                f"{r['id']:<5} {pad(r['name'], 30)} {r['phone'] or '-':<18} "
                f"{'no' if r['summaries_opt_out'] else 'yes':<10} {r['email'] or '-'}"
            ),
            f"{'id':<5} {'name':<30} {'phone':<18} {'summaries':<10} e-mail",
        )


def tariff_list(
    org: OrgOption, after: After = None, limit: Limit = 200, as_json: JsonOption = False
) -> None:
    """Tariffs with the version in force today (in the organisation's time zone)."""
    with handled():
        o, window = organisation_id(org), _window(after, limit)
        with app().db.read() as conn:
            tz = conn.execute(
                select(organisations.c.timezone).where(organisations.c.id == o)
            ).scalar_one()
            today = local_date(app().db.clock(), zone(str(tz)))
            rows, cursor = tariff_queries.list_tariffs(conn, o, None, today, window)
        _listed(
            rows,
            cursor,
            as_json,
            lambda r: (
                f"{r['id']:<5} {pad(r['name'], 32)} {r['utility']:<12} "
                f"{r['current_from'] or 'not yet in force'}"
            ),
            f"{'id':<5} {'name':<32} {'utility':<12} version in force from",
        )


def user_list(org: OrgOption, as_json: JsonOption = False) -> None:
    """The organisation's users with their role."""
    with handled():
        rows = access.list_members(app().db, organisation_id=organisation_id(org))
        _listed(
            rows,
            None,
            as_json,
            lambda r: (
                f"{pad(r['username'], 24)} {r['role']:<10} {'active' if r['is_active'] else 'disabled'}"
            ),
            f"{'user':<24} {'role':<10} state",
        )


def room_status(
    org: OrgOption,
    state: Annotated[
        str | None,
        typer.Option(
            help="off | arrears | overdraft | alarm | normal | vacant | lost | pending | protected"
        ),
    ] = None,
    site: Annotated[str | None, typer.Option(help="only this site")] = None,
    q: Annotated[str | None, typer.Option(help="room, customer or account contains")] = None,
    offset: Annotated[int, typer.Option(help="skip this many rooms")] = 0,
    limit: Limit = 200,
    as_json: JsonOption = False,
) -> None:
    """Room monitoring (房间监控) from the shell: every room's state, balance and meters, with
    the count per state — the console's room grid."""
    with handled():
        o = organisation_id(org)
        _window(None, limit)
        if state is not None and state not in room_grid.FILTERS:
            raise ValidationError(f"--state: one of {', '.join(room_grid.FILTERS)}")
        if offset < 0:
            raise ValidationError("--offset: 0 or more")
        where = room_grid.GridFilter(site_id=site_id(o, site) if site else None, state=state, q=q)
        with app().db.read() as conn:
            found = room_grid.grid(conn, o, where, lambda matched: (offset, limit))
        shown = {
            "counts": found.counts,
            "matched": found.matched,
            "offset": found.offset,
            "rooms": [dataclasses.asdict(tile) for tile in found.tiles],
        }
        emit(shown, as_json, _status_text)


def _tail(text: str, width: int) -> str:
    """The end of ``text`` (the room name) in at most ``width`` terminal columns."""
    while cell_len(text) > width:
        text = "…" + text[2:]
    return text


def _status_text(shown: dict[str, Any]) -> str:
    counts = ", ".join(f"{state} {n}" for state, n in shown["counts"].items() if n)
    lines = [
        f"{pad('room', 36)} {'account':<10} {pad('customer', 24)} {'balance':>10} "
        f"{'state':<9} {'meters':<7} connection"
    ]
    for tile in shown["rooms"]:
        balance = "" if tile["balance_fen"] is None else format_money(from_fen(tile["balance_fen"]))
        place = f"{tile['building']}/{tile['floor']}/{tile['room']}"
        customer = (tile["customer"] or "-")[:12]
        lines.append(
            f"{pad(_tail(place, 36), 36)} {tile['account_number'] or '-':<10} {pad(customer, 24)} "
            f"{balance:>10} {tile['state']:<9} {tile['meters']:<7} {tile['connection']}"
        )
    end = shown["offset"] + len(shown["rooms"])
    more = f"; more: add --offset {end}" if end < shown["matched"] else ""
    lines.append(f"{len(shown['rooms'])} of {shown['matched']} rooms{more} · {counts}")
    return "\n".join(lines)


@audit_cli.command("list")
def audit_list(
    org: OrgOption,
    since: Annotated[str | None, typer.Option(help="at or after (ISO, with offset)")] = None,
    until: Annotated[str | None, typer.Option(help="before (ISO, with offset)")] = None,
    actor: Annotated[str | None, typer.Option(help="who")] = None,
    action: Annotated[str | None, typer.Option(help="e.g. money.recharge, policy.set")] = None,
    subject: Annotated[str | None, typer.Option(help="e.g. account:A-1")] = None,
    after: After = None,
    limit: Limit = 50,
    as_json: JsonOption = False,
) -> None:
    """Entries newest first: when, who, what, to what."""
    with handled():
        o, window = organisation_id(org), _window(after, limit)
        where = audit_queries.AuditFilter(
            since=parse_when(since),
            until=parse_when(until),
            action=action,
            actor=actor,
            subject=subject,
        )
        with app().db.read() as conn:
            rows, cursor = audit_queries.list_entries(conn, o, where, window)
        _listed(
            rows,
            cursor,
            as_json,
            lambda r: f"{_utc(r['at'])} {pad(r['actor'], 20)} {r['action']:<28} {r['subject']}",
            f"{'at (UTC)':<20} {'who':<20} {'what':<28} subject",
        )


def _utc(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S}Z"
