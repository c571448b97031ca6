"""What follows the insert of new commands: each one's ``created`` event, the cancelling of older
open commands its desired state replaces, and its ``command.send`` audit entry.

One code path for :func:`service.create_in` (one command) and :func:`batch.create_many_in` (a
whole batch), so the two cannot drift apart: a batch must leave exactly the rows that recording
its commands one after the other would. That is why supersede works in request order, and why a
new command of the batch becomes open (and so can be superseded by a later one of the batch) only
once its turn has come, as if the later ones had not been inserted yet.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from meterdesk.audit import service as audit
from meterdesk.devices.commands import event_log, repository, writes
from meterdesk.devices.commands.model import (
    OPEN_STATUSES,
    CommandSpec,
    CommandStatus,
    supersedes,
)


@dataclass(frozen=True)
class Created:
    """A command just inserted (status pending), with what its log and audit need."""

    organisation_id: int
    meter_id: int
    meter_number: str
    command_id: int
    spec: CommandSpec


def record_created(
    conn: Connection, created: Sequence[Created], *, actor: str, at: datetime
) -> dict[int, tuple[int, ...]]:
    """Log, supersede and audit ``created`` in order; the cancelled ids per new command (only
    those that cancelled something)."""
    event_log.add_events(
        conn,
        [
            (item.command_id, at, "created", {"desired": item.spec.describe(), "by": actor})
            for item in created
        ],
    )
    superseded = _supersede(conn, created, at)
    audit.record_many(
        conn,
        [_send_entry(item, superseded.get(item.command_id, ()), actor, at) for item in created],
    )
    return superseded


def _supersede(
    conn: Connection, created: Sequence[Created], at: datetime
) -> dict[int, tuple[int, ...]]:
    """Cancel, for each new command in order, the meter's older open commands it replaces
    (earlier ones of ``created`` included)."""
    new_ids = {item.command_id for item in created}
    open_by_meter: dict[int, list[tuple[int, CommandSpec]]] = defaultdict(list)
    for older in repository.for_meters(conn, {item.meter_id for item in created}, OPEN_STATUSES):
        if older.id not in new_ids:  # a new one counts only once it is "created", in order
            open_by_meter[older.meter_id].append((older.id, older.spec))
    cancelled: dict[int, tuple[int, ...]] = {}
    for item in created:
        still_open, done = [], []
        for older_id, older_spec in open_by_meter[item.meter_id]:
            if not supersedes(item.spec, older_spec):
                still_open.append((older_id, older_spec))
                continue
            reason = f"superseded by #{item.command_id}"
            # False when it finished meanwhile: then it is neither cancelled here nor open
            if writes.finish(conn, older_id, CommandStatus.CANCELLED, reason, at):
                event_log.add_event(conn, older_id, at, "cancelled", {"reason": reason})
                done.append(older_id)
        still_open.append((item.command_id, item.spec))
        open_by_meter[item.meter_id] = still_open
        if done:
            cancelled[item.command_id] = tuple(done)
    return cancelled


def _send_entry(
    item: Created, superseded: tuple[int, ...], actor: str, at: datetime
) -> audit.Entry:
    return audit.Entry(
        organisation_id=item.organisation_id,
        actor=actor,
        action="command.send",
        subject=f"meter:{item.meter_number}",
        at=at,
        detail={
            "command": item.command_id,
            "kind": item.spec.kind.value,
            "params": item.spec.to_params(),
            "superseded": list(superseded),
        },
    )
