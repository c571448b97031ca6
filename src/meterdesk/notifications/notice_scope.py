"""Who a system notice reaches: the open accounts on the rooms of its scope, read in the caller's
transaction (so the notice and its messages are about the same accounts).

A scope id of another organisation is "not found", as a wrong id is: an operator learns nothing
about other organisations' places.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, Table, select

from meterdesk.billing.model import AccountStatus
from meterdesk.billing.tables import accounts
from meterdesk.notifications.notice_model import Scope, ScopeKind
from meterdesk.shared.errors import NotFoundError
from meterdesk.sites.tables import buildings, floors, rooms, sites


@dataclass(frozen=True)
class Reached:
    account_id: int
    customer_id: int


_TABLES: dict[ScopeKind, Table] = {
    ScopeKind.SITE: sites,
    ScopeKind.BUILDING: buildings,
    ScopeKind.FLOOR: floors,
    ScopeKind.ROOMS: rooms,
}
_NAMES = {
    ScopeKind.SITE: "site",
    ScopeKind.BUILDING: "building",
    ScopeKind.FLOOR: "floor",
    ScopeKind.ROOMS: "room",
}


def require_places(conn: Connection, organisation_id: int, scope: Scope) -> None:
    """NotFoundError for the first id of the scope that is not a place of the organisation."""
    if scope.kind is ScopeKind.ORGANISATION:
        return
    table = _TABLES[scope.kind]
    found = set(
        conn.execute(
            select(table.c.id).where(
                table.c.id.in_(scope.ids), table.c.organisation_id == organisation_id
            )
        ).scalars()
    )
    for wanted in scope.ids:
        if wanted not in found:
            raise NotFoundError(f"{_NAMES[scope.kind]} {wanted} not found")


def open_accounts(conn: Connection, organisation_id: int, scope: Scope) -> list[Reached]:
    """The open accounts on the rooms of ``scope``, in account order (a closed account's tenant
    has moved out; an account without a room is in no place's scope but the organisation's)."""
    require_places(conn, organisation_id, scope)
    query = select(accounts.c.id, accounts.c.customer_id).where(
        accounts.c.organisation_id == organisation_id,
        accounts.c.status == AccountStatus.OPEN.value,
    )
    if scope.kind is not ScopeKind.ORGANISATION:
        query = (
            query.join(rooms, rooms.c.id == accounts.c.room_id)
            .join(floors, floors.c.id == rooms.c.floor_id)
            .join(buildings, buildings.c.id == floors.c.building_id)
            .where(_place(scope))
        )
    rows = conn.execute(query.order_by(accounts.c.id)).all()
    return [Reached(int(row.id), int(row.customer_id)) for row in rows]


def _place(scope: Scope) -> ColumnElement[bool]:
    column = {
        ScopeKind.SITE: buildings.c.site_id,
        ScopeKind.BUILDING: buildings.c.id,
        ScopeKind.FLOOR: floors.c.id,
        ScopeKind.ROOMS: rooms.c.id,
    }[scope.kind]
    return column.in_(scope.ids)
