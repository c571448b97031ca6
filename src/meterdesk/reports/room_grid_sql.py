"""The SQL of a room's state, shared by the room grid's counts, page and tiles.

A room's state is one SQL expression (:func:`room_state`) over its first open account (wallet
balance, arrears), the control loop's ``supply`` and ``alarm_level`` columns (kept beside the JSON
state for this) and whether any of its meters has its relay open; "lost" is any meter lost. Every
expression here is correlated to :data:`rooms_with_accounts` (the organisation's rooms joined to
their place, first open account, customer, ledger balances and control row), so the database
works it out for every room in one statement (:mod:`meterdesk.reports.room_grid`).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, case, exists, false, func, literal, or_, select

from meterdesk.billing.tables import account_controls, accounts
from meterdesk.devices.tables import device_status
from meterdesk.ledger.tables import ledger_accounts
from meterdesk.metering.tables import meters
from meterdesk.sites.tables import buildings, customers, floors, rooms, sites

# Room states, most urgent first: a room shows (and is counted under) the first that holds.
STATES = ("off", "arrears", "overdraft", "alarm", "normal", "vacant")

wallet = ledger_accounts.alias("wallet")
owed = ledger_accounts.alias("owed")
_earlier = accounts.alias("earlier")
# A room with two open accounts shows the first (lowest id) of them. (An anti-join rather than
# ``id = (SELECT min(id) …)``: PostgreSQL runs that once per room.)
_first_open_account = and_(
    accounts.c.room_id == rooms.c.id,
    accounts.c.status == "open",
    ~exists(
        select(literal(1)).where(
            _earlier.c.room_id == rooms.c.id,
            _earlier.c.status == "open",
            _earlier.c.id < accounts.c.id,
        )
    ),
)
rooms_with_accounts = (
    rooms.join(floors, floors.c.id == rooms.c.floor_id)
    .join(buildings, buildings.c.id == floors.c.building_id)
    .join(sites, sites.c.id == buildings.c.site_id)
    .outerjoin(accounts, _first_open_account)
    .outerjoin(customers, customers.c.id == accounts.c.customer_id)
    .outerjoin(wallet, wallet.c.id == accounts.c.wallet_id)
    .outerjoin(owed, owed.c.id == accounts.c.arrears_id)
    .outerjoin(account_controls, account_controls.c.account_id == accounts.c.id)
)
ORDER = (
    sites.c.id,
    buildings.c.name,
    buildings.c.id,
    floors.c.level,
    floors.c.name,
    floors.c.id,
    rooms.c.name,
    rooms.c.id,
)


def _any_meter(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    return exists(
        select(literal(1))
        .select_from(meters.join(device_status, device_status.c.meter_id == meters.c.id))
        .where(meters.c.room_id == rooms.c.id, condition)
        .correlate(rooms)
    )


relay_open = _any_meter(device_status.c.relay == "open")
lost = _any_meter(device_status.c.state == "lost")
supply = func.coalesce(account_controls.c.supply, "on")
pending = supply == "pending"
protected = func.coalesce(account_controls.c.protect, false())


def room_state() -> ColumnElement[str]:
    """The room's state: the most urgent that holds (see :data:`STATES`)."""
    return case(
        (accounts.c.id.is_(None), "vacant"),
        (or_(supply == "off", relay_open), "off"),
        (owed.c.balance_fen < 0, "arrears"),  # arrears balances are ≤ 0
        (wallet.c.balance_fen < 0, "overdraft"),
        (func.coalesce(account_controls.c.alarm_level, 0) > 0, "alarm"),
        else_="normal",
    )


def in_state(state: str) -> ColumnElement[bool]:
    if state == "lost":
        return lost
    if state == "pending":
        return pending
    if state == "protected":
        return protected
    return room_state() == state
