"""The MQTT gateway watchdog: a gateway whose reports stopped (power cut, network down) is marked
**lost**, with the meters on its buses, and the operators get one ``gateway_offline``.

An MQTT gateway pushes; the platform only ever hears it. The group commit
(:mod:`meterdesk.devices.mqtt_store`) sets it ``online`` with ``last_seen_at`` on every report,
so silence is the only sign of an outage, and nothing else looks for it. :func:`watch` runs
:func:`check` periodically in the process that listens to the broker: ``meterdesk run --broker``
(:mod:`meterdesk.runtime`) or ``meterdesk ingest-mqtt``. A process that does not listen cannot
tell a silent gateway from a broker or ingest outage, so ``meterdesk run`` without ``--broker``
does not watch.

Rules:
- A gateway with uplink ``mqtt`` that has reported at least once, is not lost, and has been silent
  longer than its **threshold** is lost. The threshold is ``silence`` (the runtime's
  ``gateway_silence_s``, default 15 minutes) or, when longer, :data:`MISSED_REPORTS` times the
  longest ``poll_interval_s`` of its ``mqtt`` buses: for an MQTT bus that is how often the gateway
  reads its meters and reports them, so a gateway set to report hourly is not taken for lost
  between two reports. A gateway that never reported stays ``unknown``; gateways of other uplinks
  belong to the poller. The same rules watch the **HJ212** gateways (``uplink="hj212"``) in the
  process that runs the HJ212 server; they have no buses, so their threshold is ``silence`` and
  no meters are marked with them (``docs/hj212.md``).
- ``listening_since``: the runtime's own MQTT connection has been up since then. Silence while
  the platform was not listening is not the gateway's: a gateway is lost only once it has been
  silent for its threshold *and* the platform has listened that long (no flood of alarms after a
  broker restart).
- The meters on its buses are marked lost with it (``last_error`` = :data:`GATEWAY_SILENT`,
  last values kept) unless seen within the same threshold (another path read them, or their
  last entry was newer). They are marked **silently**: one outage, one message (the gateway's),
  rather than one more per meter. A meter marked so is still announced by ``meter_offline`` if
  the gateway comes back and reports it ``OFFLINE`` (:mod:`meterdesk.devices.offline_events`).
- ``gateway_offline`` goes through :mod:`meterdesk.devices.offline_events` in the transaction
  that writes the loss: ``since`` is the gateway's last report, the key
  ``gateway:<id>:offline:<since>``. The state lives in the database, so a later run or a restarted
  runtime does not announce a gateway already lost; the next report brings it back ``online``
  (the group commit), and silence after that is a new episode and a new message.
- Cheap when nothing happens: one read of the gateways table per run (small: one row per
  gateway) and no write transaction. No index on ``last_seen_at``: the group commit updates that
  column for every report, and an index on it would cost the ingest more than this scan.
- Lock order as the group commit's (``device_status`` rows, then ``gateways`` rows, each in id
  order), so a gateway reporting while it is being marked lost waits instead of deadlocking; each
  write re-checks the silence, so such a gateway is not marked (nor announced).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Connection,
    and_,
    bindparam,
    case,
    cast,
    func,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from meterdesk.db.database import Database
from meterdesk.db.types import instant_int
from meterdesk.devices import offline_events
from meterdesk.devices.offline_events import GATEWAY_SILENT, LOST, WentOffline
from meterdesk.devices.tables import buses, device_status, gateways
from meterdesk.metering.tables import meters

MQTT = "mqtt"
MISSED_REPORTS = 3  # reports a gateway may miss before it is lost (when that is over `silence`)
DEFAULT_SILENCE = timedelta(minutes=15)


@dataclass(frozen=True)
class Silent:
    """A gateway found silent past its threshold."""

    gateway_id: int
    last_seen_at: datetime
    cutoff: datetime  # its meters seen before this are lost with it


@dataclass
class WatchReport:
    gateways: list[int] = field(default_factory=list)  # marked lost by this run
    meters: int = 0  # meters marked lost with them
    failed: bool = False  # the check raised (logged); it runs again at the next interval


def check(
    db: Database,
    *,
    now: datetime,
    silence: timedelta = DEFAULT_SILENCE,
    listening_since: datetime | None = None,
    uplink: str = MQTT,
) -> WatchReport:
    """Mark the gateways of ``uplink`` silent past their threshold lost, with their meters, and
    queue their ``gateway_offline`` (module docstring)."""
    with db.read() as conn:
        silent = find_silent(
            conn, now=now, silence=silence, listening_since=listening_since, uplink=uplink
        )
    if not silent:
        return WatchReport()
    with db.transaction() as conn:
        return mark_lost(conn, silent, now)


def find_silent(
    conn: Connection,
    *,
    now: datetime,
    silence: timedelta,
    listening_since: datetime | None = None,
    uplink: str = MQTT,
) -> list[Silent]:
    """The gateways of ``uplink``, not lost, silent past their threshold: one query."""
    floor_us = _micros(silence)
    longest = func.coalesce(func.max(cast(buses.c.poll_interval_s, BigInteger)), 0)
    interval_us = longest * (MISSED_REPORTS * 1_000_000)
    threshold = case((interval_us > floor_us, interval_us), else_=floor_us)
    now_us = instant_int(now)
    seen = type_coerce(gateways.c.last_seen_at, BigInteger)
    query = (
        select(gateways.c.id, gateways.c.last_seen_at, threshold.label("threshold_us"))
        .select_from(
            gateways.outerjoin(
                buses, and_(buses.c.gateway_id == gateways.c.id, buses.c.transport == MQTT)
            )
        )
        .where(
            gateways.c.uplink == uplink,
            gateways.c.state != LOST,
            gateways.c.last_seen_at.is_not(None),
            gateways.c.last_seen_at < now - silence,
        )
        .group_by(gateways.c.id, gateways.c.last_seen_at)
        .having(seen + threshold < now_us)
        .order_by(gateways.c.id)
    )
    if listening_since is not None:
        if listening_since > now - silence:
            return []  # not listened for the shortest threshold yet
        listened = bindparam("listening_us", instant_int(listening_since), BigInteger)
        query = query.having(listened + threshold < now_us)
    return [
        Silent(int(row.id), row.last_seen_at, now - timedelta(microseconds=int(row.threshold_us)))
        for row in conn.execute(query)
    ]


def mark_lost(conn: Connection, silent: Sequence[Silent], now: datetime) -> WatchReport:
    """In the caller's transaction: the meters, then the gateways still silent, then the
    messages of the gateways this wrote lost."""
    found = offline_events.read_gateways(conn, [WentOffline(s.gateway_id, now) for s in silent])
    report = WatchReport(meters=_mark_meters(conn, silent, now))
    for gone in sorted(silent, key=lambda s: s.gateway_id):
        written = conn.execute(
            update(gateways)
            .where(
                gateways.c.id == gone.gateway_id,
                gateways.c.state != LOST,
                gateways.c.last_seen_at == gone.last_seen_at,  # no report since it was read
            )
            .values(state=LOST)
        )
        if written.rowcount:
            report.gateways.append(gone.gateway_id)
    keys = tuple(f"gateway:{g}:offline:" for g in report.gateways)
    offline_events.queue(conn, [n for n in found if n.key.startswith(keys)], now)
    return report


def _mark_meters(conn: Connection, silent: Sequence[Silent], now: datetime) -> int:
    """The meters on the silent gateways' MQTT buses not seen since their gateway's cutoff:
    lost, their last values kept; a meter without a status row gets one. Returns how many. A
    bus of the same gateway the poller reads (a ``tcp`` line through it) is the poller's to
    judge: its meters may answer while the gateway's reports stopped."""
    cutoffs = {s.gateway_id: s.cutoff for s in silent}
    rows = conn.execute(
        select(meters.c.id, buses.c.gateway_id, device_status.c.state, device_status.c.meter_id)
        .select_from(
            meters.join(buses, buses.c.id == meters.c.bus_id).outerjoin(
                device_status, device_status.c.meter_id == meters.c.id
            )
        )
        .where(buses.c.gateway_id.in_(sorted(cutoffs)), buses.c.transport == MQTT)
        .order_by(meters.c.id)
    ).all()
    stored = [
        {"m": int(r.id), "cutoff": cutoffs[int(r.gateway_id)]}
        for r in rows
        if r.meter_id is not None and r.state != LOST
    ]
    missing = [int(r.id) for r in rows if r.meter_id is None]
    marked = 0
    if stored:
        statement = (
            update(device_status)
            .where(
                device_status.c.meter_id == bindparam("m"),
                device_status.c.state != LOST,
                or_(
                    device_status.c.last_seen_at.is_(None),
                    device_status.c.last_seen_at < bindparam("cutoff"),
                ),
            )
            .values(state=LOST, last_error=GATEWAY_SILENT, updated_at=now)
        )
        marked += conn.execute(statement, stored).rowcount
    if missing:
        builder = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        row = {"state": LOST, "failures": 0, "last_error": GATEWAY_SILENT, "updated_at": now}
        new = [{"meter_id": m, **row} for m in missing]
        insert = builder(device_status).on_conflict_do_nothing(index_elements=["meter_id"])
        conn.execute(insert, new)
        marked += len(new)
    return marked


def _micros(value: timedelta) -> int:
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


log = logging.getLogger(__name__)


async def watch(
    db: Database,
    *,
    listening: asyncio.Event,
    stop: asyncio.Event,
    clock: Callable[[], datetime],
    check_s: float = 60.0,
    silence: timedelta = DEFAULT_SILENCE,
    speed: float = 1.0,
    on_report: Callable[[WatchReport], None] | None = None,
    uplink: str = MQTT,
) -> None:
    """Run :func:`check` every ``check_s`` (simulated seconds; ``speed`` of them per real
    second) until ``stop``. ``listening`` is set while this process's broker connection is up:
    while it is clear nothing is judged, and silence counts only from when it was last set."""
    listening_since: datetime | None = None
    while not stop.is_set():
        now = clock()
        if not listening.is_set():
            listening_since = None  # not listening: the gateways' silence is ours
        else:
            if listening_since is None:
                listening_since = now
            try:
                report = await asyncio.to_thread(
                    check,
                    db,
                    now=now,
                    silence=silence,
                    listening_since=listening_since,
                    uplink=uplink,
                )
            except Exception:
                log.exception("gateway watchdog failed; trying again at the next check")
                if on_report is not None:
                    on_report(WatchReport(failed=True))
            else:
                if report.gateways:
                    log.warning(
                        "%s gateways %s silent: marked lost with %d meters",
                        uplink,
                        report.gateways,
                        report.meters,
                    )
                if on_report is not None:
                    on_report(report)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(check_s / speed, 0.0))
