"""Readings in, exact deductions out — one transaction per batch.

For a batch of readings the pipeline: resolves each meter and device generation; drops exact
duplicates (in the batch and against what is stored); places every reading among the meter's
accepted readings and quarantines what does not fit; stores the accepted readings; prices each
new consumption interval (and, after a late reading, every interval after it) with the tariff
version in force; updates the running totals per meter, account and month; posts what is due to
the ledger with one balance update per account; and commits once. Any error rolls the whole batch
back, so a crash or a retry can never post part of it twice — re-sending the batch gives the same
balances, because stored readings are recognised as duplicates and intervals are priced once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from meterdesk.billing import charging, control, control_send, postings, quantity
from meterdesk.billing import repository as billing_repository
from meterdesk.billing.fast_lane import FastLane, LaneMeter
from meterdesk.billing.ingest_state import IngestState
from meterdesk.billing.model import Merge, PeriodTotal, intervals, merge_readings
from meterdesk.billing.outbox import DatabaseOutbox
from meterdesk.billing.policy import Cause
from meterdesk.billing.repository import Assignment, TotalKey
from meterdesk.db import counters
from meterdesk.db.database import Database
from meterdesk.db.types import instant_int
from meterdesk.metering import repository as metering_repository
from meterdesk.metering.model import (
    MeterProfile,
    QuarantineReason,
    Reading,
    ReadingSource,
    bands_from_mapping,
    order_key,
    register_problem,
)
from meterdesk.metering.repository import QuarantineItem
from meterdesk.metering.tables import REGISTER_PLACES
from meterdesk.shared.errors import ValidationError


@dataclass(frozen=True)
class IncomingReading:
    """A reading as a driver, an upload or an operator gives it (values are raw registers)."""

    meter_id: int
    measured_at: datetime
    total: Decimal
    bands: Mapping[str, Decimal] | None = None
    source: ReadingSource = ReadingSource.REALTIME


@dataclass
class IngestReport:
    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    late: int = 0
    intervals_priced: int = 0
    transfers: int = 0
    deducted_fen: int = 0
    returned_fen: int = 0
    accepted_keys: set[tuple[int, datetime]] = field(default_factory=set, repr=False)

    def merge(self, other: IngestReport) -> None:
        for name in self.__dataclass_fields__:
            if name != "accepted_keys":
                setattr(self, name, getattr(self, name) + getattr(other, name))
        self.accepted_keys |= other.accepted_keys


@dataclass
class _Batch:
    """Working state of one batch inside its transaction."""

    received_at: datetime
    profiles: dict[int, MeterProfile]
    report: IngestReport
    quarantine: list[QuarantineItem] = field(default_factory=list)
    merges: dict[int, Merge] = field(default_factory=dict)
    position: dict[int, int] = field(default_factory=dict)  # meter → first seen, 0…

    def meter_order(self, row: tuple[Any, ...]) -> int:
        """Sort key of a stored row whose first column is the meter id."""
        return self.position[row[0]]


class Ingestor:
    """Long-lived: keeps tariff and zone caches between batches. Thread-compatible, not
    thread-safe: give each worker its own."""

    def __init__(
        self,
        db: Database,
        outbox: control_send.Outbox | None = None,
        *,
        fast_lane: bool = True,
        keep_state: bool = True,
    ) -> None:
        self.db = db
        # The lane for the common case (billing/fast_lane.py); it and the kept state are off
        # only in the tests that prove they change nothing.
        self.fast_lane = fast_lane
        self.outbox = outbox or DatabaseOutbox(db.clock)
        self.charger = charging.Charger()
        self.lane = FastLane()
        # What the last batch wrote, kept while nobody else writes (billing/ingest_state.py).
        self.state = IngestState(enabled=keep_state)
        self._config_version: int | None = None
        self._profiles: dict[int, MeterProfile] = {}
        self._assignments: dict[int, list[Assignment]] = {}
        self._control_version: int | None = None
        # Caches checked against the database (config counter, control counter, tariff versions)
        # since the kept state last lost its proof: while it holds, nobody wrote since, so
        # they need no check again.
        self._checked: set[str] = set()
        self._watch: dict[int, int] = {}

    def ingest(
        self, readings: Sequence[IncomingReading], *, received_at: datetime | None = None
    ) -> IngestReport:
        """Ingest one batch and return after it is committed."""
        try:
            with self.db.transaction() as conn:
                report = self.ingest_in(conn, readings, received_at or self.db.clock())
        except BaseException:
            self.state.forget()
            raise
        self.state.committed()
        return report

    def ingest_in(
        self,
        conn: Connection,
        readings: Sequence[IncomingReading],
        received_at: datetime,
        *,
        quarantine_rejects: bool = True,
    ) -> IngestReport:
        """Ingest one batch inside the caller's transaction (for use cases such as opening an
        account, which store a reading and other records atomically). With
        ``quarantine_rejects=False`` readings that do not fit are only counted, not stored again
        (used when re-checking readings that already sit in the quarantine)."""
        meter_ids = {r.meter_id for r in readings}
        self.state.begin(conn)
        if not self.state.nothing_changed:
            self._checked = set()
        cursor_rows = self.state.cursor_rows(conn, meter_ids)  # locked on PostgreSQL
        batch = _Batch(
            received_at=received_at,
            profiles=self._meter_config(conn, meter_ids),
            report=IngestReport(received=len(readings)),
        )
        lane: dict[int, LaneMeter] = {}
        if self.fast_lane:
            lane, batch.report.duplicates = self.lane.take(
                readings, cursor_rows, batch.profiles, self._assignments
            )
            if lane:
                # Rows of both lanes are written in the order the general path alone would
                # write them: meters in order of their first reading in the batch (sorting is
                # stable, so each meter's rows keep theirs).
                seen = dict.fromkeys(r.meter_id for r in readings)
                batch.position = {meter_id: i for i, meter_id in enumerate(seen)}
                readings = [r for r in readings if r.meter_id not in lane]
        cursors = {
            m: metering_repository.cursor_reading(m, row)
            for m, row in cursor_rows.items()
            if m not in lane
        }
        candidates = self._candidates(conn, readings, batch)
        latest = self._place(conn, candidates, cursors, batch)
        accepted = [reading for merge in batch.merges.values() for reading in merge.accepted]
        received = instant_int(received_at)
        stored = metering_repository.reading_rows(accepted, received)
        moved = [metering_repository.cursor_row(reading) for reading in latest.values()]
        moved.extend(self.lane.cursor_rows(lane))
        metering_repository.save_cursor_rows(conn, moved, cursor_rows)
        if quarantine_rejects:
            metering_repository.quarantine_items(conn, batch.quarantine, received_at)
        batch.report.accepted = len(stored) + sum(len(meter.new) for meter in lane.values())
        batch.report.accepted_keys = {(r.meter_id, r.measured_at) for r in accepted}
        batch.report.accepted_keys.update(
            (meter.meter_id, new.at) for meter in lane.values() for new in meter.new
        )
        batch.report.quarantined = len(batch.quarantine)
        saved, lane_lines = self._bill(conn, batch, lane)
        # The readings last: the lane's carry the line of the interval they end (billing.lines),
        # known only once priced. Billing reads no reading of this batch from the table.
        if lane:
            stored = sorted(
                [*stored, *self.lane.reading_rows(lane, received, lane_lines)],
                key=batch.meter_order,
            )
        metering_repository.insert_reading_rows(conn, stored)
        self.state.end(conn, moved, saved)
        return batch.report

    def _meter_config(self, conn: Connection, meter_ids: set[int]) -> dict[int, MeterProfile]:
        """Meter profiles and assignments, cached until the configuration counter moves. The
        counter is read after the cursors are locked, so a concurrent change is never missed
        (and not at all when the kept state proves nobody else wrote since the last batch)."""
        version = self._config_version if self._still("config") else counters.read(conn)
        if version != self._config_version:
            self._config_version, self._profiles, self._assignments = version, {}, {}
        missing = meter_ids - self._profiles.keys()
        if missing:
            self._profiles.update(metering_repository.load_profiles(conn, missing))
            known = missing & self._profiles.keys()
            self._assignments.update(billing_repository.load_assignments(conn, known))
        return {m: self._profiles[m] for m in meter_ids if m in self._profiles}

    # -- placing readings -------------------------------------------------------------------

    def _candidates(
        self, conn: Connection, readings: Sequence[IncomingReading], batch: _Batch
    ) -> dict[int, list[Reading]]:
        """Known meters' readings with their generation, sorted, unique per time."""
        generations = self._generations(conn, batch.profiles)
        by_meter: dict[int, dict[tuple[datetime, int], Reading]] = defaultdict(dict)
        for incoming in readings:
            profile = batch.profiles.get(incoming.meter_id)
            if profile is None:
                batch.quarantine.append(_unknown_meter(incoming))
                continue
            try:
                bands = bands_from_mapping(incoming.bands)
                problem = register_problem(profile, incoming.total, bands, REGISTER_PLACES)
            except ValidationError as error:  # an unknown band name
                problem = str(error)
            if problem is not None:  # one bad reading must not fail its whole batch
                batch.quarantine.append(_as_sent_item(profile, incoming, problem))
                continue
            settled = self._settled(incoming)
            if settled is not None:  # billing it would post to a closed account after its refund
                batch.quarantine.append(
                    _as_sent_item(profile, incoming, settled, QuarantineReason.SETTLED)
                )
                continue
            reading = Reading(
                meter_id=incoming.meter_id,
                generation=_generation_at(generations.get(incoming.meter_id), incoming.measured_at),
                measured_at=incoming.measured_at,
                total=incoming.total,
                bands=bands,
                source=incoming.source,
            )
            seen = by_meter[incoming.meter_id].get(order_key(reading))
            if seen is None:
                by_meter[incoming.meter_id][order_key(reading)] = reading
            elif seen.same_values(reading):
                batch.report.duplicates += 1
            else:
                batch.quarantine.append(
                    _quarantined(
                        profile,
                        reading,
                        QuarantineReason.CONFLICTING_DUPLICATE,
                        "differs from a reading at the same time in the same batch",
                    )
                )
        return {
            meter_id: sorted(found.values(), key=order_key) for meter_id, found in by_meter.items()
        }

    def _settled(self, incoming: IncomingReading) -> str | None:
        """Why a reading cannot be billed: it lies strictly inside the span of a closed account,
        whose billing was settled (re-pricing would post to it after its refund)."""
        for held in self._assignments.get(incoming.meter_id, ()):
            end = held.end_at
            if held.settled and end is not None and held.start_at < incoming.measured_at < end:
                return (
                    f"measured while the meter belonged to account {held.account_id}, "
                    "closed and settled since"
                )
        return None

    @staticmethod
    def _generations(
        conn: Connection, profiles: dict[int, MeterProfile]
    ) -> dict[int, list[tuple[datetime, int]]]:
        replaced = [meter_id for meter_id, profile in profiles.items() if profile.generation > 0]
        return metering_repository.load_replacements(conn, replaced)

    def _place(
        self,
        conn: Connection,
        candidates: dict[int, list[Reading]],
        cursors: dict[int, Reading],
        batch: _Batch,
    ) -> dict[int, Reading]:
        """Merge each meter's readings into its sequence: after the cursor in the common case,
        among the stored tail (one query for all late meters) otherwise. Returns each meter's
        new latest reading, where the cursor has to move."""
        late = {
            meter_id: readings[0].measured_at
            for meter_id, readings in candidates.items()
            if meter_id in cursors and order_key(readings[0]) <= order_key(cursors[meter_id])
        }
        tails = metering_repository.load_tails(conn, late)
        latest: dict[int, Reading] = {}
        for meter_id, readings in candidates.items():
            cursor = cursors.get(meter_id)
            existing = tails.get(meter_id) or ([cursor] if cursor is not None else [])
            merge = merge_readings(batch.profiles[meter_id], existing, readings)
            batch.merges[meter_id] = merge
            batch.report.duplicates += merge.duplicates
            batch.report.late += int(merge.late)
            for reading, verdict in merge.rejected:
                assert verdict.reason_code is not None
                batch.quarantine.append(
                    _quarantined(
                        batch.profiles[meter_id], reading, verdict.reason_code, verdict.reason
                    )
                )
            if merge.sequence and (
                cursor is None or order_key(merge.sequence[-1]) > order_key(cursor)
            ):
                latest[meter_id] = merge.sequence[-1]
        return latest

    # -- pricing and posting -------------------------------------------------------------------

    def _bill(
        self, conn: Connection, batch: _Batch, lane: dict[int, LaneMeter]
    ) -> tuple[dict[TotalKey, PeriodTotal], dict[tuple[int, int], charging.LineRow]]:
        """Price, post and decide; return the running totals as saved, and the lane's lines by
        (meter, stored time of the reading that ends the interval) for its reading rows."""
        work = {m: merge for m, merge in batch.merges.items() if merge.reprice_from is not None}
        if not work and not lane:
            return {}, {}
        pairs = {m: intervals(merge.sequence, merge.reprice_from or 0) for m, merge in work.items()}
        meters = [*pairs, *lane]
        assignments = {m: self._assignments.get(m, []) for m in meters}
        self.charger.prepare(
            conn, meters, assignments, batch.profiles, unchanged=self._still("tariffs")
        )
        superseded = self._supersede(conn, work)
        spans = {m: (p[0][0].measured_at, p[-1][1].measured_at) for m, p in pairs.items() if p}
        spans.update((m, meter.span) for m, meter in lane.items())
        keys = self.charger.period_keys(spans, assignments, batch.profiles)
        totals, known = charging.load_totals(conn, meters, keys, superseded, self.state.totals)
        changed: dict[TotalKey, PeriodTotal] = {key: totals[key] for key in superseded}
        lane_lines: dict[tuple[int, int], charging.LineRow] = {}
        if lane:
            lane_lines, batch.report.intervals_priced, general = self.lane.charge(
                lane, self.charger.tariffs.get, self.charger.zone, totals, changed
            )
            pairs.update(general)
        rows, priced = self.charger.charge(pairs, assignments, batch.profiles, totals, changed)
        batch.report.intervals_priced += priced
        if len(rows) > 1 and lane:
            rows.sort(key=batch.meter_order)  # handed back by the lane: in the general order
        billing_repository.insert_lines(conn, rows)
        by_account = {a.account_id: a for found in assignments.values() for a in found}
        balances = postings.post_due(
            conn,
            changed,
            by_account,
            batch.profiles,
            batch.received_at,
            batch.report,
            self.state.balances,
        )
        billing_repository.save_totals(conn, changed, known)
        if any(assignment.quantity for assignment in by_account.values()):
            # A quantity account's balance is its quantity, which moves with every use, also
            # use that posts no fen (a free allowance, a sub-fen interval): it is decided on
            # whenever its use moved. Its placeholder is replaced by the quantity left.
            using = {
                key[1]
                for key in changed
                if by_account[key[1]].quantity and not by_account[key[1]].settled
            }
            balances = quantity.control_balances(  # after the totals are saved
                conn, {**dict.fromkeys(using, 0), **balances}
            )
        control.evaluate_in(
            conn,
            balances=self._near_threshold(conn, balances),
            at=batch.received_at,
            cause=Cause.DEDUCTION,
            outbox=self.outbox,
        )
        return changed, lane_lines

    def _still(self, cache: str) -> bool:
        """Whether ``cache`` was checked since the kept state's proof last broke (then it is
        still current); either way it counts as checked from now on."""
        still = self.state.nothing_changed and cache in self._checked
        self._checked.add(cache)
        return still

    def _near_threshold(self, conn: Connection, balances: dict[int, int]) -> dict[int, int]:
        """The accounts a deduction could move across a threshold: a falling balance decides
        nothing above the highest alarm/cut threshold (restores come from recharges and ticks).
        Thresholds are cached until the control-policy counter moves."""
        version = (
            self._control_version
            if self._still("control")
            else counters.read(conn, counters.CONTROL_POLICY)
        )
        if version != self._control_version:
            self._control_version, self._watch = version, {}
        missing = balances.keys() - self._watch.keys()
        if missing:
            self._watch.update(control.watch_thresholds(conn, missing))
        return {
            account: balance
            for account, balance in balances.items()
            if balance <= self._watch[account]
        }

    def _supersede(
        self, conn: Connection, work: dict[int, Merge]
    ) -> dict[TotalKey, list[tuple[int, Decimal]]]:
        """Deactivate the lines a late reading makes wrong; remember what they counted
        (quantity in millionths, cost)."""
        starts = {
            m: merge.sequence[merge.reprice_from or 0].measured_at
            for m, merge in work.items()
            if merge.late
        }
        removed: dict[TotalKey, list[tuple[int, Decimal]]] = defaultdict(list)
        for meter_id, line in billing_repository.supersede_lines(conn, starts):
            key = (meter_id, line.account_id, line.period_key)
            removed[key].append((line.quantity_millionths, line.cost))
        return removed


def _generation_at(replacements: list[tuple[datetime, int]] | None, measured_at: datetime) -> int:
    generation = 0
    for replaced_at, after in replacements or ():
        if replaced_at <= measured_at:
            generation = after
    return generation


def _quarantined(
    profile: MeterProfile, reading: Reading, code: QuarantineReason, reason: str
) -> QuarantineItem:
    return QuarantineItem(
        organisation_id=profile.organisation_id,
        meter_id=profile.meter_id,
        source_ref=f"meter:{profile.meter_id}",
        measured_at=reading.measured_at,
        payload=_payload(reading.total, reading.bands, reading.source.value, reading.generation),
        reason_code=code,
        reason=reason,
    )


def _as_sent_item(
    profile: MeterProfile,
    incoming: IncomingReading,
    problem: str,
    code: QuarantineReason = QuarantineReason.MALFORMED,
) -> QuarantineItem:
    return QuarantineItem(
        organisation_id=profile.organisation_id,
        meter_id=profile.meter_id,
        source_ref=f"meter:{profile.meter_id}",
        measured_at=incoming.measured_at,
        payload=_as_sent(incoming),
        reason_code=code,
        reason=problem,
    )


def _unknown_meter(incoming: IncomingReading) -> QuarantineItem:
    return QuarantineItem(
        organisation_id=None,
        meter_id=None,
        source_ref=f"meter:{incoming.meter_id}",
        measured_at=incoming.measured_at,
        payload=_as_sent(incoming),
        reason_code=QuarantineReason.UNKNOWN_METER,
        reason=f"no meter with id {incoming.meter_id}",
    )


def _as_sent(incoming: IncomingReading) -> dict[str, object]:
    """The payload of a reading quarantined before it became a :class:`Reading`: band registers
    under unknown names are kept as sent, beside the known form (which then has none)."""
    try:
        return _payload(
            incoming.total, bands_from_mapping(incoming.bands), incoming.source.value, None
        )
    except ValidationError:
        payload = _payload(incoming.total, None, incoming.source.value, None)
        payload["bands_as_sent"] = {str(k): f"{v}" for k, v in (incoming.bands or {}).items()}
        return payload


def _payload(
    total: Decimal, bands: tuple[Decimal, ...] | None, source: str, generation: int | None
) -> dict[str, object]:
    return {
        "total": f"{total:f}",
        "bands": [f"{b:f}" for b in bands] if bands else None,
        "source": source,
        "generation": generation,
    }
