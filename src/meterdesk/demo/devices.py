"""The demo's meters on the simulator: real sockets, real drivers, real poller, real commands.

Every meter of the sample property is also a simulated meter (``meterdesk.simulator``) on a
loopback DL/T 645 line (electricity) or CJ/T 188 line (water), registered in the database as a
bus with its meters linked, exactly as an installer would. The simulator runs in a background
thread's event loop for the whole demo; its meters use what their load profiles say, in the
demo's time, and use nothing while their relay (or valve) is open.

- **Accelerated history.** Each step the demo moves its clock, then :meth:`DemoDevices.read_meters`
  has the real :class:`~meterdesk.devices.poller.Poller` read every meter once over the sockets
  (one request in flight per line) and hand the readings to the real ingest; :meth:`settle`
  lets the real :class:`~meterdesk.devices.commands.executor.CommandExecutor` send the control
  loop's cut and restore commands through the poller's connections and confirm them by reading
  the meter back, and the notification dispatcher deliver the alarm, cut and restore messages to
  the log channel (``notifications.log`` in the data folder).
- **Live.** :meth:`DemoDevices.go_live` switches the simulation to real time and starts the
  :class:`~meterdesk.runtime.Runtime` (scheduled poller, executor, dispatcher, control tick)
  beside the console, so the console's cut and restore buttons work on the simulated meters and
  new readings keep coming.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, TypeVar

from sqlalchemy import select

from meterdesk.billing.control_admin import PolicyChange, create_alarm_plan, set_account_policy
from meterdesk.billing.ingest import IncomingReading, IngestReport
from meterdesk.billing.outbox import DatabaseOutbox
from meterdesk.bootstrap import App
from meterdesk.db.database import Database
from meterdesk.demo.plan import SEED, TIMEZONE, MeterPlan, TenantPlan
from meterdesk.demo.sample import SampleProperty
from meterdesk.devices import service as devices
from meterdesk.devices.commands.executor import CommandExecutor
from meterdesk.devices.commands.model import CommandTarget
from meterdesk.devices.poller import Poller, ScaledPollClock
from meterdesk.devices.ports import BusUnavailableError, MeterDriver
from meterdesk.devices.status import LOST, ONLINE, StatusChanges, write_changes
from meterdesk.devices.tables import command_events, commands
from meterdesk.metering.tables import meters
from meterdesk.notifications.channels.log import LogChannel
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.configuration import configure_channel
from meterdesk.notifications.dispatcher import Dispatcher
from meterdesk.notifications.model import Channel
from meterdesk.notifications.summary_settings import set_cadence
from meterdesk.notifications.tables import notification_outbox
from meterdesk.runtime import Runtime, RuntimeSettings
from meterdesk.shared.time import FakeClock, system_clock
from meterdesk.simulator.config import parse_config
from meterdesk.simulator.meter import ElectricityMeter, ValvePosition, WaterMeter
from meterdesk.simulator.runtime import Simulation

ACTOR = "demo:setup"
ALARM_PLAN = "三级告警 Three levels"
ALARM_LEVELS = [
    {"level": 1, "amount": "50.00", "channels": ["sms"]},
    {"level": 2, "amount": "20.00", "channels": ["sms"]},
    {"level": 3, "amount": "5.00", "channels": ["sms"]},
]
LINES = {
    "electricity": ("演示电表总线 demo-dlt645", "dlt645"),
    "water": ("演示水表总线 demo-cjt188", "cjt188"),
}
QUANTITY_ALARM_PLAN = "购量告警 Water left (m³)"
# A quantity account's alarm amounts are quantities: m³ left here (the control loop reads them
# in hundredths of its unit), so 50.00 would warn a stall holding 3 m³ at once.
QUANTITY_ALARM_LEVELS = [
    {"level": 1, "amount": "2.00", "channels": ["sms"]},
    {"level": 2, "amount": "1.00", "channels": ["sms"]},
    {"level": 3, "amount": "0.30", "channels": ["sms"]},
]
PROFILES = {
    "shop": "shop",
    "restaurant": "shop",
    "apartment": "apartment",
    "office": "office",
    "public": "public",
}
LIVE_POLL_S = 60  # once the demo runs in real time, each meter is read every minute
EXECUTOR_ROUNDS = 20  # command attempts per step: cuts, restores and their read-backs
_T = TypeVar("_T")


@dataclass(frozen=True)
class DeviceEvent:
    at: datetime
    text: str
    kind: str = "note"  # cut | restore | failed | message | lost | online | note


class SwitchableClock:
    """The simulation's clock: the demo's FakeClock during the accelerated history, then real
    time. ``speed`` is what the simulator's gateways read (none here: always 1)."""

    speed = 1.0

    def __init__(self, fake: FakeClock) -> None:
        self._fake: FakeClock | None = fake

    def __call__(self) -> datetime:
        return self._fake.now if self._fake is not None else system_clock()

    def go_live(self) -> None:
        self._fake = None


class _IngestSink:
    """The poller's sink during the accelerated history: the real ingest, keeping its reports
    for the demo's tally, and the meters' online/lost changes for its event list."""

    def __init__(self, app: App) -> None:
        self._app = app
        self.report = IngestReport()
        self.changes: list[tuple[int, str]] = []  # (meter id, online | lost) when it changed
        self._states: dict[int, str] = {}

    async def write(self, readings: list[IncomingReading], changes: StatusChanges) -> None:
        await asyncio.to_thread(self._write, readings, changes)

    def _write(self, readings: list[IncomingReading], changes: StatusChanges) -> None:
        if readings:
            self.report.merge(self._app.ingestor.ingest(readings))
        if not changes.empty:
            with self._app.db.transaction() as conn:
                write_changes(conn, changes)
            for row in changes.meters:
                before = self._states.get(row["meter_id"])
                self._states[row["meter_id"]] = row["state"]
                if before is not None and before != row["state"]:
                    self.changes.append((row["meter_id"], row["state"]))

    def take(self) -> tuple[IngestReport, list[tuple[int, str]]]:
        report, self.report = self.report, IngestReport()
        changes, self.changes = self.changes, []
        return report, changes


class DemoDevices:
    def __init__(self, app: App, sample: SampleProperty, clock: FakeClock, data_dir: Path) -> None:
        self.app, self.sample, self.fake = app, sample, clock
        self.clock = SwitchableClock(clock)
        self.log_path = data_dir / "notifications.log"
        self._log: TextIO | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._simulation: Simulation | None = None
        self._simulated: dict[str, ElectricityMeter | WaterMeter] = {}
        self._numbers: dict[int, str] = {}  # meter id → number
        self._sink = _IngestSink(app)
        self._poller: Poller | None = None
        self._executor: CommandExecutor | None = None
        self._dispatcher: Dispatcher | None = None
        self._seen_event = 0
        self._seen_message = 0
        self._runtime: Runtime | None = None
        self._stop_runtime: asyncio.Event | None = None
        self._running: asyncio.Future[None] | None = None

    # --- setting up ---------------------------------------------------------------------------

    def start(self, tenants: list[TenantPlan]) -> None:
        """Start the simulator, register its lines as buses, link every meter, set the alarm
        plan on every account and the log channel for the messages, and open the lines."""
        self._thread.start()
        numbers = [(t.profile, m) for t in tenants for m in t.meters]
        numbers += [(v.profile, m) for v in self.sample.vacancies for m in v.meters]
        self._simulation = Simulation(
            parse_config(_simulator_config(numbers, self.fake.now)), clock=self.clock
        )
        self._call(self._simulation.start())
        ports = {bus.name: server.port for bus, server in self._simulation.listening}
        addresses = _addresses(numbers)
        for bus_name, found in self._simulation.by_bus.items():
            for meter in found:
                assert isinstance(meter, ElectricityMeter | WaterMeter)
                self._simulated[addresses[(bus_name, meter.address)]] = meter
        self._numbers = {self.sample.meter_ids[n]: n for n in self._simulated}
        self._register_lines(numbers, ports)
        self._control_settings(tenants)
        plans = devices.load_poll_plans(self.app.db, organisation_id=self.sample.organisation_id)
        self._poller = Poller(plans, sink=self._sink, clock=ScaledPollClock(self.clock))
        self._executor = CommandExecutor(
            self.app.db, self._driver_for, clock=self.app.db.clock, sleep=self._sleep
        )

    def _register_lines(self, numbers: list[tuple[str, MeterPlan]], ports: dict[str, int]) -> None:
        db, org = self.app.db, self.sample.organisation_id
        bus_ids = {}
        for utility, (name, protocol) in LINES.items():
            if name in ports:
                spec = devices.BusSpec(
                    name, protocol, "tcp", f"127.0.0.1:{ports[name]}", poll_interval_s=LIVE_POLL_S
                )
                bus_ids[utility] = devices.create_bus(
                    db, organisation_id=org, spec=spec, actor=ACTOR
                )
        for _profile, plan in numbers:
            width = 12 if plan.utility == "electricity" else 14
            devices.link_meter(
                db,
                organisation_id=org,
                meter_id=self.sample.meter_ids[plan.number],
                bus_id=bus_ids[plan.utility],
                address=str(self._simulated[plan.number].address).zfill(width),
                actor=ACTOR,
            )

    def _control_settings(self, tenants: list[TenantPlan]) -> None:
        db, org = self.app.db, self.sample.organisation_id
        # the channel first: the plan's alarms fire at once for accounts that start low
        configure_channel(
            db,
            organisation_id=org,
            channel="log",
            provider="log",
            config={"address": str(self.log_path)},
            actor=ACTOR,
        )
        for name, levels in (
            (ALARM_PLAN, ALARM_LEVELS),
            (QUANTITY_ALARM_PLAN, QUANTITY_ALARM_LEVELS),
        ):
            create_alarm_plan(db, organisation_id=org, name=name, levels=levels, actor=ACTOR)
        outbox = DatabaseOutbox(db.clock)
        for tenant in tenants:
            plan = QUANTITY_ALARM_PLAN if tenant.credit_unit == "quantity" else ALARM_PLAN
            set_account_policy(
                db,
                organisation_id=org,
                number=tenant.account,
                change=PolicyChange(alarm_plan=plan),
                actor=ACTOR,
                outbox=outbox,
            )
        # each tenant hears yesterday's use and charges after local midnight (扣费通知)
        set_cadence(db, organisation_id=org, value="daily", actor=ACTOR)
        self._log = self.log_path.open("a", encoding="utf-8")
        registry = ChannelRegistry(clock=db.clock, overrides={Channel.LOG: LogChannel(self._log)})
        self._dispatcher = Dispatcher(db, registry)

    def _driver_for(self, target: CommandTarget) -> MeterDriver:
        """Commands go through the poller's connection to the meter's line, as in production."""
        poller = self._poller
        if poller is None or target.bus_id not in poller.connections:
            raise BusUnavailableError(f"meter {target.number}: its line is not open")
        return poller.connection(target.bus_id).driver

    async def _sleep(self, seconds: float) -> None:
        """Executor waits (settle delays, read-back pauses) pass in simulated time."""
        self.fake.advance(timedelta(seconds=max(seconds, 0.0)))
        await asyncio.sleep(0)

    # --- the accelerated history ----------------------------------------------------------

    def read_meters(self) -> tuple[IngestReport, list[DeviceEvent]]:
        """One poll round at the clock's instant: every meter read over its line, the readings
        through the ingest; what the ingest did, and meters lost or back online."""
        assert self._poller is not None
        self._call(self._poller.poll_round())
        report, changes = self._sink.take()
        at = self.clock()
        events = []
        for meter_id, state in changes:
            number = self._numbers.get(meter_id, str(meter_id))
            if state == LOST:
                text = f"meter {number} lost: no answer on its line"
                events.append(DeviceEvent(at, text, "lost"))
            elif state == ONLINE:
                events.append(DeviceEvent(at, f"meter {number} answers again", "online"))
        return report, events

    def lines(self) -> list[tuple[str, int]]:
        """The simulated lines: (name, loopback port)."""
        assert self._simulation is not None
        return [(bus.name, server.port) for bus, server in self._simulation.listening]

    def supplied(self, number: str) -> bool:
        """False while the simulated meter's relay (or valve) is open: it uses nothing."""
        meter = self._simulated.get(number)
        if isinstance(meter, ElectricityMeter):
            return not meter.engine.relay_open
        if isinstance(meter, WaterMeter):
            return meter.valve_position(self.clock()) is not ValvePosition.CLOSED
        return True

    def simulated(self, number: str) -> ElectricityMeter | WaterMeter:
        return self._simulated[number]

    def settle(self) -> list[DeviceEvent]:
        """Send the commands that are due and deliver the messages; what happened, as events."""
        assert self._executor is not None and self._dispatcher is not None
        executor, dispatcher = self._executor, self._dispatcher

        async def work() -> None:
            for _ in range(EXECUTOR_ROUNDS):
                if await executor.run_once() == 0:
                    break
            await dispatcher.drain()

        self._call(work())
        return self._command_events() + self._message_events()

    def _command_events(self) -> list[DeviceEvent]:
        with self.app.db.read() as conn:
            rows = conn.execute(
                select(
                    command_events.c.id,
                    command_events.c.at,
                    command_events.c.event,
                    commands.c.kind,
                    commands.c.reason,
                    meters.c.number,
                )
                .join(commands, commands.c.id == command_events.c.command_id)
                .join(meters, meters.c.id == commands.c.meter_id)
                .where(
                    command_events.c.id > self._seen_event,
                    command_events.c.event.in_(("confirmed", "failed")),
                    commands.c.organisation_id == self.sample.organisation_id,
                )
                .order_by(command_events.c.id)
            ).all()
        events = []
        for row in rows:
            self._seen_event = max(self._seen_event, int(row.id))
            what = _COMMAND_WORDS.get(row.kind, row.kind)
            if row.event == "confirmed":
                text = f"meter {row.number}: {what} — confirmed by reading the meter back"
                kind = "cut" if row.kind in CUTS else "restore"
            else:
                text, kind = f"meter {row.number}: {what} failed ({row.reason})", "failed"
            events.append(DeviceEvent(row.at, text, kind))
        return events

    def _message_events(self) -> list[DeviceEvent]:
        with self.app.db.read() as conn:
            rows = conn.execute(
                select(
                    notification_outbox.c.id,
                    notification_outbox.c.sent_at,
                    notification_outbox.c.event_kind,
                    notification_outbox.c.params,
                )
                .where(
                    notification_outbox.c.id > self._seen_message,
                    notification_outbox.c.status == "sent",
                    notification_outbox.c.organisation_id == self.sample.organisation_id,
                )
                .order_by(notification_outbox.c.id)
            ).all()
        events, summaries = [], []
        for row in rows:
            self._seen_message = max(self._seen_message, int(row.id))
            if row.event_kind == "deduction_summary":  # one line for the night's, not one each
                summaries.append(row)
                continue
            what = _MESSAGE_WORDS.get(row.event_kind, row.event_kind)
            text = f"message sent: {what} ({_who(row.params)})"
            events.append(DeviceEvent(row.sent_at, text, "message"))
        if summaries:
            period = json.loads(summaries[0].params).get("period", "")
            text = f"messages sent: {period} deduction summaries to {len(summaries)} tenants"
            events.append(DeviceEvent(summaries[-1].sent_at, text, "message"))
        return events

    # --- live -------------------------------------------------------------------------------

    def go_live(self) -> None:
        """Real time from now on: the simulated meters go on from where the history left them
        (they were running meanwhile), and the runtime polls, commands and notifies beside the
        console."""
        assert self._poller is not None
        self._call(self._poller.close())
        self._poller = None
        self.clock.go_live()
        live_db = Database(self.app.db.engine, system_clock)
        registry = ChannelRegistry(overrides={Channel.LOG: LogChannel(self._require_log())})
        self._runtime = Runtime(live_db, RuntimeSettings(), registry=registry)

        async def start() -> None:
            self._stop_runtime = asyncio.Event()
            assert self._runtime is not None
            self._running = asyncio.ensure_future(self._runtime.run(self._stop_runtime))

        self._call(start())

    def _require_log(self) -> TextIO:
        assert self._log is not None
        return self._log

    def close(self) -> None:
        """Stop the runtime (it flushes what it read), the lines and the simulator."""

        async def stop() -> None:
            if self._stop_runtime is not None and self._running is not None:
                self._stop_runtime.set()
                await self._running
            if self._poller is not None:
                await self._poller.close()
            if self._simulation is not None:
                await self._simulation.stop()

        if self._thread.is_alive():
            self._call(stop(), timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()
        if self._log is not None:
            self._log.close()

    def _call(self, work: Coroutine[Any, Any, _T], *, timeout: float | None = None) -> _T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout)


CUTS = ("relay_trip", "valve_close")
_COMMAND_WORDS = {
    "relay_trip": "relay opened (supply cut)",
    "relay_close": "relay closed (supply restored)",
    "relay_close_allowed": "close allowed (the tenant may switch on)",
    "valve_close": "valve closed (supply cut)",
    "valve_open": "valve opened (supply restored)",
}
_MESSAGE_WORDS = {
    "alarm_level_1": "low-credit alarm 1",
    "alarm_level_2": "low-credit alarm 2",
    "alarm_level_3": "low-credit alarm 3",
    "supply_cut": "supply cut",
    "supply_restored": "supply restored",
    "recharge_credited": "recharge credited",
}


def _who(params: str) -> str:
    found = json.loads(params)
    return str(found.get("customer") or found.get("account") or "")


def _addresses(numbers: list[tuple[str, MeterPlan]]) -> dict[tuple[str, int], str]:
    """(line name, address) → meter number, in the order the simulator config lists them."""
    found: dict[tuple[str, int], str] = {}
    counts = {"electricity": 0, "water": 0}
    for _profile, plan in numbers:
        counts[plan.utility] += 1
        found[(LINES[plan.utility][0], counts[plan.utility])] = plan.number
    return found


def _simulator_config(numbers: list[tuple[str, MeterPlan]], start: datetime) -> dict[str, Any]:
    used = {plan.utility for _profile, plan in numbers}
    buses = [
        {"name": name, "protocol": protocol, "listen": "127.0.0.1:0"}
        for utility, (name, protocol) in LINES.items()
        if utility in used
    ]
    groups: list[dict[str, Any]] = []
    counts = {"electricity": 0, "water": 0}
    for profile, plan in numbers:
        counts[plan.utility] += 1
        group: dict[str, Any] = {
            "first_address": counts[plan.utility],
            "bus": LINES[plan.utility][0],
            "kind": plan.utility,
            "profile": PROFILES.get(profile, "apartment"),
        }
        if plan.utility == "electricity":
            # The demo's accounts are billed by the platform (远程费控): their meters only
            # measure and switch. A simulated meter's default is to bill itself, and with its
            # own 100 yuan used up it tripped a tenant whose platform balance was thousands.
            group.update(
                rated_kw=str(plan.load_per_hour),
                ct=plan.ct,
                energy_kwh=str(plan.start_total),
                billing="platform",
            )
        else:
            group.update(rated_flow_m3h=str(plan.load_per_hour), volume_m3=str(plan.start_total))
        groups.append(group)
    return {
        "simulator": {"seed": SEED, "zone": TIMEZONE, "start": start.isoformat()},
        "bus": buses,
        "meters": groups,
    }
