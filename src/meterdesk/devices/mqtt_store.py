"""One group commit of MQTT uplink messages (``docs/PROTOCOLS.md`` §4): the database side of
:mod:`meterdesk.devices.mqtt_ingest`.

:meth:`UplinkStore.commit` takes the messages collected during one group-commit window and, in
**one** transaction: records each (gateway, msgid) in ``uplink_messages`` (insert-or-ignore, so a
re-sent report is recognised even when another ingest process holds it uncommitted: the unique
index makes the second insert wait, then skip); ingests the readings of the reports seen for the
first time through :meth:`Ingestor.ingest_in`; quarantines what cannot be billed; updates
``device_status`` and the gateways' ``last_seen_at``. Only after it returns (committed) does the
caller publish the ``report_reply`` messages it returns.

Decisions:
- A message is known by (gateway serial, msgid). A re-sent one is answered again with the stored
  result and ingests nothing. HISTORY reports overlapping what was received are not special: the
  core drops their duplicates and re-prices late readings.
- A malformed payload and a payload whose ``sn`` differs from its topic are quarantined (raw
  payload and reason) and answered ``res: 0``. The contract's ``report_reply`` has no reason
  field, so the reason lives in the quarantine only.
- A report from an unknown gateway is quarantined and *not answered* and not recorded in
  ``uplink_messages``: the gateway re-sends it at its own pace (a ``res: 0`` would make a gateway
  that treats it as "resend now", like the simulator's, resend in a tight loop), and once the
  gateway is registered its re-sent reports are ingested. The quarantine keeps one copy.
- A meter entry is matched by ``addr`` among the meters of the gateway's organisation that sit on
  a bus of that gateway or on no gateway's bus; no match or several matches quarantine the entry
  (the rest of the report is ingested and acknowledged).
- An ``OFFLINE`` entry only marks the meter lost: registers a gateway repeats for an unreachable
  meter are not a measurement at ``time``. One older than the meter's last read (a late report)
  is history and changes nothing, as an older ``ONLINE`` entry does not. Live values, relay,
  valve and remaining money come from REALTIME reports only (a HISTORY report must not move the
  live view back in time).
- A meter an ``OFFLINE`` entry turns lost (its stored state was not ``lost``) queues the
  operators' ``meter_offline`` in the same commit (:mod:`meterdesk.devices.offline_events`).
  A gateway silent too long is marked lost by :mod:`meterdesk.devices.gateway_watchdog`; its next
  report (any report) sets it ``online`` again here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime

from sqlalchemy import Connection, func, select, tuple_, update

from meterdesk.billing.ingest import IncomingReading, Ingestor, IngestReport
from meterdesk.db import counters
from meterdesk.db.database import Database
from meterdesk.devices import mqtt_rows, offline_events
from meterdesk.devices.mqtt_rows import Inbound, KnownGateway, KnownMeter, Reply, entry_reading
from meterdesk.devices.offline_events import WentOffline
from meterdesk.devices.tables import buses, gateways, uplink_messages
from meterdesk.devices.uplink import MeterReport, Report, Topic, UplinkRejected, parse_topic
from meterdesk.metering.model import QuarantineReason, ReadingSource
from meterdesk.metering.repository import QuarantineItem, quarantine_items
from meterdesk.metering.tables import meters

INGESTED, REJECTED = "ingested", "rejected"


@dataclass
class BatchStats:
    messages: int = 0
    resent: int = 0  # same (gateway, msgid) seen before: acknowledged again, nothing ingested
    rejected: int = 0  # malformed, sn/topic mismatch, unknown gateway
    history_messages: int = 0
    readings: int = 0  # readings handed to the core (new messages only)
    accepted: int = 0
    duplicates: int = 0  # dropped by the core's dedupe (HISTORY overlaps, repeats)
    late: int = 0  # meters whose batch had readings older than the stored ones (re-priced)
    quarantined: int = 0  # entries and payloads put in the quarantine

    def merge(self, other: BatchStats) -> None:
        for counter in fields(BatchStats):
            setattr(self, counter.name, getattr(self, counter.name) + getattr(other, counter.name))


@dataclass(frozen=True)
class BatchOutcome:
    replies: list[Reply]
    stats: BatchStats


@dataclass
class _Decision:
    """What one message of the batch comes to."""

    inbound: Inbound
    topic: Topic | None
    msgid: str | None
    gateway: KnownGateway | None = None
    status: str = INGESTED
    reason: str | None = None
    new: bool = True  # first time seen: ingest or quarantine it

    @property
    def key(self) -> tuple[str, str] | None:
        if self.gateway is None or self.msgid is None:
            return None
        return (self.gateway.serial, self.msgid)

    def reject(self, reason: str) -> None:
        self.status, self.reason = REJECTED, reason


@dataclass
class Work:
    """What one batch writes; filled by this store's decisions or by the HJ212 store's."""

    received_at: datetime
    readings: list[IncomingReading] = field(default_factory=list)
    quarantine: list[QuarantineItem] = field(default_factory=list)
    live: dict[int, MeterReport] = field(default_factory=dict)  # meter → newest REALTIME entry
    gateways: set[int] = field(default_factory=set)
    stats: BatchStats = field(default_factory=BatchStats)


class UplinkStore:
    """Long-lived (keeps the ingest pipeline's and its own caches); one commit at a time."""

    def __init__(self, db: Database, *, refresh_s: float = 300.0) -> None:
        self.db = db
        self.ingestor = Ingestor(db)
        self.directory = Directory(refresh_s=refresh_s)

    def commit(self, batch: Sequence[Inbound]) -> BatchOutcome:
        """Store one batch and return the replies to publish now that it is committed."""
        work = Work(received_at=self.db.clock())
        state = self.ingestor.state  # what the last group commit's ingest wrote, kept
        try:
            with self.db.transaction() as conn:
                state.open(conn)  # before the uplink rows below are written
                self.directory.check(conn)
                decisions = [self._decide(conn, inbound) for inbound in batch]
                _record(conn, decisions, work.received_at)
                for decision in decisions:
                    self._collect(conn, decision, work)
                write_batch(conn, self.ingestor, work)
                # after the ingest only uplink, quarantine, live-value and gateway rows were
                # written, none of what the ingestor keeps
                state.seal(conn)
        except BaseException:
            state.forget()
            raise
        state.committed()
        work.stats.messages = len(batch)
        replies = [reply for d in decisions if (reply := _reply(d)) is not None]
        return BatchOutcome(replies, work.stats)

    def _decide(self, conn: Connection, inbound: Inbound) -> _Decision:
        topic = _up_topic(inbound.topic)
        if isinstance(topic, str):
            decision = _Decision(inbound, None, inbound.msgid)  # no topic to answer on
            decision.reject(topic)
            return decision
        decision = _Decision(inbound, topic, inbound.msgid)
        decision.gateway = self.directory.gateway(conn, topic.product_key, topic.sn)
        report = inbound.report
        if report is None:
            decision.reject(inbound.reason or "not a report")
        elif report.sn != topic.sn:
            decision.reject(f"sn {report.sn!r} differs from the topic's gateway {topic.sn!r}")
        elif decision.gateway is None:
            decision.reject(
                f"unknown gateway {topic.sn!r} (product key {topic.product_key!r}): register it"
            )
        return decision

    def _collect(self, conn: Connection, decision: _Decision, work: Work) -> None:
        if not decision.new:
            work.stats.resent += 1
            return
        if decision.status == REJECTED:
            work.stats.rejected += 1
            work.quarantine.append(
                mqtt_rows.refused_item(
                    decision.inbound, decision.gateway, decision.reason or "refused"
                )
            )
            return
        report, gateway = decision.inbound.report, decision.gateway
        assert report is not None and gateway is not None
        work.gateways.add(gateway.id)
        self._entries(conn, report, gateway, work)

    def _entries(self, conn: Connection, report: Report, gateway: KnownGateway, work: Work) -> None:
        history = report.reported.source == "HISTORY"
        source = ReadingSource.HISTORY if history else ReadingSource.REALTIME
        work.stats.history_messages += int(history)
        for entry in report.reported.meters:
            meter = self.directory.meter(conn, gateway, entry.addr)
            if isinstance(meter, str):
                work.quarantine.append(
                    mqtt_rows.entry_item(
                        gateway, entry, source, None, QuarantineReason.UNKNOWN_METER, meter
                    )
                )
                continue
            if not history:
                _latest(work.live, meter.id, entry)
            if entry.state == "OFFLINE":
                continue  # registers repeated for an unreachable meter are not a measurement
            try:
                incoming = entry_reading(entry, meter, source)
            except UplinkRejected as error:
                work.quarantine.append(
                    mqtt_rows.entry_item(
                        gateway, entry, source, meter.id, QuarantineReason.MALFORMED, error.reason
                    )
                )
                continue
            if incoming is not None:
                work.readings.append(incoming)


def _up_topic(text: str) -> Topic | str:
    """The up topic, or why the message cannot be answered."""
    try:
        topic = parse_topic(text)
    except UplinkRejected as error:
        return error.reason
    return topic if topic.direction == "up" else f"{text!r} is not an up topic"


def _latest(live: dict[int, MeterReport], meter_id: int, entry: MeterReport) -> None:
    """Keep each meter's newest REALTIME entry of the batch (online or offline)."""
    seen = live.get(meter_id)
    if seen is None or seen.time <= entry.time:
        live[meter_id] = entry


def _record(conn: Connection, decisions: list[_Decision], received_at: datetime) -> None:
    """Insert-or-ignore each (gateway, msgid). A message stored before, or repeated in this
    batch, is a re-send: it takes the result stored the first time and ingests nothing."""
    first: dict[tuple[str, str], _Decision] = {}
    for decision in decisions:
        key = decision.key
        if key is not None:
            decision.new = key not in first
            first.setdefault(key, decision)
    # In key order: two ingest processes holding the same re-sent msgids wait for each other in
    # one order instead of deadlocking on the unique index.
    rows = [
        mqtt_rows.uplink_row(k, first[k].status, first[k].reason, received_at)
        for k in sorted(first)
    ]
    stored = set(first) - mqtt_rows.insert_new(conn, rows)
    statuses = _statuses(conn, stored)
    for key in stored:
        first[key].new, first[key].status = False, statuses.get(key, INGESTED)
    for decision in decisions:
        key = decision.key
        if key is not None and decision is not first[key]:
            decision.status = first[key].status


def _statuses(conn: Connection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    if not keys:
        return {}
    pair = tuple_(uplink_messages.c.gateway_serial, uplink_messages.c.msgid)
    rows = conn.execute(
        select(
            uplink_messages.c.gateway_serial, uplink_messages.c.msgid, uplink_messages.c.status
        ).where(pair.in_(sorted(keys)))
    )
    return {(str(serial), str(msgid)): str(status) for serial, msgid, status in rows}


def write_batch(conn: Connection, ingestor: Ingestor, work: Work) -> None:
    """The batch's writes in the caller's transaction (the HJ212 uplink's too): readings through
    the core, quarantine, offline events, ``device_status``, the gateways' ``last_seen_at``."""
    if work.readings:
        report: IngestReport = ingestor.ingest_in(conn, work.readings, work.received_at)
        work.stats.readings = report.received
        work.stats.accepted = report.accepted
        work.stats.duplicates = report.duplicates
        work.stats.late = report.late
        work.stats.quarantined += report.quarantined
    quarantine_items(conn, work.quarantine, work.received_at)
    work.stats.quarantined += len(work.quarantine)
    lost = [
        WentOffline(m, work.received_at, reported_at=e.measured_at)
        for m, e in work.live.items()
        if e.state == "OFFLINE"
    ]
    offline = offline_events.read_meters(conn, lost)  # before save_live marks them lost
    mqtt_rows.save_live(conn, work.live, work.received_at)
    offline_events.queue(conn, offline, work.received_at)
    if work.gateways:
        conn.execute(
            update(gateways)
            .where(gateways.c.id.in_(sorted(work.gateways)))
            .values(state="online", last_seen_at=work.received_at)
        )


def _reply(decision: _Decision) -> Reply | None:
    if decision.topic is None or decision.msgid is None:
        return None  # no topic or no msgid to answer to
    if decision.gateway is None:
        return None  # unknown gateway: it re-sends at its own pace until it is registered
    return mqtt_rows.reply(decision.topic, decision.msgid, ok=decision.status == INGESTED)


class Directory:
    """Gateways by (product key, serial) and meters by organisation and address, cached until
    the configuration counter moves or ``refresh_s`` passes (a bus re-wired without a counter
    bump is seen after at most that long). An organisation's meters load in one query."""

    def __init__(self, *, refresh_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.refresh_s, self.clock = refresh_s, clock
        self._version: int | None = None
        self._loaded_at = 0.0
        self._gateways: dict[tuple[str, str], KnownGateway] = {}
        self._meters: dict[int, dict[str, list[KnownMeter]]] = {}
        self._chosen: dict[tuple[int, str], KnownMeter] = {}  # (gateway id, addr)

    def check(self, conn: Connection) -> None:
        version = counters.read(conn)
        if version != self._version or self.clock() - self._loaded_at > self.refresh_s:
            self._version, self._loaded_at = version, self.clock()
            self._gateways, self._meters, self._chosen = {}, {}, {}

    def gateway(self, conn: Connection, product_key: str, serial: str) -> KnownGateway | None:
        key = (product_key, serial)
        if key not in self._gateways:
            found = _load_gateways(conn, serial, product_key)
            if len(found) != 1:
                return None  # unknown, or one serial under the same product key in two orgs
            self._gateways[key] = found[0]
        return self._gateways[key]

    def meter(self, conn: Connection, gateway: KnownGateway, addr: str) -> KnownMeter | str:
        """The meter, or why there is none. A meter found is kept per gateway and address (every
        entry asks); a reason is not, so addresses a gateway invents cannot fill the memory."""
        key = (gateway.id, addr)
        known = self._chosen.get(key)
        if known is not None:
            return known
        org = gateway.organisation_id
        if org not in self._meters:
            self._meters[org] = _load_meters(conn, org)
        chosen = mqtt_rows.choose_meter(self._meters[org].get(addr, ()), gateway.id, addr)
        if not isinstance(chosen, str):
            self._chosen[key] = chosen
        return chosen


def _load_gateways(conn: Connection, serial: str, product_key: str) -> list[KnownGateway]:
    rows = conn.execute(
        select(gateways.c.id, gateways.c.organisation_id, gateways.c.serial, gateways.c.product_key)
        .where(gateways.c.serial == serial)
        .where((gateways.c.product_key == product_key) | gateways.c.product_key.is_(None))
    ).all()
    return [KnownGateway(int(r[0]), int(r[1]), str(r[2]), r[3]) for r in rows]


def _load_meters(conn: Connection, organisation_id: int) -> dict[str, list[KnownMeter]]:
    rows = conn.execute(
        select(meters.c.id, meters.c.address, meters.c.utility, buses.c.gateway_id)
        .select_from(meters.outerjoin(buses, buses.c.id == meters.c.bus_id))
        .where(meters.c.organisation_id == organisation_id)
    ).all()
    found: dict[str, list[KnownMeter]] = {}
    for meter_id, address, utility, gateway_id in rows:
        found.setdefault(str(address), []).append(
            KnownMeter(
                int(meter_id),
                organisation_id,
                str(utility),
                None if gateway_id is None else int(gateway_id),
            )
        )
    return found


def count_uplink_messages(conn: Connection, statuses: Iterable[str] = (INGESTED, REJECTED)) -> int:
    """How many distinct reports were recorded (for benches and checks)."""
    query = select(func.count()).select_from(uplink_messages)
    return int(conn.execute(query.where(uplink_messages.c.status.in_(list(statuses)))).scalar_one())
