"""The accelerated run: every step the simulated clock moves 15 minutes, the poller reads every
simulated meter over its line and the readings go through the real ingest in one batch; the
control loop's cuts and restores go out to the meters and are confirmed by reading them back;
messages are delivered; and the cashier serves tenants whose balance went below zero. The same
:class:`FakeClock` drives the database, the simulator and the executor, so readings, deductions,
commands and recharges all carry simulated times."""

from __future__ import annotations

import time as wall
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from meterdesk.billing import cashier, quantity, summaries
from meterdesk.billing.ingest import IngestReport
from meterdesk.bootstrap import App
from meterdesk.demo.devices import DemoDevices, DeviceEvent
from meterdesk.demo.plan import TenantPlan
from meterdesk.demo.queries import AccountState, account_states
from meterdesk.demo.sample import SampleProperty
from meterdesk.metering.service import list_quarantine
from meterdesk.shared.money import from_fen
from meterdesk.shared.time import FakeClock

LOW_FEN = 5000  # "low" below 50.00
LOW_QUANTITY = Decimal(2)  # a quantity account (购量) is "low" below 2.00 of its unit
DESK_OPENS, DESK_CLOSES = time(8, 0), time(21, 0)
CASHIER = "demo:cashier 李收银"
METHODS = {
    "cash": "in cash",
    "card": "by card",
    "wechat": "by WeChat Pay",
    "alipay": "by Alipay",
    "transfer": "by bank transfer",
}


STEP = timedelta(minutes=15)
Event = DeviceEvent


@dataclass
class Tally:
    steps: int = 0
    delivered: int = 0
    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    quarantined: int = 0
    deducted_fen: int = 0
    returned_fen: int = 0
    recharges: int = 0
    recharged_fen: int = 0
    recharged_accounts: list[str] = field(default_factory=list)
    cuts: int = 0  # relay / valve commands confirmed by read-back
    restores: int = 0
    commands_failed: int = 0
    messages: int = 0
    interrupted: bool = False

    def add(self, report: IngestReport) -> None:
        self.delivered += report.received
        self.accepted += report.accepted
        self.duplicates += report.duplicates
        self.late += report.late
        self.quarantined += report.quarantined
        self.deducted_fen += report.deducted_fen
        self.returned_fen += report.returned_fen

    def count(self, events: list[Event]) -> None:
        for event in events:
            if event.kind == "cut":
                self.cuts += 1
            elif event.kind == "restore":
                self.restores += 1
            elif event.kind == "failed":
                self.commands_failed += 1
            elif event.kind == "message":
                self.messages += 1


def label(tenant: TenantPlan) -> str:
    return f"{tenant.label} {tenant.customer}"


def level(state: AccountState) -> int:
    """0 fine, 1 low, 2 using the overdraft, 3 in arrears (or a quantity account used up)."""
    if state.arrears_fen > 0 or state.used_up:
        return 3
    if state.quantity_left is not None:
        return 1 if state.quantity_left < LOW_QUANTITY else 0
    if state.balance_fen < 0:
        return 2
    return 1 if state.balance_fen < LOW_FEN else 0


class Watch:
    """Notices an account getting worse (low → overdraft → arrears) and says so once."""

    def __init__(self, tenants: dict[str, TenantPlan]) -> None:
        self._tenants = tenants
        self._levels: dict[str, int] = {}

    def changes(self, at: datetime, states: dict[str, AccountState]) -> list[Event]:
        events = []
        for number, state in sorted(states.items()):
            now, before = level(state), self._levels.get(number)
            self._levels[number] = now
            if before is None or now <= before:
                continue
            who = f"{label(self._tenants[number])} ({number})"
            balance = from_fen(state.balance_fen)
            if state.quantity_left is not None:
                text = _quantity_news(who, now, state)
            elif now == 3:
                text = f"{who} is in arrears: owes {from_fen(state.arrears_fen)}"
            elif now == 2:
                text = f"{who} is using its overdraft: balance {balance}"
            else:
                text = f"{who} is low on credit: {balance} left"
            events.append(Event(at, text))
        return events


def _quantity_news(who: str, now: int, state: AccountState) -> str:
    left = f"{state.quantity_left:.2f} {state.unit}"
    if now == 3:
        # the reading that crossed zero may have used a little ahead: owed at the last price
        owes = f", owes {from_fen(state.arrears_fen)}" if state.arrears_fen else ""
        return f"{who} has used up the {state.unit} it bought: {left} left{owes}"
    return f"{who} is low on {state.unit} bought: {left} left"


class Desk:
    """The cashier (收银员): a tenant whose balance went below zero (or whose m³ bought are used
    up) comes to the desk some hours later (``pays_after_hours``; some never come during the
    demo), while the desk is open."""

    def __init__(self, app: App, sample: SampleProperty, tz: ZoneInfo) -> None:
        self._app, self._sample, self._tz = app, sample, tz
        self._short_since: dict[str, datetime] = {}
        self._visits: dict[str, int] = {}

    def serve(self, at: datetime, states: dict[str, AccountState], tally: Tally) -> list[Event]:
        events = []
        open_now = DESK_OPENS <= at.astimezone(self._tz).time() < DESK_CLOSES
        for number, state in sorted(states.items()):
            if state.balance_fen >= 0 and state.arrears_fen == 0 and not state.used_up:
                self._short_since.pop(number, None)
                continue
            since = self._short_since.setdefault(number, at)
            wait = self._sample.tenants[number].pays_after_hours
            if open_now and wait is not None and at - since >= timedelta(hours=wait):
                events.append(self._recharge(at, number, tally))
                del self._short_since[number]
        return events

    def _recharge(self, at: datetime, number: str, tally: Tally) -> Event:
        tenant = self._sample.tenants[number]
        visit = self._visits.get(number, 0) + 1
        self._visits[number] = visit
        result = cashier.recharge(
            self._app.db,
            organisation_id=self._sample.organisation_id,
            account_id=self._sample.account_ids[number],
            amount=tenant.recharge,
            method=tenant.method,
            actor=CASHIER,
            idempotency_key=f"demo:{number}:recharge:{visit}",
        )
        tally.recharges += 1
        tally.recharged_fen += int(tenant.recharge * 100)
        tally.recharged_accounts.append(number)
        how = METHODS.get(tenant.method, tenant.method)
        return Event(
            at,
            f"{label(tenant)} ({number}) recharged {tenant.recharge:.2f} at the desk {how}; "
            + self._now_holds(number, result.balance),
        )

    def _now_holds(self, number: str, balance: Decimal) -> str:
        if self._sample.tenants[number].credit_unit != "quantity":
            return f"balance now {balance}"
        with self._app.db.read() as conn:
            held = quantity.view(conn, self._sample.account_ids[number])
        return f"now {held.left:.2f} {held.unit} left (wallet {balance})"


@dataclass
class Hour:
    """What the live view shows once a simulated hour."""

    at: datetime
    tally: Tally
    states: dict[str, AccountState]


class Simulation:
    def __init__(
        self,
        app: App,
        clock: FakeClock,
        sample: SampleProperty,
        devices: DemoDevices,
        tz: ZoneInfo,
    ) -> None:
        self.app, self.clock, self.sample, self.devices, self.tz = app, clock, sample, devices, tz
        self.tally = Tally()
        self._start = clock.now
        self.watch = Watch(sample.tenants)
        self.desk = Desk(app, sample, tz)
        self._seen_quarantine: set[int] = set()
        self._summarised: summaries.Done = set()  # the local days already summarised
        self.states = account_states(app.db, organisation_id=sample.organisation_id)
        self.watch.changes(clock.now, self.states)  # the starting point, not news

    def run(
        self,
        steps: int,
        speed: float,
        on_event: Callable[[Event], None],
        on_hour: Callable[[Hour], None],
    ) -> Tally:
        started = wall.monotonic()
        try:
            for step in range(1, steps + 1):
                for event in self.step(step):
                    on_event(event)
                if step % 4 == 0 or step == steps:
                    on_hour(Hour(self.clock.now, self.tally, self.states))
                _pace(started, STEP * step, speed)
        except KeyboardInterrupt:
            self.tally.interrupted = True
        return self.tally

    def step(self, step: int) -> list[Event]:
        # to the next quarter hour: the executor's read-back pauses also move the clock a little
        self.clock.advance(max(self._start + STEP * step - self.clock.now, timedelta(0)))
        at = self.clock.now
        report, events = self.devices.read_meters()
        self.tally.add(report)
        if report.quarantined:
            events += self._quarantine_events(at)
        # what ``meterdesk run``'s summaries step does: after local midnight, yesterday's
        # deduction summaries (扣费通知), which the settle below delivers to the log
        summaries.send_due(self.app.db, now=at, done=self._summarised)
        events += self._settle()
        self.states = account_states(self.app.db, organisation_id=self.sample.organisation_id)
        events += self.watch.changes(at, self.states)
        recharges = self.desk.serve(at, self.states, self.tally)
        if recharges:
            events += recharges
            events += self._settle()  # a recharge restores supply at once
            self.states = account_states(self.app.db, organisation_id=self.sample.organisation_id)
            self.watch.changes(at, self.states)
        self.tally.steps = step
        return sorted(events, key=lambda event: event.at)

    def _settle(self) -> list[Event]:
        events = self.devices.settle()
        self.tally.count(events)
        return events

    def _quarantine_events(self, at: datetime) -> list[Event]:
        items = list_quarantine(self.app.db, organisation_id=self.sample.organisation_id)
        events = []
        for item in items:
            if item["id"] in self._seen_quarantine:
                continue
            self._seen_quarantine.add(item["id"])
            events.append(
                Event(
                    at,
                    f"quarantined a {item['reason_code']} on meter {item['meter_number']} "
                    f"(#{item['id']}): not billed, an operator decides",
                )
            )
        return events


def _pace(started: float, simulated: timedelta, speed: float) -> None:
    """Sleep so that ``speed`` simulated seconds pass per real second (no sleeping when <= 0)."""
    if speed <= 0:
        return
    delay = started + simulated.total_seconds() / speed - wall.monotonic()
    if delay > 0:
        wall.sleep(delay)
