"""What the platform last saw of each meter (``device_status``), written by the command
executor after every read and by the meter-billing mirror.

A read refreshes only what the meter reported: a field missing from a snapshot keeps its stored
value. A failed read counts a failure and keeps the online/lost state, which is the poller's
call.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from meterdesk.devices.commands.model import clip
from meterdesk.devices.ports import Snapshot
from meterdesk.devices.status import later_of
from meterdesk.devices.tables import device_status

_MIRRORED = ("relay", "valve", "protected", "remaining_money", "purchase_count")


def _upsert(
    conn: Connection,
    values: dict[str, Any],
    keep: Iterable[str],
    insert_only: Iterable[str] = (),
    latest: Iterable[str] = (),
) -> None:
    """Insert or update one device_status row; columns in ``keep`` keep their stored value when
    the new value is NULL (a read that did not include them); ``insert_only`` columns are set
    only when the row is new; ``latest`` columns (instants) keep the later of the two."""
    builder = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = builder(device_status).values(**values)
    fixed = {"meter_id", "failures", *insert_only}
    changes: dict[str, Any] = {
        name: statement.excluded[name] for name in values if name not in fixed
    }
    for name in keep:
        changes[name] = func.coalesce(statement.excluded[name], device_status.c[name])
    for name in latest:
        changes[name] = later_of(statement.excluded[name], device_status.c[name])
    changes["failures"] = (
        device_status.c.failures + 1 if values["failures"] else statement.excluded.failures
    )
    conn.execute(statement.on_conflict_do_update(index_elements=["meter_id"], set_=changes))


def save_snapshot(conn: Connection, snapshot: Snapshot, at: datetime) -> None:
    """What a successful read showed: online, and every field the meter reported."""
    values: dict[str, Any] = {
        "meter_id": snapshot.meter_id,
        "state": "online",
        "last_seen_at": snapshot.measured_at,
        "last_error": None,
        "failures": 0,
        "relay": snapshot.relay,
        "valve": snapshot.valve,
        "protected": None if snapshot.protected is None else int(snapshot.protected),
        "remaining_money": snapshot.remaining_money,
        "purchase_count": snapshot.purchase_count,
        "updated_at": at,
        "relay_closed_at": snapshot.measured_at if snapshot.relay == "closed" else None,
    }
    _upsert(conn, values, _MIRRORED, latest=("relay_closed_at",))


def save_failure(conn: Connection, meter_id: int, error: str, at: datetime) -> None:
    """A command could not reach the meter. Online/lost is the poller's call: only count it."""
    values: dict[str, Any] = {
        "meter_id": meter_id,
        "state": "unknown",
        "last_error": clip(error),
        "failures": 1,
        "updated_at": at,
    }
    _upsert(conn, values, (), insert_only=("state",))


def status_of(conn: Connection, meter_id: int) -> dict[str, Any] | None:
    row = (
        conn.execute(select(device_status).where(device_status.c.meter_id == meter_id))
        .mappings()
        .one_or_none()
    )
    return None if row is None else dict(row)
