"""The command event log (``command_events``): every step of a command (created, sent, retry,
a late result, its end, …) as a row with a JSON detail, in the order written. Events are only
added, never changed; the status changes they go with are in
:mod:`~meterdesk.devices.commands.writes`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from meterdesk.devices.tables import command_events

EventRow = tuple[int, datetime, str, Mapping[str, object]]  # command id, at, event, detail


_INSERT = insert(command_events)  # built once: a batch of control decisions writes events


def add_event(
    conn: Connection, command_id: int, at: datetime, event: str, detail: Mapping[str, object]
) -> None:
    add_events(conn, [(command_id, at, event, detail)])


def add_events(conn: Connection, rows: Sequence[EventRow]) -> None:
    """Several events in one statement (a batch of new commands); details encoded as by
    :func:`add_event`, so either path writes the same text."""
    if not rows:
        return
    conn.execute(
        _INSERT,
        [
            {
                "command_id": command_id,
                "at": at,
                "event": event,
                "detail": json.dumps(dict(detail), ensure_ascii=False, sort_keys=True, default=str),
            }
            for command_id, at, event, detail in rows
        ],
    )


def events(conn: Connection, command_id: int) -> list[tuple[datetime, str, dict[str, Any]]]:
    rows = conn.execute(
        select(command_events.c.at, command_events.c.event, command_events.c.detail)
        .where(command_events.c.command_id == command_id)
        .order_by(command_events.c.id)
    )
    return [(at, str(event), json.loads(detail)) for at, event, detail in rows]


def last_event_detail(conn: Connection, command_id: int, event: str) -> dict[str, Any] | None:
    detail = conn.execute(
        select(command_events.c.detail)
        .where(command_events.c.command_id == command_id, command_events.c.event == event)
        .order_by(command_events.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return None if detail is None else dict(json.loads(detail))
