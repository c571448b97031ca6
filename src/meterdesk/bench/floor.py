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
batch's rows differs (:class:`_Store`), each engine with its fastest honest means: executemany
in-process on SQLite; on PostgreSQL ``COPY`` for the inserted rows and one statement over
``unnest`` arrays for each kind of per-batch update. "Python" time is the loop, "database" time
is the store's writing of the batch (driver encoding, round trips, server work, commit).

The bill of every meter is compared with the reference pricer (:mod:`meterdesk.bench.reference`)
so the loop is known to do the pricing work it claims; meters with a late reading differ where
the interval across it spans two bands.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

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
_BASE = ("meter_id", "generation", "measured_at", "received_at", "register_total", "source")
_PRICED = (
    *_BASE,
    "band",
    "period",
    "cost_exact",
    "debit_account_id",
    "credit_account_id",
    "amount_fen",
)
_TRANSFER = (
    "idempotency_key",
    "debit_account_id",
    "credit_account_id",
    "amount_fen",
    "reason",
    "account_id",
    "meter_id",
    "period_key",
    "created_at",
)
_STATE = (
    "measured_at",
    "register_total",
    "period",
    "quantity",
    "exact",
    "posted_fen",
    "postings",
    "meter_id",
)


def _insert(table: str, columns: Sequence[str], marker: str, verb: str = "INSERT") -> str:
    return (
        f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join([marker] * len(columns))})"
    )


_BULK = _insert("readings", _BASE, "?")
# A reading after its meter's last one is new (the state in memory says so): a plain INSERT, so
# were the state ever wrong the unique index would raise rather than silently drop it. One at or
# before the last (a repeat or a late reading) is left to the unique index: INSERT OR IGNORE.
_INSERT_READING = _insert("readings", _PRICED, "?")
_INSERT_REPEAT = _insert("readings", _BASE, "?", verb="INSERT OR IGNORE")
_INSERT_TRANSFER = _insert("transfers", _TRANSFER, "?")
_UPSERT_STATE = ", ".join(f"{name} = excluded.{name}" for name in _STATE[:-1])
_SAVE_STATE = _insert("meter_state", _STATE, "?") + (
    f" ON CONFLICT (meter_id) DO UPDATE SET {_UPSERT_STATE}"
)
_MOVE_BALANCE = "UPDATE balances SET balance_fen = balance_fen + ? WHERE account_id = ?"

Ladder = list[tuple[int | None, int]]  # (block's upper bound in 1e-4 kWh or None, price)
Row = tuple[object, ...]


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


@dataclass
class _Batch:
    """The rows one batch writes, in one transaction."""

    readings: list[Row] = field(default_factory=list)  # new: after their meter's last reading
    repeats: list[Row] = field(default_factory=list)  # at or before it: repeats and late ones
    transfers: list[Row] = field(default_factory=list)
    states: list[Row] = field(default_factory=list)  # (*_STATE), upserted
    balances: list[Row] = field(default_factory=list)  # (amount, account): balance += amount


class _Store(Protocol):
    """Where the rows go: the only part of the run that differs between the engines."""

    def write(self, batch: _Batch) -> None:
        """Write one batch's rows and commit."""

    def bulk(self, rows: list[Row]) -> None:
        """The baseline: insert these ``_BASE`` rows into ``readings`` in one transaction."""

    def one(self, query: str) -> int: ...


class _Lean:
    """The minimal loop: state in memory, one commit per batch."""

    def __init__(self, workload: Workload, design: str, store: _Store) -> None:
        self.design, self.store = design, store
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
        out = _Batch()
        readings, transfers = out.readings, out.transfers
        moved: dict[int, int] = defaultdict(int)
        changed: dict[int, None] = {}
        for meter_id, at, total in sorted(set(delivered)):
            epoch, units = int(at.timestamp()), _scaled(total, 4)
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


class _SQLite:
    """A fresh SQLite file: WAL, ``synchronous=FULL``, executemany in-process."""

    def __init__(self, path: Path, workload: Workload) -> None:
        self.conn = conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO balances VALUES (?, ?)", _opening_balances(workload))
        conn.execute("COMMIT")

    def write(self, batch: _Batch) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT_READING, batch.readings)
        conn.executemany(_INSERT_REPEAT, batch.repeats)
        conn.executemany(_INSERT_TRANSFER, batch.transfers)
        conn.executemany(_SAVE_STATE, batch.states)
        conn.executemany(_MOVE_BALANCE, batch.balances)
        conn.execute("COMMIT")

    def bulk(self, rows: list[Row]) -> None:
        self.conn.execute("BEGIN")
        self.conn.executemany(_BULK, rows)
        self.conn.execute("COMMIT")

    def one(self, query: str) -> int:
        return int(self.conn.execute(query).fetchone()[0])

    def close(self) -> None:
        self.conn.close()


def _postgres_schema() -> list[str]:
    """``_SCHEMA`` on PostgreSQL: the same tables, columns, keys and checks, every integer a
    BIGINT (SQLite's are 64-bit) and the row ids identities (SQLite's ``INTEGER PRIMARY KEY``)."""
    return [
        statement.replace(
            "(id INTEGER PRIMARY KEY", "(id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
        ).replace("INTEGER", "BIGINT")
        for statement in _SCHEMA
    ]


def _copy_sql(table: str, columns: Sequence[str]) -> str:
    return f"COPY {table} ({', '.join(columns)}) FROM STDIN"


def _unnest(columns: Sequence[str], types: Sequence[str]) -> str:
    arrays = ", ".join(f"%s::{kind}[]" for kind in types)
    return f"SELECT * FROM unnest({arrays}) AS u({', '.join(columns)})"  # noqa: S608 - constants


# Duplicates: the readings after their meter's last one (about 82 % of the default workload's
# rows) are new by the state in memory and go by COPY, which cannot skip a conflict: it raises
# on one (the batch fails and the run with it), so a wrong state cannot store a reading twice,
# and a stored count other than the distinct readings' shows it losing one. The readings at or
# before their meter's last one (repeats and late ones) go by one INSERT over arrays with
# ON CONFLICT DO NOTHING: the unique index decides, as INSERT OR IGNORE does on SQLite. Staging
# every reading in a temporary table by COPY to INSERT ... SELECT ... ON CONFLICT from it writes
# each row twice for the sake of the repeats (measured: 1.5 to 4 µs more per reading).
_PG_INSERT_REPEATS = (
    f"INSERT INTO readings ({', '.join(_BASE)}) "
    + _unnest(_BASE, ("bigint",) * 5 + ("text",))
    + " ON CONFLICT DO NOTHING"
)
_PG_SAVE_STATE = (
    f"INSERT INTO meter_state ({', '.join(_STATE)}) "
    + _unnest(
        _STATE, ("bigint", "bigint", "text", "bigint", "bigint", "bigint", "bigint", "bigint")
    )
    + f" ON CONFLICT (meter_id) DO UPDATE SET {_UPSERT_STATE}"
)
_PG_MOVE_BALANCES = (
    "UPDATE balances SET balance_fen = balance_fen + u.amount "
    "FROM unnest(%s::bigint[], %s::bigint[]) AS u(amount, account_id) "
    "WHERE balances.account_id = u.account_id"
)


def _columns(rows: list[Row]) -> list[str]:
    """The rows' columns as PostgreSQL array literals, one ``%s::type[]`` parameter each.

    psycopg adapts a list of ints element by element (measured: 6.3 ms for a batch's 8 columns
    of 1,600 values, more than the server's work on the statement); joined into literals here and
    parsed by the server, under 1 ms."""
    return ["{" + ",".join(map(_element, column)) + "}" for column in zip(*rows, strict=True)]


def _element(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


class _Postgres:
    """A fresh scratch schema (``floor_<design>_<pid>_<random>``), dropped by :meth:`close`;
    nothing outside it is touched. psycopg 3 directly, one transaction per batch."""

    def __init__(self, url: str, design: str, workload: Workload) -> None:
        self.conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
        self.schema = f"floor_{design}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.conninfo, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
        try:
            self.conn = conn = psycopg.connect(self.conninfo)
        except BaseException:
            self._drop()
            raise
        try:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            for statement in _postgres_schema():
                conn.execute(statement)
            self._copy("balances", ("account_id", "balance_fen"), _opening_balances(workload))
            conn.commit()
            conn.execute("ANALYZE balances")  # as a long-lived table would be; not timed
            conn.commit()
        except BaseException:
            self.close()
            raise

    def _copy(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        if not rows:
            return
        with self.conn.cursor() as cursor, cursor.copy(_copy_sql(table, columns)) as copy:
            for row in rows:
                copy.write_row(row)

    def write(self, batch: _Batch) -> None:
        conn = self.conn
        self._copy("readings", _PRICED, batch.readings)
        if batch.repeats:
            conn.execute(_PG_INSERT_REPEATS, _columns(batch.repeats))
        self._copy("transfers", _TRANSFER, batch.transfers)
        if batch.states:
            conn.execute(_PG_SAVE_STATE, _columns(batch.states))
        if batch.balances:
            conn.execute(_PG_MOVE_BALANCES, _columns(batch.balances))
        conn.commit()

    def bulk(self, rows: list[Row]) -> None:
        self._copy("readings", _BASE, rows)
        self.conn.commit()

    def one(self, query: str) -> int:
        found = self.conn.execute(query).fetchone()
        self.conn.commit()
        assert found is not None
        return int(found[0])

    def close(self) -> None:
        self.conn.close()
        self._drop()

    def _drop(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )


def _opening_balances(workload: Workload) -> list[Row]:
    rows: list[Row] = [(REVENUE, 0)]
    return rows + [(m.index + 1, _scaled(m.credit, 2)) for m in workload.meters]


@contextmanager
def _store(
    design: str, workload: Workload, folder: Path, database_url: str | None
) -> Iterator[_Store]:
    store: _SQLite | _Postgres = (
        _SQLite(folder / f"{design}.sqlite3", workload)
        if database_url is None
        else _Postgres(database_url, design, workload)
    )
    try:
        yield store
    finally:
        store.close()


def _bulk(workload: Workload, store: _Store) -> _Outcome:
    rows: list[Row] = [
        (m, 1, int(at.timestamp()), int(at.timestamp()), _scaled(total, 4), "realtime")
        for m, at, total in workload.truth
    ]
    started = time.perf_counter()
    store.bulk(rows)
    return _Outcome(database_s=time.perf_counter() - started)


def _lean(workload: Workload, design: str, store: _Store) -> _Outcome:
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
            with _store(design, workload, Path(folder), database_url) as store:
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
