"""What an ingestor wrote in its last batch, kept for the next one while provably nobody else wrote.

Every batch reads back the cursors of its meters, their running totals and the balances it posts
to — mostly values the same ingestor wrote itself a batch or two before. On SQLite the ingestor
keeps them between batches (stage A.2 of docs/decisions/0004-p1-floor.md) as long as it can prove
that the database is exactly as its last batch left it:

- that batch's commit was reported (:meth:`IngestState.committed`; a batch inside another use
  case's transaction that does not report it leaves nothing usable behind);
- the next batch runs on the same driver connection;
- ``PRAGMA data_version`` of that connection is unchanged: no other connection — another thread,
  another process — committed anything since;
- the connection's ``total_changes`` is what it was at the end of the batch: nothing else was
  written through this connection either (the pool lends it to other users between batches).

Read inside the batch's ``BEGIN IMMEDIATE``, when no one else can commit, these prove that every
kept value is what a query would return — and that nothing else changed either, so the
ingestor also skips its configuration checks (:attr:`IngestState.nothing_changed`).

That first proof breaks whenever anything at all committed in between, which in a running
platform (the command executor, the notification sender, a poll batch) is nearly always. So
there is a second, narrower one: the marker of ``db/counters.py`` is what it was at the end of
the batch, its flag still down. The batch lowers the flag after its own writes; the first row
written to ``meter_cursors``, ``period_totals`` or ``ledger_accounts`` after that — by any
connection of any process, through any code path — raises it and sets a fresh value (a
trigger). Then the kept values are current (they are rows of those tables only), while anything
else may have changed: the configuration checks run again. A database without the triggers
(created before them) has only the first proof.

Anything else empties the cache. On PostgreSQL it is never used: there reading the cursors is
also taking their row locks, and other writers cannot be ruled out this way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection

from meterdesk.billing import repository as billing_repository
from meterdesk.billing.model import PeriodTotal
from meterdesk.billing.repository import TotalKey
from meterdesk.db import counters
from meterdesk.ledger import repository as ledger
from meterdesk.ledger.repository import Balance
from meterdesk.metering import repository as metering_repository

# Kept entries beyond which the cache starts again empty (memory stays bounded on a large site;
# the next batch simply reads from the database).
MAX_ENTRIES = 1_000_000


class IngestState:
    """One per :class:`~meterdesk.billing.ingest.Ingestor`. Each method that reads takes what it
    can from the cache when the batch began with a proof (:meth:`begin`), the rest from the
    database, and remembers both."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled  # off: every batch reads everything (tests compare both ways)
        # (driver connection, data_version, total_changes, kept-table marker) after the last
        # committed batch
        self._proof: _Mark | None = None
        self._pending: _Mark | None = None
        self._unchanged = False  # the first proof held: nothing at all was written since
        self._marker: bool | None = None  # the database has the marker's triggers (checked once)
        self._active = False  # this batch reads through the cache (SQLite, enabled)
        self._opened: Connection | None = None  # the transaction open() checked
        self._reset()

    def _reset(self) -> None:
        self._cursors: dict[int, tuple[Any, ...] | None] = {}
        # (meter, period) → {account: total}; a present (meter, period) lists every stored total
        self._totals: dict[tuple[int, str], dict[int, PeriodTotal]] = {}
        self._balances: dict[int, Balance] = {}
        self._lent: list[dict[int, Balance]] = []  # handed to the batch, updated by the posting
        self._cached = False  # whether this batch may use what is kept

    @property
    def usable(self) -> bool:
        """Whether this batch began with a proof that the kept values are current."""
        return self._cached

    @property
    def nothing_changed(self) -> bool:
        """Whether this batch began with the first proof: nothing at all was written since the
        last batch (configuration and tariffs included)."""
        return self._cached and self._unchanged

    def open(self, conn: Connection) -> None:
        """For a use case that ingests inside its own transaction and writes other things before
        the batch (the MQTT group commit): check the proof now, before those writes. Pair with
        :meth:`seal` and :meth:`committed`."""
        self.begin(conn)
        self._opened = conn

    def begin(self, conn: Connection) -> None:
        """Start a batch (inside its transaction, after ``BEGIN IMMEDIATE``)."""
        if self._opened is conn:
            return  # checked by open() at the start of this transaction
        self._opened = None
        proof, self._proof, self._pending = self._proof, None, None
        self._lent = []
        self._active = self.enabled and conn.dialect.name == "sqlite"
        if not self._active:
            self._reset()
            return
        if self._marker is None:  # a database created before the triggers has none
            self._marker = counters.kept_state_marker_installed(conn)
        current = self._mark(conn)
        size = len(self._cursors) + len(self._totals) + len(self._balances)
        unchanged = proof is not None and proof[0] is current[0] and proof[1:3] == current[1:3]
        kept_tables_unchanged = unchanged or (
            proof is not None and proof[3] is not None and proof[3] == current[3]
        )
        if kept_tables_unchanged and size <= MAX_ENTRIES:
            self._cached, self._unchanged = True, unchanged
        else:
            self._reset()

    def cursor_rows(self, conn: Connection, meter_ids: set[int]) -> dict[int, tuple[Any, ...]]:
        """:func:`metering.repository.load_cursor_rows`, from the cache where it can."""
        if not self._active:
            return metering_repository.load_cursor_rows(conn, meter_ids)
        missing = meter_ids - self._cursors.keys() if self._cached else meter_ids
        loaded = metering_repository.load_cursor_rows(conn, missing)
        for meter_id in missing:
            self._cursors[meter_id] = loaded.get(meter_id)
        found = {}
        for meter_id in meter_ids:
            row = self._cursors[meter_id]
            if row is not None:
                found[meter_id] = row
        return found

    def totals(
        self, conn: Connection, meter_ids: Iterable[int], keys: set[str]
    ) -> dict[TotalKey, PeriodTotal]:
        """:func:`billing.repository.load_totals`, from the cache where every asked period of a
        meter is kept. The batch changes the kept objects themselves: that is safe because
        kept values are read only under the proof of a batch that committed (:meth:`begin`
        takes the proof away; only :meth:`committed` gives it back)."""
        if not self._active:
            return billing_repository.load_totals(conn, meter_ids, keys)
        meters = set(meter_ids)
        missing = (
            {m for m in meters for k in keys if (m, k) not in self._totals}  # no generator a meter
            if self._cached
            else meters
        )
        if missing:
            loaded = billing_repository.load_totals(conn, missing, keys)
            for meter_id in missing:
                for key in keys:
                    self._totals[(meter_id, key)] = {}
            for (meter_id, account_id, key), total in loaded.items():
                self._totals[(meter_id, key)][account_id] = total
        found: dict[TotalKey, PeriodTotal] = {}
        for meter_id in meters:
            for key in keys:
                for account_id, total in self._totals[(meter_id, key)].items():
                    found[(meter_id, account_id, key)] = total
        return found

    def balances(self, conn: Connection, account_ids: Iterable[int]) -> dict[int, Balance]:
        """:func:`ledger.repository.lock_balances`, from the cache where it can. The dict handed
        out is updated by the posting (``ledger.repository.apply_system_rows``) and read back at
        :meth:`end`."""
        if not self._active:
            return ledger.lock_balances(conn, account_ids)
        wanted = set(account_ids)
        missing = wanted - self._balances.keys() if self._cached else wanted
        found = {i: self._balances[i] for i in wanted - missing}
        found.update(ledger.lock_balances(conn, missing))
        self._lent.append(found)
        return found

    def end(
        self,
        conn: Connection,
        moved: Iterable[tuple[Any, ...]],
        totals: Mapping[TotalKey, PeriodTotal],
    ) -> None:
        """The batch's writes are done: keep the cursors it moved (``CURSOR_COLUMNS`` rows), the
        totals as it saved them and the balances as the posting left them; the proof becomes
        valid when the commit is reported."""
        if not self._active:
            return
        for row in moved:
            self._cursors[row[0]] = tuple(row[1:])
        for (meter_id, account_id, key), total in totals.items():
            kept = self._totals.get((meter_id, key))
            if kept is None:  # not loaded in this batch: never happens; stay safe
                self._reset()
                return
            kept[account_id] = total  # as saved (a new total is a new object)
        for lent in self._lent:
            self._balances.update(lent)
        self._lent = []
        if self._marker:
            counters.clear_kept_state_marker(conn)  # after this batch's own writes
        self._pending = self._mark(conn)

    def seal(self, conn: Connection) -> None:
        """The owner of the transaction (see :meth:`open`) wrote more after the batch, none of
        it cursors, running totals or balances: take the proof as of now."""
        if self._pending is not None and self._active:
            self._pending = self._mark(conn)

    def committed(self) -> None:
        """The batch's transaction committed: the next batch may use what is kept."""
        self._proof, self._pending, self._opened = self._pending, None, None

    def differences(self, conn: Connection) -> list[str]:
        """Every kept value that differs from the database (for tests: it must be none)."""
        found: list[str] = []
        stored_cursors = metering_repository.load_cursor_rows(conn, self._cursors.keys())
        for meter_id, row in self._cursors.items():
            stored = stored_cursors.get(meter_id)
            if (tuple(stored) if stored is not None else None) != row:
                found.append(f"cursor of meter {meter_id}: kept {row}, stored {stored}")
        meters = {meter_id for meter_id, _ in self._totals}
        keys = {key for _, key in self._totals}
        stored_totals = billing_repository.load_totals(conn, meters, keys)
        for (meter_id, key), kept in self._totals.items():
            stored_here = {
                a: t for (m, a, k), t in stored_totals.items() if (m, k) == (meter_id, key)
            }
            if set(kept) != set(stored_here) or any(
                _values(kept[a]) != _values(stored_here[a]) for a in kept
            ):
                found.append(
                    f"totals of meter {meter_id} in {key}: kept {kept}, stored {stored_here}"
                )
        stored_balances = ledger.lock_balances(conn, self._balances.keys())
        for account_id, balance in self._balances.items():
            if stored_balances.get(account_id) != balance:
                found.append(
                    f"ledger account {account_id}: kept {balance}, "
                    f"stored {stored_balances.get(account_id)}"
                )
        return found

    def _mark(self, conn: Connection) -> _Mark:
        driver = conn.connection.dbapi_connection
        assert driver is not None
        version = int(conn.exec_driver_sql("PRAGMA data_version").scalar_one())
        marker = counters.read_kept_state_marker(conn) if self._marker else None
        # The driver connection itself, not its id: a closed one kept here can never be mistaken
        # for a new one at the same address (sqlite3 connections take no weak references).
        return driver, version, int(driver.total_changes), marker

    def forget(self) -> None:
        """Start again empty (a batch failed, or ran in a transaction the ingestor does not
        own)."""
        self._proof = self._pending = self._opened = None
        self._reset()


_Mark = tuple[Any, int, int, int | None]


def _values(total: PeriodTotal) -> tuple[object, ...]:
    return total.quantity_millionths, total.exact_cost, total.posted_fen, total.postings
