"""The operators' ``meter_offline`` and ``gateway_offline`` messages, queued in the transaction
that records the meter or gateway as lost (the poller's status flush, the MQTT group commit, the
MQTT gateway watchdog).

Once per offline episode: a meter or gateway is announced only when its stored state was not
``lost`` before this transaction wrote it, and the event key names the episode by when the
device was last seen (or, never seen, when it was marked lost):
``meter:<id>:offline:<instant>`` / ``gateway:<id>:offline:<instant>``. So a poller restarted
while a meter is still lost, a status write retried after a failure, or the same ``OFFLINE``
entry re-sent by a gateway queues nothing new, while lost → online → lost again is a second
episode (it was seen in between) and a second message. One exception: a meter the gateway
watchdog marked lost with its silent gateway (``last_error`` :data:`GATEWAY_SILENT`) was not
announced, so an ``OFFLINE`` entry for it once the gateway is back is.

Callers read the facts with :func:`read_meters` / :func:`read_gateways` **before** writing the
new state (one query each, also giving the meter's number, room and site or the gateway's serial
and site), then :func:`queue` after it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, select

from meterdesk.devices.tables import device_status, gateways
from meterdesk.metering.tables import meters
from meterdesk.notifications import queueing
from meterdesk.notifications.queueing import NewNotification
from meterdesk.shared.chunks import chunks
from meterdesk.sites.tables import rooms

LOST = "lost"
# ``last_error`` of a meter the gateway watchdog marked lost with its silent gateway, not
# announced then (devices/gateway_watchdog.py): its own loss is still news when the gateway
# comes back and reports it OFFLINE.
GATEWAY_SILENT = "its gateway stopped reporting"
_CHUNK = 500  # ids per IN list


@dataclass(frozen=True)
class WentOffline:
    """A meter or gateway this writer is about to record as lost."""

    id: int
    at: datetime  # when it was marked lost
    since: datetime | None = None  # when it was last seen, if the writer knows
    # the time of the evidence (an MQTT OFFLINE entry's): a meter read after it is not lost
    reported_at: datetime | None = None


def read_meters(conn: Connection, lost: Iterable[WentOffline]) -> list[NewNotification]:
    """The ``meter_offline`` messages for ``lost``, read before the new state is written: none
    for a meter stored as lost already (not a new episode) or no longer existing."""
    wanted = {event.id: event for event in lost}
    found: list[NewNotification] = []
    for chunk in chunks(sorted(wanted), _CHUNK):
        query = (
            select(
                meters.c.id,
                meters.c.organisation_id,
                meters.c.site_id,
                meters.c.number,
                rooms.c.name.label("room"),
                device_status.c.state,
                device_status.c.last_seen_at,
                device_status.c.last_error,
            )
            .select_from(
                meters.outerjoin(rooms, rooms.c.id == meters.c.room_id).outerjoin(
                    device_status, device_status.c.meter_id == meters.c.id
                )
            )
            .where(meters.c.id.in_(chunk))
            .order_by(meters.c.id)
        )
        for row in conn.execute(query):
            if row.state == LOST and row.last_error != GATEWAY_SILENT:
                continue
            event = wanted[int(row.id)]
            if _older(event.reported_at, row.last_seen_at):
                continue  # a late report: the meter was read since (not written lost either)
            since = event.since or row.last_seen_at or event.at
            params: dict[str, object] = {"meter": str(row.number), "since": since}
            if row.room is not None:
                params["room"] = str(row.room)
            found.append(
                NewNotification(
                    organisation_id=int(row.organisation_id),
                    event="meter_offline",
                    key=f"meter:{row.id}:offline:{_instant(since)}",
                    params=params,
                    site_id=int(row.site_id),
                )
            )
    return found


def read_gateways(conn: Connection, lost: Iterable[WentOffline]) -> list[NewNotification]:
    """The ``gateway_offline`` messages for ``lost``, as :func:`read_meters`."""
    wanted = {event.id: event for event in lost}
    found: list[NewNotification] = []
    for chunk in chunks(sorted(wanted), _CHUNK):
        query = (
            select(
                gateways.c.id,
                gateways.c.organisation_id,
                gateways.c.site_id,
                gateways.c.serial,
                gateways.c.state,
                gateways.c.last_seen_at,
            )
            .where(gateways.c.id.in_(chunk))
            .order_by(gateways.c.id)
        )
        for row in conn.execute(query):
            if row.state == LOST:
                continue
            event = wanted[int(row.id)]
            since = event.since or row.last_seen_at or event.at
            found.append(
                NewNotification(
                    organisation_id=int(row.organisation_id),
                    event="gateway_offline",
                    key=f"gateway:{row.id}:offline:{_instant(since)}",
                    params={"gateway": str(row.serial), "since": since},
                    site_id=int(row.site_id),
                )
            )
    return found


def queue(conn: Connection, notifications: list[NewNotification], at: datetime) -> None:
    """Queue what :func:`read_meters` / :func:`read_gateways` found, after the new state is
    written, in the same transaction (an organisation nobody subscribed queues nothing)."""
    if notifications:
        queueing.enqueue_many_in(conn, notifications, at)


def _older(reported_at: datetime | None, last_seen_at: datetime | None) -> bool:
    return reported_at is not None and last_seen_at is not None and reported_at < last_seen_at


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()
