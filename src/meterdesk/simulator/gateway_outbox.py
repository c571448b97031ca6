"""Store-and-forward of a virtual gateway: what to publish, what to resend, what is history (pure).

- While the uplink is up, each reading becomes a ``REALTIME`` report that stays *pending* until
  the platform acknowledges it (``report_reply`` with ``res`` 1); a pending report is resent
  with the same ``msgid`` every ``resend_after_s`` (``res`` 0 asks for a resend at once).
- While the uplink is down, readings go to the *backlog*. Backlog and pending reports are
  bounded (the oldest are dropped, as a gateway's memory is finite), and ``due`` hands out at
  most a burst at a time, so a platform that never acknowledges cannot make the gateway flood
  the broker.
- On reconnect, the backlog and every report still pending from before the outage (the platform
  may or may not have received those: overlap) are sent as ``HISTORY`` reports of at most
  ``history_chunk`` meter entries, with new ``msgid`` values, and are pending like any report.

Invariants: a ``msgid`` is never reused for different content (``{sn}-{run}-{counter}``, the run
part distinguishes simulator runs); nothing is dropped while pending; ``now_s`` is a monotonic
reading used only for resend timing, measurement times are inside the reports.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from meterdesk.devices.uplink import MeterReport, Report, Reported

DEFAULT_BACKLOG = 100_000  # meter entries kept while the uplink is down
DEFAULT_MAX_PENDING = 1_000  # reports waiting for an acknowledgement
DEFAULT_BURST = 100  # reports published per call of ``due``


@dataclass
class _Pending:
    report: Report
    sent_at_s: float | None = None
    resend_now: bool = False


class Outbox:
    def __init__(
        self,
        sn: str,
        run: str,
        *,
        resend_after_s: float = 30.0,
        history_chunk: int = 20,
        backlog_limit: int = DEFAULT_BACKLOG,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.sn, self.run = sn, run
        self.max_pending = max_pending
        self.resend_after_s, self.history_chunk = resend_after_s, history_chunk
        self._counter = 0
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._backlog: deque[MeterReport] = deque(maxlen=backlog_limit)

    def _msgid(self) -> str:
        self._counter += 1
        return f"{self.sn}-{self.run}-{self._counter:08d}"

    def _report(self, meters: list[MeterReport], source: str, now_ms: int) -> Report:
        reported = Reported.model_validate({"source": source, "meters": meters})
        report = Report(msgid=self._msgid(), sn=self.sn, timestamp=now_ms, reported=reported)
        self._pending[report.msgid] = _Pending(report)
        while len(self._pending) > self.max_pending:  # the gateway's memory is finite
            self._pending.popitem(last=False)
        return report

    def realtime(self, meters: list[MeterReport], now_ms: int) -> Report:
        """A new report to publish now (it stays pending until acknowledged)."""
        return self._report(meters, "REALTIME", now_ms)

    def buffer(self, meters: list[MeterReport]) -> None:
        """The uplink is down: keep the readings for the history resend."""
        self._backlog.extend(meters)

    def reconnected(self, now_ms: int) -> list[Report]:
        """Backlog and reports pending from before the outage, as new ``HISTORY`` reports."""
        entries = [
            entry for pending in self._pending.values() for entry in pending.report.reported.meters
        ]
        self._pending.clear()
        entries.extend(self._backlog)
        self._backlog.clear()
        chunk = self.history_chunk
        return [
            self._report(entries[at : at + chunk], "HISTORY", now_ms)
            for at in range(0, len(entries), chunk)
        ]

    def acknowledge(self, msgid: str, ok: bool) -> None:
        pending = self._pending.get(msgid)
        if pending is None:
            return
        if ok:
            del self._pending[msgid]
        else:
            pending.resend_now = True

    def due(self, now_s: float, limit: int = DEFAULT_BURST) -> list[Report]:
        """Up to ``limit`` reports to publish now (never sent, refused, or unacknowledged for
        too long), oldest first."""
        due: list[Report] = []
        for pending in self._pending.values():
            if len(due) >= limit:
                break
            stale = pending.sent_at_s is None or now_s - pending.sent_at_s >= self.resend_after_s
            if stale or pending.resend_now:
                pending.sent_at_s, pending.resend_now = now_s, False
                due.append(pending.report)
        return due

    def is_pending(self, msgid: str) -> bool:
        return msgid in self._pending

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def backlog_count(self) -> int:
        return len(self._backlog)
