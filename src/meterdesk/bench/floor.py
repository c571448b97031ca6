"""``meterdesk bench floor``: how fast could the leanest conceivable ingest be on this machine?

A measuring stick for the P1 decision (docs/decisions/0004-p1-floor.md), not meterdesk's
pipeline. It takes the workload of ``bench ingest`` (same seed, meters, duplicates, reordering,
late readings, rollovers, batches of 2,000) and runs it through a deliberately minimal loop into
a fresh SQLite file (WAL, ``synchronous=FULL``, one commit per batch):

- plain integers (registers in 1e-4 kWh, prices in 1e-6 yuan, exact cost in 1e-10 yuan) and
  dicts; every meter's last reading and running total held in memory, so nothing is read back;
- the workload's TOU and tiered tariffs priced exactly (bands by the interval's local start
  hour, month tier blocks split exactly, running-total rounding half up to the fen);
- left out: the control loop, quarantine, re-pricing after a late reading (it is stored, and the
  interval across it was already priced as one), arrears, audit, foreign keys.

Two storage designs are timed, each beside the raw bulk insert of the same readings (one
executemany in one transaction; P1's baseline):

- ``transfer``: the reading row carries its band and cost; one double-entry transfer row per
  posting (unique idempotency key, index by account); meter state and balances written once per
  batch;
- ``entry``: the reading row *is* the ledger entry (wallet debited, revenue credited, amount);
  no transfer table.

The bill of every meter is compared with the reference pricer (:mod:`meterdesk.bench.reference`)
so the loop is known to do the pricing work it claims; meters with a late reading differ where
the interval across it spans two bands.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from meterdesk.bench.reference import FLAT_TIERS, TOU_HOURS, TOU_PRICE, TOU_TIERS, expected_fen
from meterdesk.bench.workload import MODULUS, START, ZONE, Workload, build

UNITS = 10_000  # registers have 4 places
MICRO = 1_000_000  # prices have 6 places
EXACT_PER_FEN = UNITS * MICRO // 100  # exact cost is in 1e-10 yuan
REVENUE = 0  # the revenue account; wallet of meter i is account i + 1
DESIGNS = ("transfer", "entry")

_READINGS = (
    "CREATE TABLE readings (id INTEGER PRIMARY KEY, meter_id INTEGER NOT NULL, "
    "generation INTEGER NOT NULL, measured_at INTEGER NOT NULL, received_at INTEGER NOT NULL, "
    "register_total INTEGER NOT NULL, sharp INTEGER, peak INTEGER, flat INTEGER, valley INTEGER, "
    "source VARCHAR(20) NOT NULL, band VARCHAR(12), period VARCHAR(7), cost_exact INTEGER, "
    "debit_account_id INTEGER, credit_account_id INTEGER, amount_fen INTEGER, "
    "UNIQUE (meter_id, measured_at, generation))"
)
_SCHEMA = (
    _READINGS,
    "CREATE TABLE meter_state (meter_id INTEGER PRIMARY KEY, measured_at INTEGER NOT NULL, "
    "register_total INTEGER NOT NULL, period VARCHAR(7) NOT NULL, quantity INTEGER NOT NULL, "
    "exact INTEGER NOT NULL, posted_fen INTEGER NOT NULL, postings INTEGER NOT NULL)",
    "CREATE TABLE balances (account_id INTEGER PRIMARY KEY, balance_fen INTEGER NOT NULL)",
    "CREATE TABLE transfers (id INTEGER PRIMARY KEY, idempotency_key VARCHAR(200) NOT NULL "
    "UNIQUE, debit_account_id INTEGER NOT NULL, credit_account_id INTEGER NOT NULL, "
    "amount_fen INTEGER NOT NULL CHECK (amount_fen > 0), reason VARCHAR(40) NOT NULL, "
    "account_id INTEGER NOT NULL, meter_id INTEGER NOT NULL, period_key VARCHAR(7) NOT NULL, "
    "created_at INTEGER NOT NULL)",
    "CREATE INDEX ix_transfers_account ON transfers (account_id)",
)
_BULK = (
    "INSERT INTO readings (meter_id, generation, measured_at, received_at, register_total, "
    "source) VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_READING = (
    "INSERT OR IGNORE INTO readings (meter_id, generation, measured_at, received_at, "
    "register_total, source, band, period, cost_exact, debit_account_id, credit_account_id, "
    "amount_fen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_TRANSFER = (
    "INSERT INTO transfers (idempotency_key, debit_account_id, credit_account_id, amount_fen, "
    "reason, account_id, meter_id, period_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SAVE_STATE = (
    "INSERT INTO meter_state (measured_at, register_total, period, quantity, exact, posted_fen, "
    "postings, meter_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (meter_id) DO UPDATE SET "
    "measured_at = excluded.measured_at, register_total = excluded.register_total, "
    "period = excluded.period, quantity = excluded.quantity, exact = excluded.exact, "
    "posted_fen = excluded.posted_fen, postings = excluded.postings"
)
_MOVE_BALANCE = "UPDATE balances SET balance_fen = balance_fen + ? WHERE account_id = ?"

Ladder = list[tuple[int | None, int]]  # (block's upper bound in 1e-4 kWh or None, price)


def _scaled(value: Decimal, places: int) -> int:
    return int(value.scaleb(places))


@dataclass(frozen=True)
class _Tariff:
    band_of_hour: tuple[int, ...]  # base price (1e-6 yuan) by local hour
    ladder: Ladder

    def cost(self, hour: int, used: int, quantity: int) -> int:
        """Exact cost (1e-10 yuan) of ``quantity`` after ``used`` this month, blocks split."""
        base, cost, lower = self.band_of_hour[hour], 0, 0
        for upper, price in self.ladder:
            top = used + quantity if upper is None else min(upper, used + quantity)
            portion = top - max(used, lower)
            if portion > 0:
                cost += portion * (base + price)
            if upper is not None:
                lower = upper
        return cost


def _tariffs() -> dict[str, _Tariff]:
    def ladder(tiers: list[tuple[Decimal | None, Decimal]]) -> Ladder:
        return [(None if up is None else _scaled(up, 4), _scaled(price, 6)) for up, price in tiers]

    hours = [
        _scaled(TOU_PRICE[[band for start, band in TOU_HOURS if start <= hour][-1]], 6)
        for hour in range(24)
    ]
    return {
        "tou": _Tariff(tuple(hours), ladder(TOU_TIERS)),
        "tiered": _Tariff((0,) * 24, ladder(FLAT_TIERS)),
    }


@dataclass
class _Outcome:
    python_s: float = 0.0
    database_s: float = 0.0
    billed_fen: dict[int, int] | None = None
    stored_readings: int = 0
    balances_conserved: bool = True  # the balances' sum is what it was before the run

    @property
    def seconds(self) -> float:
        return self.python_s + self.database_s


class _Lean:
    """The minimal loop: state in memory, one commit per batch."""

    def __init__(self, workload: Workload, design: str, conn: sqlite3.Connection) -> None:
        self.design, self.conn = design, conn
        self.tariffs = _tariffs()
        self.meters = {m.index: (self.tariffs[m.tariff], m.ct) for m in workload.meters}
        self.zone = ZoneInfo(ZONE)
        self.modulus = _scaled(MODULUS, 4)
        start = int(START.timestamp())
        # meter → [measured_at, register, month, quantity, exact, posted fen, postings]
        self.state: dict[int, list[Any]] = {
            m.index: [start, _scaled(m.start_total, 4), "", 0, 0, 0, 0] for m in workload.meters
        }
        self.local: dict[int, tuple[int, str]] = {}  # instant → (local hour, month)
        self.received = int(datetime.now(UTC).timestamp())

    def batch(self, delivered: list[tuple[int, datetime, Decimal]], outcome: _Outcome) -> None:
        started = time.perf_counter()
        readings: list[tuple[object, ...]] = []
        transfers: list[tuple[object, ...]] = []
        moved: dict[int, int] = defaultdict(int)
        changed: dict[int, None] = {}
        for meter_id, at, total in sorted(set(delivered)):
            epoch, units = int(at.timestamp()), _scaled(total, 4)
            current = self.state[meter_id]
            if epoch <= current[0]:  # a repeat (the unique index drops it) or a late reading
                row = (meter_id, 1, epoch, self.received, units, "realtime")
                readings.append((*row, None, None, None, None, None, None))
                continue
            hour, month = self._local(current[0])
            if month != current[2]:
                current[2:7] = [month, 0, 0, 0, 0]
            tariff, ct = self.meters[meter_id]
            quantity = (units - current[1]) % self.modulus * ct
            cost = tariff.cost(hour, current[3], quantity)
            current[0], current[1] = epoch, units
            current[3] += quantity
            current[4] += cost
            posted = (current[4] + EXACT_PER_FEN // 2) // EXACT_PER_FEN
            due, current[5] = posted - current[5], posted
            changed[meter_id] = None
            wallet = meter_id + 1
            entry: tuple[object, ...] = (None, None, None)
            if due:
                current[6] += 1
                moved[wallet] -= due
                moved[REVENUE] += due
                if self.design == "transfer":
                    key = f"deduct:{meter_id}:{wallet}:{month}:{current[6]}:w"
                    transfers.append(
                        (key, wallet, REVENUE, due, "deduction", wallet, meter_id, month, epoch)
                    )
                else:
                    entry = (wallet, REVENUE, due)
            row = (meter_id, 1, epoch, self.received, units, "realtime")
            readings.append((*row, str(hour), month, cost, *entry))
        states = [(*self.state[m], m) for m in changed]
        balances = [(amount, account) for account, amount in moved.items()]
        written = time.perf_counter()
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(_INSERT_READING, readings)
        self.conn.executemany(_INSERT_TRANSFER, transfers)
        self.conn.executemany(_SAVE_STATE, states)
        self.conn.executemany(_MOVE_BALANCE, balances)
        self.conn.execute("COMMIT")
        done = time.perf_counter()
        outcome.python_s += written - started
        outcome.database_s += done - written

    def _local(self, epoch: int) -> tuple[int, str]:
        found = self.local.get(epoch)
        if found is None:
            seen = datetime.fromtimestamp(epoch, self.zone)
            found = self.local[epoch] = (seen.hour, f"{seen.year:04d}-{seen.month:02d}")
        return found

    def billed(self) -> dict[int, int]:
        """Fen posted per meter in its current month: the whole bill, as the bench workload
        stays inside one month."""
        return {meter: state[5] for meter, state in self.state.items()}


def _connect(path: Path, workload: Workload) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO balances VALUES (?, ?)",
        [(REVENUE, 0)] + [(m.index + 1, _scaled(m.credit, 2)) for m in workload.meters],
    )
    conn.execute("COMMIT")
    return conn


def _bulk(workload: Workload, conn: sqlite3.Connection) -> _Outcome:
    rows = [
        (m, 1, int(at.timestamp()), int(at.timestamp()), _scaled(total, 4), "realtime")
        for m, at, total in workload.truth
    ]
    started = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(_BULK, rows)
    conn.execute("COMMIT")
    return _Outcome(database_s=time.perf_counter() - started)


def _lean(workload: Workload, design: str, conn: sqlite3.Connection) -> _Outcome:
    lean, outcome = _Lean(workload, design, conn), _Outcome()
    before = _one(conn, "SELECT sum(balance_fen) FROM balances")
    for delivered in workload.batches:
        lean.batch(delivered, outcome)
    outcome.billed_fen = lean.billed()
    outcome.stored_readings = _one(conn, "SELECT count(*) FROM readings")
    outcome.balances_conserved = _one(conn, "SELECT sum(balance_fen) FROM balances") == before
    return outcome


def _one(conn: sqlite3.Connection, sql: str) -> int:
    return int(conn.execute(sql).fetchone()[0])


def _with_late_readings(workload: Workload) -> set[int]:
    """Meters with a reading delivered after a later one of theirs."""
    latest: dict[int, datetime] = {}
    late = set()
    for delivered in workload.batches:
        for meter, at, _ in delivered:
            if meter in latest and at < latest[meter]:
                late.add(meter)
            latest[meter] = max(at, latest.get(meter, at))
    return late


def run(*, meters: int, rounds: int, seed: int) -> dict[str, Any]:
    workload = build(seed=seed, meters=meters, rounds=rounds)
    count = len(workload.truth)
    print(
        f"workload: seed {seed}, {meters} meters, {count} distinct readings, "
        f"{workload.delivered} delivered in {len(workload.batches)} batches",
        flush=True,
    )
    expected = expected_fen(workload, {m.index: m.start_total for m in workload.meters})
    late = _with_late_readings(workload)
    results: dict[str, _Outcome] = {}
    with tempfile.TemporaryDirectory(prefix="meterdesk-floor-") as folder:
        for design in ("bulk", *DESIGNS):
            with _connect(Path(folder) / f"{design}.sqlite3", workload) as conn:
                outcome = (
                    _bulk(workload, conn) if design == "bulk" else _lean(workload, design, conn)
                )
            conn.close()
            results[design] = outcome
            line = (
                f"{design:<9} {count / outcome.seconds:>9,.0f} readings/s; per reading: "
                f"Python {1e6 * outcome.python_s / count:5.1f} µs, "
                f"database {1e6 * outcome.database_s / count:5.1f} µs"
            )
            if outcome.billed_fen is not None:
                differ = {m for m, fen in expected.items() if outcome.billed_fen[m] != fen}
                line += (
                    f"; bills as the reference pricer's: {len(expected) - len(differ)} of "
                    f"{len(expected)} meters, the rest all with a late reading: {differ <= late}"
                )
            print(line, flush=True)
    bulk_s = results["bulk"].seconds
    summary: dict[str, Any] = {"bench": "floor", "seed": seed, "meters": meters, "readings": count}
    for design, outcome in results.items():
        summary[design] = {
            "readings_per_s": round(count / outcome.seconds),
            "ratio_vs_bulk_insert": round(outcome.seconds / bulk_s, 2),
            "python_us": round(1e6 * outcome.python_s / count, 1),
            "database_us": round(1e6 * outcome.database_s / count, 1),
        }
        if outcome.billed_fen is not None:
            billed = outcome.billed_fen
            summary[design]["bills_differ_without_late_reading"] = sum(
                billed[m] != fen for m, fen in expected.items() if m not in late
            )
            summary[design]["stored_readings"] = outcome.stored_readings
            summary[design]["balances_conserved"] = outcome.balances_conserved
    print(json.dumps(summary, sort_keys=True))
    return summary
