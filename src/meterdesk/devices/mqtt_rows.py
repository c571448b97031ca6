"""MQTT uplink messages → rows: the pure conversions of the MQTT ingest (tested without a
broker or a database) and the two small writes they feed (``uplink_messages``, ``device_status``).

- :func:`receive` parses a message once, on arrival; a refused payload keeps its reason and, when
  the JSON still names one, its msgid (so the gateway can be answered ``res: 0``).
- :func:`entry_reading` turns one meter entry into an :class:`IncomingReading`: ``energy_kwh``
  (and the sharp/peak/flat/valley registers as bands) for electricity, ``volume_m3`` for water;
  ``time`` (ms since the epoch) is already UTC. Registers must fit the stored scale (4 places,
  below 10^12): anything else is refused with a reason and quarantined, never rounded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from meterdesk.billing.ingest import IncomingReading
from meterdesk.db.types import instant_int, scaled_int
from meterdesk.devices.tables import uplink_messages
from meterdesk.devices.uplink import (
    MeterReport,
    Report,
    ReportReply,
    Topic,
    UplinkRejected,
    down_topic,
    parse_report,
    to_payload,
)
from meterdesk.metering.model import QuarantineReason, ReadingSource
from meterdesk.metering.repository import QuarantineItem
from meterdesk.metering.tables import REGISTER_PLACES
from meterdesk.shared.text import control_character

MAX_REGISTER = Decimal(10) ** 12
MAX_RAW_CHARS = 65_536  # of a refused payload kept in the quarantine
LIVE_FIELDS = ("current_a", "frequency_hz", "pf", "power_kw", "voltage_v")  # sorted: stable JSON
BAND_FIELDS = (
    ("sharp", "energy_sharp_kwh"),
    ("peak", "energy_peak_kwh"),
    ("flat", "energy_flat_kwh"),
    ("valley", "energy_valley_kwh"),
)


@dataclass(frozen=True, slots=True)
class Inbound:
    """One MQTT message as received, parsed once."""

    topic: str
    payload: bytes
    arrived: float  # monotonic seconds at receipt: the group-commit window and latency start
    report: Report | None = None
    reason: str | None = None  # why the payload was refused (``report`` is None)
    msgid: str | None = None

    @property
    def readings(self) -> int:
        return len(self.report.reported.meters) if self.report is not None else 0


@dataclass(frozen=True, slots=True)
class Reply:
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class KnownGateway:
    id: int
    organisation_id: int
    serial: str
    product_key: str | None


@dataclass(frozen=True, slots=True)
class KnownMeter:
    id: int
    organisation_id: int
    utility: str  # electricity | water
    gateway_id: int | None  # the gateway of the meter's bus, if any


def receive(topic: str, payload: bytes, arrived: float) -> Inbound:
    try:
        report = parse_report(payload)
    except UplinkRejected as error:
        return Inbound(topic, payload, arrived, None, error.reason, loose_msgid(payload))
    return Inbound(topic, payload, arrived, report, None, report.msgid)


def loose_msgid(payload: bytes) -> str | None:
    """The msgid of a payload that failed the contract, if it is JSON naming one."""
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    msgid = document.get("msgid") if isinstance(document, dict) else None
    if not isinstance(msgid, str) or not 0 < len(msgid) <= 64 or control_character(msgid):
        return None  # not one the gateway can be answered by (nor stored, with a NUL)
    return msgid


def entry_reading(
    entry: MeterReport, meter: KnownMeter, source: ReadingSource
) -> IncomingReading | None:
    """The reading one entry carries (None: status only); raises :class:`UplinkRejected` when
    the entry contradicts the meter or does not fit the stored registers."""
    bands = (
        {band: value for band, name in BAND_FIELDS if (value := getattr(entry, name)) is not None}
        if _has_bands(entry)
        else None
    )
    if meter.utility == "water":
        if entry.energy_kwh is not None or bands:
            raise UplinkRejected(f"energy registers reported for water meter {entry.addr!r}")
        total = entry.volume_m3
    else:
        if entry.volume_m3 is not None:
            raise UplinkRejected(f"a water volume reported for electricity meter {entry.addr!r}")
        if bands and entry.energy_kwh is None:
            raise UplinkRejected("band registers without energy_kwh")
        total = entry.energy_kwh
    if total is None:
        return None
    _check_register(total)
    for value in (bands or {}).values():
        _check_register(value)
    return IncomingReading(meter.id, entry.measured_at, total, bands, source)


def _has_bands(entry: MeterReport) -> bool:
    # most entries carry only the total: four attribute tests instead of building a dict
    return (
        entry.energy_sharp_kwh is not None
        or entry.energy_peak_kwh is not None
        or entry.energy_flat_kwh is not None
        or entry.energy_valley_kwh is not None
    )


def _check_register(value: Decimal) -> None:
    if value < 0 or value >= MAX_REGISTER:
        raise UplinkRejected(f"register {value} is outside 0 … {MAX_REGISTER}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -REGISTER_PLACES:
        raise UplinkRejected(f"register {value} has more than {REGISTER_PLACES} decimal places")


def choose_meter(
    candidates: tuple[KnownMeter, ...] | list[KnownMeter], gateway_id: int, addr: str
) -> KnownMeter | str:
    """The one meter with this address on this gateway's buses (or on no gateway's bus), or
    why there is none."""
    mine = [m for m in candidates if m.gateway_id == gateway_id] or [
        m for m in candidates if m.gateway_id is None
    ]
    if len(mine) == 1:
        return mine[0]
    if not candidates:
        return f"no meter with address {addr!r} in the gateway's organisation"
    if not mine:
        return f"the meter with address {addr!r} is on another gateway's bus"
    return f"{len(mine)} meters have address {addr!r}: give each meter a unique address"


def reply(topic: Topic, msgid: str, *, ok: bool) -> Reply:
    """``report_reply`` on the gateway's down topic (``res`` 1 stored, 0 refused)."""
    answer = ReportReply(msgid=msgid, res=1 if ok else 0)
    return Reply(down_topic(topic.product_key, topic.sn), to_payload(answer))


def refused_item(inbound: Inbound, gateway: KnownGateway | None, reason: str) -> QuarantineItem:
    text = inbound.payload.decode("utf-8", errors="replace")
    payload: dict[str, object] = {"topic": inbound.topic, "raw": text[:MAX_RAW_CHARS]}
    if len(text) > MAX_RAW_CHARS:
        payload["truncated_from_chars"] = len(text)
    unknown_gateway = inbound.report is not None and gateway is None
    return QuarantineItem(
        organisation_id=gateway.organisation_id if gateway is not None else None,
        meter_id=None,
        source_ref=f"mqtt:{inbound.topic}"[:200],
        measured_at=None,
        payload=payload,
        reason_code=QuarantineReason.UNKNOWN_METER
        if unknown_gateway
        else QuarantineReason.MALFORMED,
        reason=reason,
    )


def entry_item(
    gateway: KnownGateway,
    entry: MeterReport,
    source: ReadingSource,
    meter_id: int | None,
    code: QuarantineReason,
    reason: str,
) -> QuarantineItem:
    """A meter entry that cannot be billed; the msgid is left out so the same entry re-sent
    in another report is quarantined once (same fingerprint)."""
    return QuarantineItem(
        organisation_id=gateway.organisation_id,
        meter_id=meter_id,
        source_ref=f"mqtt:{gateway.serial}:{entry.addr}"[:200],
        measured_at=entry.measured_at,
        payload={"source": source.value, **entry.model_dump(mode="json", exclude_none=True)},
        reason_code=code,
        reason=reason,
    )


def uplink_row(
    key: tuple[str, str], status: str, reason: str | None, received_at: datetime
) -> dict[str, object]:
    return {
        "gateway_serial": key[0],
        "msgid": key[1],
        "received_at": received_at,
        "status": status,
        "reason": None if reason is None else reason[:300],
    }


def insert_new(conn: Connection, rows: list[dict[str, object]]) -> set[tuple[str, str]]:
    """Insert the rows not stored yet; return the keys that were new."""
    if not rows:
        return set()
    builder = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    table = uplink_messages
    statement = (
        builder(table)
        .on_conflict_do_nothing(index_elements=["gateway_serial", "msgid"])
        .returning(table.c.gateway_serial, table.c.msgid)
    )
    return {(str(serial), str(msgid)) for serial, msgid in conn.execute(statement, rows)}


# Raw SQL (the same text on SQLite and PostgreSQL) over stored values: no per-value type
# processing, as in meterdesk.db.bulk. ``{marks}`` becomes the driver's placeholders.
_ONLINE_SQL = (
    "INSERT INTO device_status (meter_id, state, last_seen_at, last_error, failures, relay, valve, "
    "remaining_money, live, updated_at, relay_closed_at) VALUES ({marks}) "
    "ON CONFLICT (meter_id) DO UPDATE SET state = excluded.state, "
    "last_seen_at = excluded.last_seen_at, last_error = NULL, failures = 0, "
    "relay = COALESCE(excluded.relay, device_status.relay), "
    "valve = COALESCE(excluded.valve, device_status.valve), "
    "remaining_money = COALESCE(excluded.remaining_money, device_status.remaining_money), "
    "live = COALESCE(excluded.live, device_status.live), updated_at = excluded.updated_at, "
    # only a newer read gets here (WHERE): its closed relay is the latest seen
    "relay_closed_at = COALESCE(excluded.relay_closed_at, device_status.relay_closed_at) "
    "WHERE device_status.last_seen_at IS NULL OR device_status.last_seen_at <= excluded.last_seen_at"
)
_LOST_SQL = (
    "INSERT INTO device_status (meter_id, state, failures, last_error, updated_at) "
    "VALUES ({marks}) ON CONFLICT (meter_id) DO UPDATE SET state = excluded.state, "
    "failures = device_status.failures + 1, last_error = excluded.last_error, "
    "updated_at = excluded.updated_at "
    # an entry older than the last read is history, as for an ONLINE entry (the entry's time)
    "WHERE device_status.last_seen_at IS NULL OR device_status.last_seen_at <= {mark}"
)
OFFLINE_REASON = "the gateway reports the meter offline"


def save_live(conn: Connection, live: dict[int, MeterReport], received_at: datetime) -> None:
    """Upsert ``device_status``: an online entry sets the live values unless a newer one is
    stored; an offline entry marks the meter lost and keeps its last values, unless the meter was
    read after the entry's time (a late report is history, not a loss)."""
    at = instant_int(received_at)
    ordered = sorted(live.items())  # one lock order for concurrent ingest processes
    online = [_status_row(m, e, at) for m, e in ordered if e.state == "ONLINE"]
    lost = [
        (m, "lost", 1, OFFLINE_REASON, at, e.time * 1000)
        for m, e in ordered
        if e.state == "OFFLINE"
    ]
    _executemany(conn, _ONLINE_SQL, online)
    _executemany(conn, _LOST_SQL, lost, width=5)


def _executemany(
    conn: Connection, template: str, rows: Sequence[tuple[object, ...]], width: int | None = None
) -> None:
    """``template`` with ``{marks}`` (the first ``width`` values, default all) and ``{mark}``
    (one more) as the driver's placeholders, for each row."""
    if not rows:
        return
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    marks = ", ".join([marker] * (width or len(rows[0])))
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(template.format(marks=marks, mark=marker), rows)
    finally:
        cursor.close()


def _status_row(meter_id: int, entry: MeterReport, at: int) -> tuple[object, ...]:
    money = _money(entry.remaining_money)
    measured = entry.time * 1000  # the stored instant (µs since the epoch) of its ms
    return (
        meter_id,
        "online",
        measured,
        None,
        0,
        entry.relay,
        entry.valve,
        None if money is None else scaled_int(money, 2),
        live_json(entry),
        at,
        measured if entry.relay == "closed" else None,
    )


def live_json(entry: MeterReport) -> str | None:
    """The live values as a JSON object of decimal strings. Built by hand (it runs for every
    entry): names are constants and ``format(value, "f")`` gives only digits, sign and point."""
    values = [(name, value) for name in LIVE_FIELDS if (value := getattr(entry, name)) is not None]
    if not values:
        return None
    return "{" + ", ".join(f'"{name}": "{value:f}"' for name, value in values) + "}"


def _money(value: Decimal | None) -> Decimal | None:
    """The meter's remaining money when it fits the column (2 places); the live view only, so a
    value that does not fit is left out rather than rounded."""
    if value is None or abs(value) >= MAX_REGISTER:
        return None
    exponent = value.as_tuple().exponent
    return value if isinstance(exponent, int) and exponent >= -2 else None
