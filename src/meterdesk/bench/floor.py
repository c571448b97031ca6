"""``meterdesk bench floor``: how fast could the leanest conceivable ingest be on this machine?

A measuring stick for the P1 decision (docs/decisions/0004-p1-floor.md), not meterdesk's
pipeline. It takes the workload of ``bench ingest`` (same seed, meters, duplicates, reordering,
late readings, rollovers, batches of 2,000) and runs it through a deliberately minimal loop into
a fresh SQLite file (WAL, ``synchronous=FULL``, one commit per batch) or, with
``--database-url``, a fresh PostgreSQL schema (``synchronous_commit`` as the server has it, on
by default; one commit per batch):

- plain integers (registers in 1e-4 kWh, prices in 1e-6 yuan, exact cost in 1e-10 yuan) and
  dicts; every meter's last reading and running total held in memory, so nothing is read back;
- the workload's TOU and tiered tariffs priced exactly (bands by the interval's local start
  hour, month tier blocks split exactly, running-total rounding half up to the fen);
- left out: the control loop, quarantine, re-pricing after a late reading (it is stored, and the
  interval across it was already priced as one), arrears, audit, foreign keys.

Two storage designs are timed, each beside the raw bulk insert of the same readings into the
same table (P1's baseline: one executemany in one transaction on SQLite; P1-pg's: one ``COPY`` in
one transaction on PostgreSQL):

- ``transfer``: the reading row carries its band and cost; one double-entry transfer row per
  posting (unique idempotency key, index by account); meter state and balances written once per
  batch;
- ``entry``: the reading row *is* the ledger entry (wallet debited, revenue credited, amount);
  no transfer table.

The pricing loop (:class:`_Lean`) is one and the same for both engines; only the writing of a
batch's rows differs (:mod:`meterdesk.bench.floor_stores`), each engine with its fastest honest
means: executemany in-process on SQLite; on PostgreSQL ``COPY`` for the inserted rows and one
statement over ``unnest`` arrays for each kind of per-batch update. "Python" time is the loop,
"database" time is the store's writing of the batch (driver encoding, round trips, server work, commit).

The bill of every meter is compared with the reference pricer (:mod:`meterdesk.bench.reference`)
so the loop is known to do the pricing work it claims; meters with a late reading differ where
the interval across it spans two bands.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from meterdesk.bench.floor_stores import REVENUE, Batch, Row, Store, open_store, scaled
from meterdesk.bench.reference import FLAT_TIERS, TOU_HOURS, TOU_PRICE, TOU_TIERS, expected_fen
from meterdesk.bench.workload import MODULUS, START, ZONE, Workload, build

UNITS = 10_000  # registers have 4 places
MICRO = 1_000_000  # prices have 6 places
EXACT_PER_FEN = UNITS * MICRO // 100  # exact cost is in 1e-10 yuan
DESIGNS = ("transfer", "entry")

Ladder = list[tuple[int | None, int]]  # (block's upper bound in 1e-4 kWh or None, price)


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
        return [(None if up is None else scaled(up, 4), scaled(price, 6)) for up, price in tiers]

    hours = [
        scaled(TOU_PRICE[[band for start, band in TOU_HOURS if start <= hour][-1]], 6)
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

    def __init__(self, workload: Workload, design: str, store: Store) -> None:
        self.design, self.store = design, store
        self.tariffs = _tariffs()
        self.meters = {m.index: (self.tariffs[m.tariff], m.ct) for m in workload.meters}
        self.zone = ZoneInfo(ZONE)
        self.modulus = scaled(MODULUS, 4)
        start = int(START.timestamp())
        # meter → [measured_at, register, month, quantity, exact, posted fen, postings]
        self.state: dict[int, list[Any]] = {
            m.index: [start, scaled(m.start_total, 4), "", 0, 0, 0, 0] for m in workload.meters
        }
        self.local: dict[int, tuple[int, str]] = {}  # instant → (local hour, month)
        self.received = int(datetime.now(UTC).timestamp())

    def batch(self, delivered: list[tuple[int, datetime, Decimal]], outcome: _Outcome) -> None:
        started = time.perf_counter()
        out = Batch()
        readings, transfers = out.readings, out.transfers
        moved: dict[int, int] = defaultdict(int)
        changed: dict[int, None] = {}
        for meter_id, at, total in sorted(set(delivered)):
            epoch, units = int(at.timestamp()), scaled(total, 4)
            current = self.state[meter_id]
            if epoch <= current[0]:  # a repeat (the unique index drops it) or a late reading
                out.repeats.append((meter_id, 1, epoch, self.received, units, "realtime"))
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
            entry: Row = (None, None, None)
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
        out.states = [(*self.state[m], m) for m in changed]
        out.balances = [(amount, account) for account, amount in moved.items()]
        written = time.perf_counter()
        self.store.write(out)
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


def _bulk(workload: Workload, store: Store) -> _Outcome:
    rows: list[Row] = [
        (m, 1, int(at.timestamp()), int(at.timestamp()), scaled(total, 4), "realtime")
        for m, at, total in workload.truth
    ]
    started = time.perf_counter()
    store.bulk(rows)
    return _Outcome(database_s=time.perf_counter() - started)


def _lean(workload: Workload, design: str, store: Store) -> _Outcome:
    lean, outcome = _Lean(workload, design, store), _Outcome()
    before = store.one("SELECT sum(balance_fen) FROM balances")
    for delivered in workload.batches:
        lean.batch(delivered, outcome)
    outcome.billed_fen = lean.billed()
    outcome.stored_readings = store.one("SELECT count(*) FROM readings")
    outcome.balances_conserved = store.one("SELECT sum(balance_fen) FROM balances") == before
    return outcome


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


def run(*, meters: int, rounds: int, seed: int, database_url: str | None = None) -> dict[str, Any]:
    workload = build(seed=seed, meters=meters, rounds=rounds)
    count = len(workload.truth)
    backend = "sqlite" if database_url is None else "postgresql"
    print(
        f"workload: seed {seed}, {meters} meters, {count} distinct readings, "
        f"{workload.delivered} delivered in {len(workload.batches)} batches; {backend}, bulk = "
        + ("one executemany" if database_url is None else "one COPY")
        + " in one transaction",
        flush=True,
    )
    expected = expected_fen(workload, {m.index: m.start_total for m in workload.meters})
    late = _with_late_readings(workload)
    results: dict[str, _Outcome] = {}
    with tempfile.TemporaryDirectory(prefix="meterdesk-floor-") as folder:
        for design in ("bulk", *DESIGNS):
            with open_store(design, workload, Path(folder), database_url) as store:
                outcome = (
                    _bulk(workload, store) if design == "bulk" else _lean(workload, design, store)
                )
            results[design] = outcome
            line = (
                f"{design:<9} {count / outcome.seconds:>9,.0f} readings/s; per reading: "
                f"Python {1e6 * outcome.python_s / count:5.1f} µs, "
                f"database {1e6 * outcome.database_s / count:5.1f} µs"
            )
            if outcome.billed_fen is not None:
                differ = {m for m, fen in expected.items() if outcome.billed_fen[m] != fen}
                line += (
                    f"; {outcome.seconds / results['bulk'].seconds:.2f}× bulk"
                    f"; bills as the reference pricer's: {len(expected) - len(differ)} of "
                    f"{len(expected)} meters, the rest all with a late reading: {differ <= late}"
                    f"; stored {outcome.stored_readings} of {count} distinct readings"
                    f"; balances conserved: {outcome.balances_conserved}"
                )
            print(line, flush=True)
    bulk_s = results["bulk"].seconds
    summary: dict[str, Any] = {
        "bench": "floor",
        "backend": backend,
        "seed": seed,
        "meters": meters,
        "readings": count,
    }
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
