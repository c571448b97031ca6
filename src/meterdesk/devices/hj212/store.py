"""One group commit of HJ212 packets: the database side of :mod:`meterdesk.devices.hj212.server`.

:meth:`Hj212Store.commit` takes the packets collected during one group-commit window and stores
them in **one** transaction through the MQTT uplink's path (:func:`mqtt_store.write_batch`:
readings through :meth:`Ingestor.ingest_in`, quarantine, ``device_status``, the gateways'
``last_seen_at``). Only after it returns (committed) does the server send the answers it returns.

Decisions (``docs/hj212.md``):
- A packet is known by its gateway (``MN``, a gateway with uplink ``hj212``) and its access
  password (``PW``, checked against the gateway's argon2 hash). A packet whose MN names no such
  gateway is quarantined with the reason (no organisation) and not answered, as an unknown MQTT
  gateway's report is. A wrong or missing PW, or a gateway without a password, is refused and
  logged, and *nothing* is stored: whoever does not know the password cannot write into the
  organisation's quarantine.
- There is no message table: a re-sent packet goes through the core again, which drops the
  readings it already has (and re-prices late ones); the quarantine keeps one copy of a refusal
  (its fingerprint). So re-sending is harmless and is answered again.
- A malformed CP (bad DataTime, a value that is not a plain decimal …) quarantines the packet
  with the reason and is answered: re-sending cannot mend it, and a gateway that keeps a packet
  until it is answered would otherwise re-send it forever. An address no meter has quarantines
  that meter's values only; the rest of the packet is ingested.
- The PW never reaches the quarantine: stored packets show it as ``***``.
- Wrong passwords are limited per MN and per remote address (:mod:`~meterdesk.devices.hj212.limit`):
  during a lock-out a packet is refused without an argon2 verification, unless its (hash, PW)
  was already verified as right.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from argon2 import PasswordHasher
from sqlalchemy import Connection

from meterdesk.billing.ingest import IncomingReading, Ingestor
from meterdesk.db.database import Database
from meterdesk.devices.codecs.hj212 import Hj212Message, build_segment, encode_message
from meterdesk.devices.hj212 import model
from meterdesk.devices.hj212.gateways import Hj212Gateway, Passwords, load_gateways
from meterdesk.devices.hj212.limit import PasswordLimiter
from meterdesk.devices.hj212.model import MeterValues, PacketRefused
from meterdesk.devices.mqtt_rows import KnownGateway, Reply
from meterdesk.devices.mqtt_store import BatchOutcome, Directory, Work, write_batch
from meterdesk.devices.uplink import MeterReport
from meterdesk.metering.model import QuarantineReason, ReadingSource
from meterdesk.metering.repository import QuarantineItem
from meterdesk.shared.text import control_character

log = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet as received on a connection; ``topic`` names the connection to answer on."""

    topic: str
    message: Hj212Message
    arrived: float  # monotonic seconds at receipt
    address: str = ""  # the remote (TCP peer) address: wrong passwords are limited by it

    @property
    def readings(self) -> int:
        return sum(1 for key in self.message.cp_values() if key.endswith("-" + model.CUMULATIVE))


class Hj212Store:
    """Long-lived (keeps the ingest pipeline's and the meter directory's caches)."""

    def __init__(
        self,
        db: Database,
        *,
        hasher: PasswordHasher | None = None,
        limiter: PasswordLimiter | None = None,
    ) -> None:
        self.db = db
        self.ingestor = Ingestor(db)
        self.directory = Directory(refresh_s=300.0)
        self.passwords = Passwords(hasher or PasswordHasher())
        self.limiter = limiter or PasswordLimiter()

    def commit(self, batch: Sequence[Packet]) -> BatchOutcome:
        """Store one batch; return the answers to send now that it is committed."""
        work = Work(received_at=self.db.clock())
        state = self.ingestor.state
        try:
            with self.db.transaction() as conn:
                state.open(conn)
                self.directory.check(conn)
                serials = {p.message.mn or "" for p in batch}  # a NUL cannot be a parameter
                known = load_gateways(conn, {mn for mn in serials if not control_character(mn)})
                replies = [self._packet(conn, packet, known, work) for packet in batch]
                write_batch(conn, self.ingestor, work)
                state.seal(conn)
        except BaseException:
            state.forget()
            raise
        state.committed()
        work.stats.messages = len(batch)
        return BatchOutcome([reply for reply in replies if reply is not None], work.stats)

    def _packet(
        self,
        conn: Connection,
        packet: Packet,
        known: dict[str, list[Hj212Gateway]],
        work: Work,
    ) -> Reply | None:
        message, mn = packet.message, packet.message.mn or ""
        found = known.get(mn, [])
        if len(found) != 1 or control_character(mn):
            work.stats.rejected += 1
            why = "several organisations have it" if found else "register it with uplink hj212"
            reason = f"unknown HJ212 gateway MN {mn!r}: {why}"
            work.quarantine.append(
                _packet_item(packet, None, QuarantineReason.UNKNOWN_METER, reason)
            )
            log.warning("HJ212: %s refused: %s", packet.topic, reason)
            return None
        gateway = found[0]
        if not self._password_right(packet, gateway):
            work.stats.rejected += 1
            return None
        work.gateways.add(gateway.known.id)
        if message.cn in model.DATA_CNS:
            self._data(conn, packet, gateway, work)
        return _answer(packet) if model.wants_answer(message) else None

    def _password_right(self, packet: Packet, gateway: Hj212Gateway) -> bool:
        mn, pw, stored = packet.message.mn or "", packet.message.pw, gateway.password_hash
        # Already verified: free, and a guesser's lock-out must not shut the gateway itself out.
        # It does not clear the MN's count: a guesser could otherwise guess between the
        # gateway's own packets without ever reaching the limit.
        if self.passwords.known_right(stored, pw):
            return True
        if not self.limiter.admits(packet.address, mn, packet.topic):
            return False  # locked out: no argon2 verification
        if self.passwords.match(stored, pw):
            self.limiter.right(mn)
            return True
        log.warning("HJ212: %s refused: wrong or missing PW for gateway %s", packet.topic, mn)
        self.limiter.wrong(packet.address, mn, packet.topic)
        return False

    def _data(self, conn: Connection, packet: Packet, gateway: Hj212Gateway, work: Work) -> None:
        source = model.source_of(packet.message.cn or "")
        work.stats.history_messages += int(source is ReadingSource.HISTORY)
        try:
            if control_character(build_segment(packet.message)):
                raise PacketRefused("the packet holds a control character")
            values = model.meter_values(packet.message, gateway.zone)
        except PacketRefused as error:
            work.stats.rejected += 1
            item = _packet_item(packet, gateway.known, QuarantineReason.MALFORMED, error.reason)
            work.quarantine.append(item)
            return
        for value in values:
            reading = self._reading(conn, gateway.known, value, source, work)
            if reading is not None:
                work.readings.append(reading)
                seen = work.live.get(reading.meter_id)
                if seen is None or seen.measured_at <= value.measured_at:
                    work.live[reading.meter_id] = _seen(value)

    def _reading(
        self,
        conn: Connection,
        gateway: KnownGateway,
        value: MeterValues,
        source: ReadingSource,
        work: Work,
    ) -> IncomingReading | None:
        meter = self.directory.meter(conn, gateway, value.address)
        if isinstance(meter, str):
            work.quarantine.append(
                _value_item(gateway, value, None, QuarantineReason.UNKNOWN_METER, meter)
            )
            return None
        if meter.utility == "water" and value.bands:
            reason = f"band registers reported for water meter {value.address!r}"
            work.quarantine.append(
                _value_item(gateway, value, meter.id, QuarantineReason.MALFORMED, reason)
            )
            return None
        return IncomingReading(
            meter.id, value.measured_at, value.total, value.bands or None, source
        )


def _answer(packet: Packet) -> Reply:
    return Reply(packet.topic, encode_message(model.data_answer(packet.message)))


def _seen(value: MeterValues) -> MeterReport:
    """A status-only entry: the meter answered its gateway at ``measured_at`` (no live values)."""
    epoch_ms = int(value.measured_at.timestamp() * 1000)
    return MeterReport(addr=value.address[:64], time=epoch_ms, state="ONLINE")


def _masked(message: Hj212Message) -> str:
    """The packet's data segment with its PW hidden and control characters escaped."""
    fields = tuple((k, "***" if k == "PW" else v) for k, v in message.fields)
    text = build_segment(Hj212Message(fields, message.cp))
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def _packet_item(
    packet: Packet, gateway: KnownGateway | None, code: QuarantineReason, reason: str
) -> QuarantineItem:
    mn = _CONTROL.sub("?", packet.message.mn or "")
    return QuarantineItem(
        organisation_id=None if gateway is None else gateway.organisation_id,
        meter_id=None,
        source_ref=f"hj212:{mn}",
        measured_at=None,
        payload={"raw": _masked(packet.message)},
        reason_code=code,
        reason=reason,
    )


def _value_item(
    gateway: KnownGateway,
    value: MeterValues,
    meter_id: int | None,
    code: QuarantineReason,
    reason: str,
) -> QuarantineItem:
    """One meter's values; the QN is left out so a re-sent packet is quarantined once."""
    payload: dict[str, object] = {"address": value.address, "total": format(value.total, "f")}
    payload.update({band: format(v, "f") for band, v in value.bands.items()})
    return QuarantineItem(
        organisation_id=gateway.organisation_id,
        meter_id=meter_id,
        source_ref=f"hj212:{gateway.serial}:{value.address}",
        measured_at=value.measured_at,
        payload=payload,
        reason_code=code,
        reason=reason,
    )
