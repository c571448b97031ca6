"""Latencies and checks of ``meterdesk bench control``, from what the simulated meters saw
(:class:`~meterdesk.bench.control_sim.Records`) and what the database holds.

- **Trip**: the reading that exhausted an account's credit is the first stored reading at which
  the reference bill (price × (register − opening), rounded half up to the fen) reaches the
  opening credit — the cut rule is "balance ≤ 0". Latency = the first trip frame (1C, 1A) on
  the meter's line − the moment that reading was published by its gateway.
- **Restore**: latency = the first close frame (1C, 1C) on the line after the recharge − the
  moment the bench called ``cashier.recharge``.
- A breakdown of each latency uses the command row's instants (decision taken in the ingest or
  recharge transaction = ``created_at``; executor about to send = ``sent_at``) against wall-clock
  times recorded next to the monotonic ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import Connection, Engine, func, select

from meterdesk.bench.control_sim import CLOSE, TRIP, Records
from meterdesk.billing.tables import accounts
from meterdesk.db.consistency import dangling_references, ledger_differences
from meterdesk.db.types import instant_int
from meterdesk.devices.tables import command_events, commands
from meterdesk.ledger.tables import transfers
from meterdesk.metering.tables import quarantine, readings

FEN = Decimal("0.01")


@dataclass(frozen=True)
class Controlled:
    """One account whose credit runs out during the run, and its meter."""

    address: str
    meter_id: int
    account_id: int
    credit_fen: int
    opening: Decimal
    price: Decimal


@dataclass
class Recharge:
    monotonic: float
    epoch: float


@dataclass
class Latencies:
    trip_s: list[float] = field(default_factory=list)
    restore_s: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)
    not_published: int = 0  # crossings by a reading the gateways did not publish (a poll)
    missing: list[str] = field(default_factory=list)  # what could not be measured, and why

    def part(self, name: str, seconds: float) -> None:
        self.parts.setdefault(name, []).append(seconds)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def reference_fen(room: Controlled, total: Decimal) -> int:
    amount = ((total - room.opening) * room.price).quantize(FEN, rounding=ROUND_HALF_UP)
    return int(amount * 100)


def stored_readings(conn: Connection, meter_id: int) -> list[tuple[int, Decimal]]:
    """(measured_at in epoch ms, register total) of a meter's accepted readings, in time order."""
    rows = conn.execute(
        select(readings.c.measured_at, readings.c.register_total)
        .where(readings.c.meter_id == meter_id)
        .order_by(readings.c.measured_at)
    ).all()
    return [(instant_int(at) // 1000, Decimal(total)) for at, total in rows]


def crossing(room: Controlled, stored: list[tuple[int, Decimal]]) -> int | None:
    """Epoch ms of the reading that exhausted the credit (balance ≤ 0), if any."""
    for at_ms, total in stored:
        if room.credit_fen - reference_fen(room, total) <= 0:
            return at_ms
    return None


def _command_times(conn: Connection, meter_id: int, kind: str) -> tuple[float, float] | None:
    """(created, sent) of the meter's first command of ``kind``, epoch seconds."""
    row = conn.execute(
        select(commands.c.created_at, commands.c.sent_at)
        .where(commands.c.meter_id == meter_id, commands.c.kind == kind)
        .order_by(commands.c.id)
        .limit(1)
    ).one_or_none()
    if row is None or row.sent_at is None:
        return None
    return row.created_at.timestamp(), row.sent_at.timestamp()


def _first_frame(
    records: Records, address: str, action: int, after: float
) -> tuple[float, float] | None:
    found = [
        (mono, epoch)
        for addr, kind, mono, epoch in records.frames
        if addr == address and kind == action and mono >= after
    ]
    return min(found) if found else None


def measure(
    engine: Engine,
    records: Records,
    rooms: Sequence[Controlled],
    recharges: dict[int, Recharge],
) -> Latencies:
    result = Latencies()
    with engine.connect() as conn:
        for room in rooms:
            _trip(conn, records, room, result)
            _restore(conn, records, room, recharges.get(room.account_id), result)
    return result


def _trip(conn: Connection, records: Records, room: Controlled, result: Latencies) -> None:
    at_ms = crossing(room, stored_readings(conn, room.meter_id))
    if at_ms is None:
        result.missing.append(f"{room.address}: the credit never ran out")
        return
    published = records.published.get((room.address, at_ms))
    if published is None:
        result.not_published += 1
        return
    frame = _first_frame(records, room.address, TRIP, published[0])
    if frame is None:
        result.missing.append(f"{room.address}: no trip frame reached the meter")
        return
    result.trip_s.append(frame[0] - published[0])
    times = _command_times(conn, room.meter_id, "relay_trip")
    if times is not None:
        result.part("trip_publish_to_decision_s", times[0] - published[1])
        result.part("trip_decision_to_send_s", times[1] - times[0])
        result.part("trip_send_to_wire_s", frame[1] - times[1])


def _restore(
    conn: Connection,
    records: Records,
    room: Controlled,
    recharge: Recharge | None,
    result: Latencies,
) -> None:
    if recharge is None:
        result.missing.append(f"{room.address}: never recharged (no confirmed trip)")
        return
    frame = _first_frame(records, room.address, CLOSE, recharge.monotonic)
    if frame is None:
        result.missing.append(f"{room.address}: no close frame reached the meter")
        return
    result.restore_s.append(frame[0] - recharge.monotonic)
    times = _command_times(conn, room.meter_id, "relay_close")
    if times is not None:
        result.part("restore_call_to_decision_s", times[0] - recharge.epoch)
        result.part("restore_decision_to_send_s", times[1] - times[0])
        result.part("restore_send_to_wire_s", frame[1] - times[1])


# --- checks ------------------------------------------------------------------------------------


def check(engine: Engine, records: Records, rooms: Sequence[Controlled]) -> dict[str, bool]:
    with engine.connect() as conn:
        checks = _ledger(conn)
        checks["controlled_bills_match_readings"] = all(
            _deducted_fen(conn, room.account_id)
            == reference_fen(room, stored_readings(conn, room.meter_id)[-1][1])
            for room in rooms
        )
        logs = {room.meter_id: _commands_of(conn, room.meter_id) for room in rooms}
        checks["each_account_cut_once_and_restored_once"] = all(
            [kind for kind, _ in log] == ["relay_trip", "relay_close"] for log in logs.values()
        )
        checks["every_command_confirmed_by_read_back"] = _all_confirmed(conn)
        checks["no_command_for_other_meters"] = _command_count(conn) == sum(map(len, logs.values()))
        held = conn.execute(select(func.count()).select_from(quarantine)).scalar_one()
        checks["nothing_quarantined"] = int(held) == 0
    checks["every_trip_and_close_reached_the_meter"] = all(
        _trip_then_close(records, room.address) for room in rooms
    )
    checks["every_relay_closed_at_the_end"] = not any(
        records.relay_open.get(room.address, True) for room in rooms
    )
    return checks


def _ledger(conn: Connection) -> dict[str, bool]:
    books = ledger_differences(conn)
    return {
        "entries_sum_to_zero": books["entries_sum"] == 0,
        "balances_equal_entries": books["balances_off"] == 0,
        "references_resolve": not any(dangling_references(conn).values()),
    }


def _deducted_fen(conn: Connection, account_id: int) -> int:
    # By wallet (a deduction debits the wallet or the arrears, a correction credits the
    # wallet): the account index holds no deductions.
    wallet, arrears = conn.execute(
        select(accounts.c.wallet_id, accounts.c.arrears_id).where(accounts.c.id == account_id)
    ).one()
    deducted = conn.execute(
        select(func.coalesce(func.sum(transfers.c.amount_fen), 0)).where(
            transfers.c.debit_account_id.in_((wallet, arrears)), transfers.c.reason == "deduction"
        )
    ).scalar_one()
    corrected = conn.execute(
        select(func.coalesce(func.sum(transfers.c.amount_fen), 0)).where(
            transfers.c.credit_account_id == wallet,
            transfers.c.reason == "deduction_correction",
        )
    ).scalar_one()
    return int(deducted) - int(corrected)


def _commands_of(conn: Connection, meter_id: int) -> list[tuple[str, str]]:
    rows = conn.execute(
        select(commands.c.kind, commands.c.status)
        .where(commands.c.meter_id == meter_id)
        .order_by(commands.c.id)
    ).all()
    return [(str(kind), str(status)) for kind, status in rows]


def _command_count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(commands)).scalar_one())


def _all_confirmed(conn: Connection) -> bool:
    """Every command confirmed, each by a read-back after it was sent."""
    rows = conn.execute(select(commands.c.id, commands.c.status)).all()
    for command_id, status in rows:
        events = conn.execute(
            select(command_events.c.event)
            .where(command_events.c.command_id == command_id)
            .order_by(command_events.c.id)
        ).scalars()
        if status != "confirmed" or list(events)[-2:] != ["sent", "confirmed"]:
            return False
    return True


def _trip_then_close(records: Records, address: str) -> bool:
    """The meter's line carried a trip, and a close after it."""
    mine = [
        kind for addr, kind, _, _ in sorted(records.frames, key=lambda f: f[2]) if addr == address
    ]
    return TRIP in mine and CLOSE in mine[mine.index(TRIP) :]
