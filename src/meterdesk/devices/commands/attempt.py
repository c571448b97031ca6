"""One attempt at one command: read the meter, send if needed, read back, record the outcome.

One attempt: read the meter → already in the desired state? confirm without sending → else
record "sent" (committed before the bytes leave) → send with a fresh validity window → wait the
aspect's settle delay → read back until the state shows or the settle time runs out → confirm,
or schedule a retry with exponential backoff, or fail with the reason. At the deadline a command
that was sent gets one last read-back; otherwise it fails "deadline passed".

Take-backs (退电) follow the same protocol on the meter's take-back counter
(:mod:`~meterdesk.devices.commands.take_back_attempt`). Recharges (meter billing) follow
:func:`~meterdesk.devices.commands.readback.plan_recharge`: the meter's purchase counter, read
before every send, decides between sending (with the same N), confirming (N is already there: a
lost reply) and failing (the counter is somewhere else: reconcile). A recharge is never sent
with a different N once it may have reached the meter.

Few write transactions per attempt. On SQLite every write transaction waits its turn for the one
write lock, behind whole ingest commits, so each one costs the command latency. What a read
showed (``device_status``: a cache of the meter, which the poller refreshes too) is therefore not
written on its own: it waits in :attr:`Attempt.unsaved` and is written, in the order read, in the
transaction of the next outcome — "snapshot + sent", "snapshot + confirmed", "snapshot + retry".
Every path of an attempt ends in such an outcome. Crash safety is unchanged: "sent" still commits
before the bytes leave; a crash loses at most a cached snapshot, which the next read rewrites.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection

from meterdesk.audit import service as audit
from meterdesk.devices.commands import (
    device_state,
    event_log,
    repository,
    take_back_attempt,
    writes,
)
from meterdesk.devices.commands.model import (
    ACKNOWLEDGED_ONLY,
    RELAY_ACTIONS,
    VALVE_ACTIONS,
    Aspect,
    Command,
    CommandKind,
    CommandSpec,
    CommandStatus,
    CommandTarget,
    deadline_passed,
    disagrees,
    next_attempt_at,
    no_answer,
    refused,
    validity_deadline,
)
from meterdesk.devices.commands.readback import (
    Check,
    RechargeStep,
    check,
    money_note,
    plan_recharge,
)
from meterdesk.devices.commands.replaced import failed_as_replaced
from meterdesk.devices.ports import DeviceError, DeviceRefusedError, MeterDriver, Snapshot
from meterdesk.notifications import queueing

if TYPE_CHECKING:
    from meterdesk.devices.commands.executor import CommandExecutor

SYSTEM_ACTOR = "system:commands"
_T = TypeVar("_T")
Write = Callable[[Connection], None]


@dataclass(frozen=True)
class Settle:
    delay_s: float  # after sending, before the first read-back
    timeout_s: float  # read back for this long, then retry
    poll_s: float  # between read-backs


DEFAULT_SETTLE: Mapping[Aspect, Settle] = {
    Aspect.RELAY: Settle(1.0, 10.0, 2.0),
    Aspect.PROTECT: Settle(1.0, 10.0, 2.0),
    Aspect.VALVE: Settle(8.0, 40.0, 2.0),  # valves take about 8 s to move
    Aspect.MONEY: Settle(0.5, 10.0, 2.0),
}


class Attempt:
    """One attempt at one command (a fresh object per claim)."""

    def __init__(
        self,
        executor: CommandExecutor,
        command: Command,
        target: CommandTarget,
        driver: MeterDriver | None,
    ) -> None:
        self.x = executor
        self.command = command
        self.target = target
        self.driver = driver
        self.sent = command.sent_at is not None
        self.unsaved: list[Write] = []  # device-state writes for the next outcome's transaction

    def now(self) -> datetime:
        return self.x.clock()

    async def write(self, work: Callable[[Connection], _T]) -> _T:
        """``work`` in one transaction, then the device-state writes waiting for one.

        In that order: ``commands`` rows before ``device_status``, as an ingest transaction
        takes them (a control decision supersedes a command, then the uplink saves the meter's
        live state). The other order deadlocked with it on PostgreSQL."""
        pending, self.unsaved = self.unsaved, []

        def run(conn: Connection) -> _T:
            done = work(conn)
            for save in pending:
                save(conn)
            return done

        return await self.x.in_transaction(run)

    async def run(self) -> None:
        if self.now() >= self.command.deadline_at:
            await self.final_check()
            return
        snapshot = await self.read()
        if snapshot is None:
            await self.retry_or_fail(no_answer(self.command.attempts))
            return
        spec = self.command.spec
        if spec.kind is CommandKind.RECHARGE:
            await self.recharge(snapshot)
            return
        if spec.kind is CommandKind.TAKE_BACK:
            await take_back_attempt.run(self, snapshot)
            return
        state = check(spec, snapshot, acknowledged=False)
        if state.satisfied:
            await self.confirm(state.detail)
            return
        await self.send_and_confirm(spec, snapshot)

    async def final_check(self) -> None:
        """At the deadline: one last read-back (never for a push that was never sent: a count
        the meter shows then is not ours), then give up."""
        spec = self.command.spec
        if spec.kind is CommandKind.TAKE_BACK:
            await take_back_attempt.final_check(self)
            return
        if spec.kind is CommandKind.RECHARGE and await failed_as_replaced(self):
            return
        if self.sent or spec.kind is not CommandKind.RECHARGE:
            snapshot = await self.read()
            state = check(spec, snapshot, acknowledged=False)
            if snapshot is not None and state.satisfied:
                await self.confirm(state.detail)
                return
        await self.fail(deadline_passed(self.command.reason))

    async def recharge(self, snapshot: Snapshot) -> None:
        spec = self.command.spec
        if await failed_as_replaced(self):
            return
        confirmed = None if self.sent else await asyncio.to_thread(self._confirmed_on_device)
        decision = plan_recharge(
            assigned=spec.purchase_count,
            meter_count=snapshot.purchase_count,
            ever_sent=self.sent,
            confirmed=confirmed,
        )
        if decision.step is RechargeStep.WAIT:
            await self.retry_or_fail(disagrees(decision.detail))
        elif decision.step is RechargeStep.CONFIRM:
            before = await asyncio.to_thread(self._money_before)
            note = money_note(
                before=before,
                amount=spec.amount or Decimal(0),
                after=snapshot.remaining_money,
                tolerance=self.x.config.money_tolerance,
            )
            await self.confirm("; ".join(filter(None, [decision.detail, note])))
        elif decision.step is RechargeStep.FAIL:
            await self.fail(decision.detail)
        else:
            await self.send_and_confirm(
                replace(spec, purchase_count=decision.purchase_count), snapshot
            )

    def _confirmed_on_device(self) -> int | None:
        with self.x.db.read() as conn:
            return repository.highest_confirmed_purchase(conn, self.command.meter_id)

    def _money_before(self) -> Decimal | None:
        # a read: no write transaction (and no turn at SQLite's write lock) for it
        with self.x.db.read() as conn:
            detail = event_log.last_event_detail(conn, self.command.id, "sent") or {}
        return repository.decimal_or_none(detail.get("money_before"))

    async def send_and_confirm(self, spec: CommandSpec, before: Snapshot) -> None:
        validity = validity_deadline(
            self.now(), timedelta(seconds=self.x.config.validity_window_s), self.command.deadline_at
        )
        if not await self.mark_sent(spec, before, validity):
            return  # cancelled or superseded meanwhile: nothing goes out
        try:
            await self.dispatch(spec, validity)
        except DeviceRefusedError as error:
            await self.refused(spec, str(error))
            return
        except DeviceError as error:
            self.note_failure(str(error))
            await self.retry_or_fail(no_answer(self.command.attempts))
            return
        state, after = await self.settle(spec)
        if not state.satisfied:
            await self.retry_or_fail(disagrees(state.detail))
            return
        detail = state.detail
        if spec.kind is CommandKind.RECHARGE:
            note = money_note(
                before=before.remaining_money,
                amount=spec.amount or Decimal(0),
                after=None if after is None else after.remaining_money,
                tolerance=self.x.config.money_tolerance,
            )
            detail = "; ".join(filter(None, [detail, note]))
        await self.confirm(detail)

    async def dispatch(self, spec: CommandSpec, validity: datetime) -> None:
        assert self.driver is not None
        meter, kind = self.target.meter, spec.kind
        if kind in RELAY_ACTIONS:
            await self.driver.relay(meter, RELAY_ACTIONS[kind], validity)
        elif kind in VALVE_ACTIONS:
            await self.driver.valve(meter, VALVE_ACTIONS[kind])
        elif kind is CommandKind.WRITE_PRICES:
            await self.driver.write_prices(meter, spec.prices or {})
        elif kind is CommandKind.WRITE_LIMITS:
            await self.driver.write_limits(meter, spec.limits or {})
        elif kind is CommandKind.RECHARGE:
            assert spec.amount is not None and spec.purchase_count is not None
            await self.driver.recharge(meter, spec.amount, spec.purchase_count)
        else:
            await self.driver.sync_clock(meter, self.now())

    async def refused(self, spec: CommandSpec, text: str) -> None:
        """A refused recharge may be the meter refusing a replay of a purchase it already has."""
        if spec.kind is CommandKind.RECHARGE:
            snapshot = await self.read()
            if snapshot is not None and check(spec, snapshot, acknowledged=False).satisfied:
                await self.confirm(
                    f"refused as a replay: the meter already has purchase {spec.purchase_count}"
                )
                return
        await self.fail(refused(text))

    async def settle(self, spec: CommandSpec) -> tuple[Check, Snapshot | None]:
        """Read back until the desired state shows or the aspect's settle time is over."""
        if spec.kind in ACKNOWLEDGED_ONLY:
            return check(spec, None, acknowledged=True), None
        settle = self.settle_of(spec.aspect)
        end = min(self.now() + timedelta(seconds=settle.timeout_s), self.command.deadline_at)
        await self.x.sleep(settle.delay_s)
        state, last = Check(False, "the meter did not answer the read-back"), None
        while True:
            snapshot = await self.read()
            if snapshot is not None:
                state, last = check(spec, snapshot, acknowledged=True), snapshot
                if state.satisfied:
                    return state, last
            if self.now() + timedelta(seconds=settle.poll_s) > end:
                return state, last
            await self.x.sleep(settle.poll_s)

    def settle_of(self, aspect: Aspect) -> Settle:
        return self.x.config.settle.get(aspect, DEFAULT_SETTLE[Aspect.RELAY])

    # --- reading the meter ---------------------------------------------------------------------

    async def read(self) -> Snapshot | None:
        """Read the meter; what it showed (or that it did not answer) is written with the next
        outcome, not in a transaction of its own."""
        assert self.driver is not None
        try:
            snapshot = await self.driver.read(self.target.meter)
        except DeviceError as error:
            self.note_failure(str(error))
            return None
        at = self.now()
        self.unsaved.append(lambda conn: device_state.save_snapshot(conn, snapshot, at))
        return snapshot

    def note_failure(self, error: str) -> None:
        at, meter_id = self.now(), self.command.meter_id
        self.unsaved.append(lambda conn: device_state.save_failure(conn, meter_id, error, at))

    # --- recording outcomes --------------------------------------------------------------------

    async def mark_sent(self, spec: CommandSpec, before: Snapshot, validity: datetime) -> bool:
        at, command = self.now(), self.command
        detail: dict[str, Any] = {"attempt": command.attempts}
        if spec.kind in RELAY_ACTIONS:
            detail["validity_deadline"] = validity.isoformat()
        if spec.kind is CommandKind.RECHARGE:
            detail.update(purchase_count=spec.purchase_count, money_before=before.remaining_money)
        if spec.kind is CommandKind.TAKE_BACK:
            detail.update(
                take_back_count=spec.take_back_count,
                amount=f"{spec.amount:f}",
                money_before=before.remaining_money,
            )

        marked = await self.write(
            lambda conn: writes.record_sent(conn, command, spec, at, detail, before.purchase_count)
        )
        self.sent = self.sent or marked
        return marked

    async def confirm(self, detail: str) -> None:
        await self._finish(CommandStatus.CONFIRMED, None, {"state": detail, "sent": self.sent})

    async def fail(self, reason: str) -> None:
        await self._finish(CommandStatus.FAILED, reason, {"reason": reason})

    async def _finish(
        self, status: CommandStatus, reason: str | None, detail: dict[str, Any]
    ) -> None:
        at, command, number = self.now(), self.command, self.target.number

        def record(conn: Connection) -> None:
            if not writes.finish(conn, command.id, status, reason, at):
                event_log.add_event(
                    conn, command.id, at, "late_result", {"outcome": status.value, **detail}
                )
                return
            event_log.add_event(conn, command.id, at, status.value, detail)
            audit.record(
                conn,
                organisation_id=command.organisation_id,
                actor=SYSTEM_ACTOR,
                action=f"command.{status.value}",
                subject=f"meter:{number}",
                at=at,
                detail={"command": command.id, "kind": command.spec.kind.value, **detail},
            )
            if status is CommandStatus.FAILED:
                _tell_operators(conn, command, number, reason or "", at)

        await self.write(record)

    async def retry_or_fail(self, reason: str) -> None:
        command, now = self.command, self.now()
        when = next_attempt_at(
            attempts=command.attempts,
            max_attempts=command.max_attempts,
            now=now,
            deadline=command.deadline_at,
            policy=self.x.config.retry,
        )
        if when is None:
            await self.fail(reason)
            return
        detail = {"attempt": command.attempts, "reason": reason, "next_attempt_at": when}
        await self.write(lambda conn: writes.record_retry(conn, command.id, now, when, detail))


def _tell_operators(
    conn: Connection, command: Command, number: str, reason: str, at: datetime
) -> None:
    """Queue the operators' "command failed" message with the failure, in its transaction: a
    relay or valve left in the wrong state needs someone now, and the audit line alone reached
    nobody (the event, its templates and its subscriptions existed, but nothing queued it).

    Commands whose context shares a ``failure_notice`` tell them once: the control tick's
    re-asserts of one stuck relay, which fail one after the other until someone goes there,
    told them every hour (each failure stays in the command list and the room page)."""
    account_id = command.context.get("account_id")
    notice = command.context.get("failure_notice")
    queueing.enqueue_in(
        conn,
        organisation_id=command.organisation_id,
        event="command_failed",
        key=f"{notice}:failed"
        if isinstance(notice, str) and notice
        else f"command:{command.id}:failed",
        params={"command": command.spec.kind.value, "meter": number, "error": reason},
        at=at,
        account_id=account_id if isinstance(account_id, int) else None,
    )
