"""A stand-in for the device executor in browser tests: it confirms the open relay / valve
commands as a meter's read-back would, and records the relay or valve state the meter shows."""

from __future__ import annotations

from sqlalchemy import select

from meterdesk.db.database import Database
from meterdesk.devices.commands import event_log, writes
from meterdesk.devices.commands.model import OPEN_STATUSES, WANTED, CommandKind, CommandStatus
from meterdesk.devices.status import MeterState, StatusChanges, meter_status, write_changes
from meterdesk.devices.tables import commands


def confirm_open_commands(db: Database) -> int:
    """Confirm every open relay / valve command; returns how many."""
    at = db.clock()
    done = 0
    with db.transaction() as conn:
        rows = conn.execute(
            select(commands.c.id, commands.c.meter_id, commands.c.kind).where(
                commands.c.status.in_(OPEN_STATUSES)
            )
        ).all()
        for command_id, meter_id, kind in rows:
            field, value, words = WANTED[CommandKind(kind)]
            event_log.add_event(conn, command_id, at, "confirmed", {"read_back": words})
            writes.finish(conn, command_id, CommandStatus.CONFIRMED, f"read-back shows {words}", at)
            state = meter_status(conn, meter_id) or MeterState(meter_id)
            state.state, state.last_seen_at, state.updated_at = "online", at, at
            setattr(state, field, value)
            write_changes(conn, StatusChanges(meters=[state.row()]))
            done += 1
    return done
