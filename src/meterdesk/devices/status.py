"""What the platform last saw of each meter and gateway, kept in memory by the poller and written
to ``device_status`` / ``gateways`` in one transaction per flush.

Rules (the only place they live):
- A meter is **online** after any successful read (``failures`` back to 0, ``last_seen_at`` =
  the read's receive time, live values, relay/valve, remaining money and purchase count
  replaced by what the meter showed; values the meter did not report keep their last value).
- Each failed read adds one to ``failures`` and keeps ``last_error``; after ``lost_after``
  consecutive failures the meter is **lost**. Before that its state does not change, so one
  lost frame on a noisy line does not flap the console.
- A gateway is **lost** when the connection to it failed since its last successful read, or
  when every meter behind it is lost; **online** when any of its meters is online; else
  **unknown**. ``last_seen_at`` is its meters' latest.
- Only rows that changed since the last flush are written; a failed write puts them back.
- ``meterdesk run`` starts a poller's book from the stored status (:func:`load_known`): a restart
  neither forgets a meter's last values nor takes a meter already lost for a new loss.
- A meter or gateway turning lost (from online or unknown; not one already lost when tracked)
  is kept as a :class:`WentOffline` until written: :func:`write_changes` queues the operators'
  ``meter_offline`` / ``gateway_offline`` message with it (:mod:`meterdesk.devices.offline_events`).
  One that is back before the flush never was lost in the database, so it is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, case, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from meterdesk.devices import offline_events
from meterdesk.devices.offline_events import WentOffline
from meterdesk.devices.ports import Snapshot
from meterdesk.devices.tables import device_status, gateways

UNKNOWN, ONLINE, LOST = "unknown", "online", "lost"
# The columns a successful read sets (a failed one keeps them): kept when the stored read is newer.
READ_COLUMNS = (
    "last_seen_at",
    "relay",
    "valve",
    "protected",
    "remaining_money",
    "purchase_count",
    "live",
)
LIVE_FIELDS = ("voltage_v", "current_a", "power_kw", "power_factor", "frequency_hz", "total")
ERROR_LENGTH = 300


@dataclass
class MeterState:
    meter_id: int
    gateway_id: int | None = None
    state: str = UNKNOWN
    last_seen_at: datetime | None = None
    last_error: str | None = None
    failures: int = 0
    relay: str | None = None
    valve: str | None = None
    protected: bool | None = None
    remaining_money: Decimal | None = None
    purchase_count: int | None = None
    live: dict[str, Any] | None = None
    updated_at: datetime | None = None
    relay_closed_at: datetime | None = None  # when a read last showed the relay closed

    def row(self) -> dict[str, Any]:
        return {
            "meter_id": self.meter_id,
            "state": self.state,
            "last_seen_at": self.last_seen_at,
            "last_error": self.last_error,
            "failures": self.failures,
            "relay": self.relay,
            "valve": self.valve,
            "protected": None if self.protected is None else int(self.protected),
            "remaining_money": self.remaining_money,
            "purchase_count": self.purchase_count,
            "live": None if self.live is None else json.dumps(self.live, sort_keys=True),
            "updated_at": self.updated_at,
            "relay_closed_at": self.relay_closed_at,
        }


@dataclass
class GatewayState:
    gateway_id: int
    state: str = UNKNOWN
    last_seen_at: datetime | None = None
    connection_failed: bool = False


@dataclass
class StatusChanges:
    meters: list[dict[str, Any]] = field(default_factory=list)
    gateways: list[dict[str, Any]] = field(default_factory=list)
    lost_meters: list[WentOffline] = field(default_factory=list)  # turned lost since last flush
    lost_gateways: list[WentOffline] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.meters or self.gateways or self.lost_meters or self.lost_gateways)


def live_values(snapshot: Snapshot) -> dict[str, Any]:
    """The instantaneous values a snapshot carries, as decimal strings (JSON-safe, exact)."""
    live: dict[str, Any] = {
        name: f"{value:f}" for name in LIVE_FIELDS if (value := getattr(snapshot, name)) is not None
    }
    if snapshot.bands:
        live["bands"] = {band: f"{value:f}" for band, value in snapshot.bands.items()}
    if snapshot.battery_low is not None:
        live["battery_low"] = snapshot.battery_low
    return live


class StatusBook:
    """In-memory status of the meters and gateways one poller watches."""

    def __init__(self, *, lost_after: int = 3) -> None:
        self.lost_after = lost_after
        self.meters: dict[int, MeterState] = {}
        self.gateways: dict[int, GatewayState] = {}
        self._gateway_meters: dict[int, set[int]] = {}
        self._dirty_meters: set[int] = set()
        self._dirty_gateways: set[int] = set()
        self._lost_meters: dict[int, WentOffline] = {}  # turned lost, not written yet
        self._lost_gateways: dict[int, WentOffline] = {}

    def track(self, meter_id: int, gateway_id: int | None, known: MeterState | None = None) -> None:
        state = known or MeterState(meter_id)
        state.gateway_id = gateway_id
        self.meters[meter_id] = state
        if gateway_id is not None:
            self.gateways.setdefault(gateway_id, GatewayState(gateway_id))
            self._gateway_meters.setdefault(gateway_id, set()).add(meter_id)

    def load_gateways(self, known: Mapping[int, GatewayState]) -> None:
        for gateway_id, state in known.items():
            if gateway_id in self.gateways:
                self.gateways[gateway_id] = state

    def succeeded(self, snapshot: Snapshot) -> None:
        state = self.meters[snapshot.meter_id]
        at = snapshot.measured_at
        state.state, state.failures, state.last_error = ONLINE, 0, None
        state.last_seen_at = state.updated_at = at
        for name in ("relay", "valve", "protected", "remaining_money", "purchase_count"):
            value = getattr(snapshot, name)
            if value is not None:
                setattr(state, name, value)
        state.live = live_values(snapshot) or state.live
        if snapshot.relay == "closed":
            state.relay_closed_at = at
        self._dirty_meters.add(state.meter_id)
        self._lost_meters.pop(state.meter_id, None)  # back before it was written lost
        gateway = self.gateways.get(state.gateway_id) if state.gateway_id is not None else None
        if gateway is not None:
            gateway.connection_failed = False
            gateway.last_seen_at = max(filter(None, (gateway.last_seen_at, at)))
            self._settle(gateway, at)

    def failed(self, meter_id: int, error: str, at: datetime, *, connection: bool) -> None:
        state = self.meters[meter_id]
        state.failures += 1
        state.last_error = error[:ERROR_LENGTH]
        state.updated_at = at
        if state.failures >= self.lost_after and state.state != LOST:
            state.state = LOST
            self._lost_meters[meter_id] = WentOffline(meter_id, at, state.last_seen_at)
        self._dirty_meters.add(meter_id)
        gateway = self.gateways.get(state.gateway_id) if state.gateway_id is not None else None
        if gateway is not None:
            gateway.connection_failed = gateway.connection_failed or connection
            self._settle(gateway, at)

    def _settle(self, gateway: GatewayState, at: datetime) -> None:
        states = [self.meters[m].state for m in self._gateway_meters.get(gateway.gateway_id, ())]
        if gateway.connection_failed or (states and all(s == LOST for s in states)):
            if gateway.state != LOST:
                went = WentOffline(gateway.gateway_id, at, gateway.last_seen_at)
                self._lost_gateways[gateway.gateway_id] = went
            gateway.state = LOST
        elif ONLINE in states:
            gateway.state = ONLINE
            self._lost_gateways.pop(gateway.gateway_id, None)  # back before it was written lost
        self._dirty_gateways.add(gateway.gateway_id)

    def take_changes(self) -> StatusChanges:
        changes = StatusChanges(
            [self.meters[m].row() for m in sorted(self._dirty_meters)],
            [
                {
                    "gateway": g,
                    "state": self.gateways[g].state,
                    "seen": self.gateways[g].last_seen_at,
                }
                for g in sorted(self._dirty_gateways)
            ],
            [self._lost_meters[m] for m in sorted(self._lost_meters)],
            [self._lost_gateways[g] for g in sorted(self._lost_gateways)],
        )
        self._dirty_meters.clear()
        self._dirty_gateways.clear()
        self._lost_meters.clear()
        self._lost_gateways.clear()
        return changes

    def restore(self, changes: StatusChanges) -> None:
        """After a failed write: write those rows again next time (with their newest values),
        and the losses not written with them, unless the device is back (or lost anew) since."""
        self._dirty_meters.update(row["meter_id"] for row in changes.meters)
        self._dirty_gateways.update(row["gateway"] for row in changes.gateways)
        for went in changes.lost_meters:
            if self.meters[went.id].state == LOST:
                self._lost_meters.setdefault(went.id, went)
        for went in changes.lost_gateways:
            if self.gateways[went.id].state == LOST:
                self._lost_gateways.setdefault(went.id, went)


# --- persistence -------------------------------------------------------------------------------


def later_of(new: Any, stored: Any) -> Any:
    """The later of a new and a stored instant, either possibly NULL (an upsert's SET): whoever
    writes last, the newest read that showed something is kept."""
    return case((stored.is_(None), new), (new > stored, new), else_=stored)


def write_changes(conn: Connection, changes: StatusChanges) -> None:
    """Upsert the changed ``device_status`` rows and update the changed gateways; queue the
    offline messages of the meters and gateways this write records as lost."""
    offline = offline_events.read_meters(conn, changes.lost_meters)  # before the new state
    offline += offline_events.read_gateways(conn, changes.lost_gateways)
    if changes.meters:
        builder = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        statement = builder(device_status)
        excluded: dict[str, Any] = {
            column.name: statement.excluded[column.name]
            for column in device_status.columns
            if column.name != "meter_id"
        }
        # What a read showed is written only if the book's read is not older than the stored
        # one: the command executor's read-back (a trip it just confirmed) lands between two
        # flushes, and the book's older read put back the relay as it was before.
        book_read_is_newer = or_(
            device_status.c.last_seen_at.is_(None),
            statement.excluded.last_seen_at >= device_status.c.last_seen_at,
        )
        for name in READ_COLUMNS:
            excluded[name] = case(
                (book_read_is_newer, statement.excluded[name]), else_=device_status.c[name]
            )
        excluded["relay_closed_at"] = later_of(
            statement.excluded.relay_closed_at, device_status.c.relay_closed_at
        )
        conn.execute(
            statement.on_conflict_do_update(index_elements=["meter_id"], set_=excluded),
            changes.meters,
        )
    if changes.gateways:
        conn.execute(
            update(gateways)
            .where(gateways.c.id == bindparam("gateway"))
            .values(state=bindparam("state"), last_seen_at=bindparam("seen")),
            changes.gateways,
        )
    if offline:
        at = max(went.at for went in (*changes.lost_meters, *changes.lost_gateways))
        offline_events.queue(conn, offline, at)


def _state_from_row(row: RowMapping) -> MeterState:
    return MeterState(
        meter_id=int(row["meter_id"]),
        state=str(row["state"]),
        last_seen_at=row["last_seen_at"],
        last_error=row["last_error"],
        failures=int(row["failures"]),
        relay=row["relay"],
        valve=row["valve"],
        protected=None if row["protected"] is None else bool(row["protected"]),
        remaining_money=row["remaining_money"],
        purchase_count=row["purchase_count"],
        live=None if row["live"] is None else json.loads(row["live"]),
        updated_at=row["updated_at"],
        relay_closed_at=row["relay_closed_at"],
    )


def load_meter_states(conn: Connection, meter_ids: Iterable[int]) -> dict[int, MeterState]:
    wanted = sorted(set(meter_ids))
    found: dict[int, MeterState] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = conn.execute(select(device_status).where(device_status.c.meter_id.in_(chunk)))
        found.update({int(r["meter_id"]): _state_from_row(r) for r in rows.mappings()})
    return found


def load_gateway_states(conn: Connection, gateway_ids: Iterable[int]) -> dict[int, GatewayState]:
    wanted = sorted(set(gateway_ids))
    if not wanted:
        return {}
    rows = conn.execute(
        select(gateways.c.id, gateways.c.state, gateways.c.last_seen_at).where(
            gateways.c.id.in_(wanted)
        )
    )
    return {int(i): GatewayState(int(i), str(s), seen) for i, s, seen in rows}


def load_known(
    conn: Connection, book: StatusBook, placed: Iterable[tuple[int, int | None]]
) -> None:
    """Track the (meter, gateway) pairs of ``placed`` that ``book`` does not track yet, with the
    meters' and their new gateways' stored status: a poller started while a meter is lost goes
    on from there (neither a new loss nor its last values forgotten)."""
    new = [(meter_id, gateway_id) for meter_id, gateway_id in placed if meter_id not in book.meters]
    gateway_ids = {g for _, g in new if g is not None and g not in book.gateways}
    known = load_meter_states(conn, [meter_id for meter_id, _ in new])
    for meter_id, gateway_id in new:
        book.track(meter_id, gateway_id, known.get(meter_id))
    book.load_gateways(load_gateway_states(conn, gateway_ids))


def meter_status(conn: Connection, meter_id: int) -> MeterState | None:
    return load_meter_states(conn, [meter_id]).get(meter_id)
