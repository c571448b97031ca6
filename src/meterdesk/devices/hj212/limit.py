"""A limit on wrong HJ212 access passwords, per gateway (``MN``) and per remote address.

Every new guess costs an argon2 verification, so without a limit whoever reaches the port can
guess a gateway's password, and burn the CPU, as fast as they can send. :class:`PasswordLimiter`
counts the wrong passwords of each MN and of each address; ``limit`` of them within
``window_s`` lock that MN (from any address) or that address (for any MN) out:

- While locked out, a packet is refused **without** a verification, and its connection is
  closed, as is the connection whose packet began the lock-out (``on_refused``). The one
  exception is decided by the store: a (hash, PW) this process has already verified as right
  costs no verification and is let through, so a guesser cannot lock a working gateway out.
- The lock-out lasts ``lockout_s[0]`` and doubles with each lock-out in a row, up to
  ``lockout_s[1]``. After one ends, the next wrong password locks again at once (one guess per
  lock-out, not ``limit``); what was counted is forgotten once ``window_s`` has passed without a
  wrong password after the lock-out ended.
- A right password, verified, forgets its MN's count (a gateway whose password was corrected
  recovers at the end of its lock-out), but not its address's: a guesser who owns one gateway
  must not be able to clear its address by sending that gateway's packets between guesses.
  (The store does not call :meth:`right` for a password it had already verified, so that a
  guesser cannot hide between a working gateway's packets either.)
- Each table keeps at most ``max_entries`` keys: when full, the expired ones go first, then
  the longest quiet. An attacker rotating addresses can push addresses out, but each MN's own
  count still bounds the guesses at any one gateway.
- A lock-out is logged once (warning, with the MN and the address) and counted in ``stats``.

Thread-safe: the store calls it from the commit worker thread, the server reads its stats.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class LockoutStats:
    lockouts: int = 0  # lock-outs begun (of an MN or of an address)
    refused: int = 0  # packets refused unverified during a lock-out


@dataclass
class _Record:
    failures: deque[float]  # the times of the last wrong passwords (at most ``limit``)
    locked_until: float = 0.0
    strikes: int = 0  # lock-outs in a row: the next one lasts twice as long
    last: float = 0.0  # the last wrong password


@dataclass
class _Table:
    """Wrong passwords by one kind of key (MN or address)."""

    what: str  # in the log line
    limit: int
    records: OrderedDict[str, _Record] = field(default_factory=OrderedDict)


class PasswordLimiter:
    def __init__(
        self,
        *,
        per_mn: int = 5,
        per_address: int = 20,
        window_s: float = 600.0,
        lockout_s: tuple[float, float] = (60.0, 3600.0),
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(per_mn, per_address, max_entries) < 1 or window_s <= 0:
            raise ValueError("limits, window and table size must be positive")
        if not 0 < lockout_s[0] <= lockout_s[1]:
            raise ValueError("lock-out: give 0 < shortest <= longest")
        self.window_s, self.lockout_s, self.max_entries = window_s, lockout_s, max_entries
        self.clock = clock
        self.stats = LockoutStats()
        self.on_refused: Callable[[str], None] | None = None  # the server closes that connection
        self._mns = _Table("gateway", per_mn)
        self._addresses = _Table("address", per_address)
        self._lock = threading.Lock()

    def admits(self, address: str, mn: str, topic: str) -> bool:
        """False (counted, its connection closed) while the address or the MN is locked out."""
        with self._lock:
            now = self.clock()
            locked = self._locked(self._mns, mn, now) or self._locked(self._addresses, address, now)
            if locked:
                self.stats.refused += 1
        if locked:
            log.debug("HJ212: %s refused unverified: MN %r / %s locked out", topic, mn, address)
            self._refuse(topic)
        return not locked

    def wrong(self, address: str, mn: str, topic: str) -> None:
        """Count a wrong password; the limit reached locks out, logs once and closes ``topic``."""
        with self._lock:
            now = self.clock()
            began = [
                (table.what, seconds)
                for table, key in ((self._mns, mn), (self._addresses, address))
                if (seconds := self._count(table, key, now)) is not None
            ]
            self.stats.lockouts += len(began)
        for what, seconds in began:
            log.warning(
                "HJ212: %s locked out for %.0f s after wrong passwords: MN %r from %s",
                what,
                seconds,
                mn,
                address,
            )
        if began:
            self._refuse(topic)

    def right(self, mn: str) -> None:
        """A right password: the MN's wrong ones are forgotten."""
        with self._lock:
            self._mns.records.pop(mn, None)

    def tracked(self) -> tuple[int, int]:
        """(MNs, addresses) remembered now; for tests and the curious."""
        with self._lock:
            return len(self._mns.records), len(self._addresses.records)

    def _refuse(self, topic: str) -> None:
        if self.on_refused is not None:
            self.on_refused(topic)

    def _locked(self, table: _Table, key: str, now: float) -> bool:
        record = table.records.get(key)
        return record is not None and now < record.locked_until

    def _count(self, table: _Table, key: str, now: float) -> float | None:
        """Record one wrong password; the lock-out's length when this one begins one."""
        record = table.records.get(key)
        if record is not None and self._expired(record, now):
            del table.records[key]
            record = None
        if record is None:
            self._make_room(table, now)
            record = table.records[key] = _Record(deque(maxlen=table.limit))
        table.records.move_to_end(key)  # the longest quiet stay in front, to be dropped first
        record.last = now
        if now < record.locked_until:  # raced in beside the lock-out: it is already counted
            return None
        record.failures.append(now)
        on_probation = record.strikes > 0  # a lock-out ended a short while ago
        within = len(record.failures) == table.limit and record.failures[0] > now - self.window_s
        if not (on_probation or within):
            return None
        seconds = min(self.lockout_s[0] * float(2 ** min(record.strikes, 32)), self.lockout_s[1])
        record.strikes += 1
        record.locked_until = now + seconds
        record.failures.clear()
        return seconds

    def _expired(self, record: _Record, now: float) -> bool:
        """Nothing left to remember: no lock-out, no wrong password within the window."""
        return now >= max(record.locked_until, record.last) + self.window_s

    def _make_room(self, table: _Table, now: float) -> None:
        """Drop what has expired from the front (the longest quiet); full still: the first."""
        records = table.records
        while records and self._expired(next(iter(records.values())), now):
            records.popitem(last=False)
        if len(records) >= self.max_entries:
            records.popitem(last=False)
