"""Shared by the command tests (no tests here): a scriptable fake meter driver, a database on a
SQLite file with one organisation and meter, and a loop that runs the executor in simulated time
until nothing is left to do."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select

from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.db.metadata import load_all_tables
from meterdesk.devices.commands.executor import CommandExecutor, ExecutorConfig, Settle
from meterdesk.devices.commands.model import OPEN_STATUSES, Aspect, CommandTarget, RetryPolicy
from meterdesk.devices.ports import (
    DeviceRefusedError,
    DeviceTimeoutError,
    MeterAddress,
    RelayAction,
    Snapshot,
    ValveAction,
)
from meterdesk.devices.tables import commands
from meterdesk.metering import service as metering
from meterdesk.shared.time import FakeClock
from meterdesk.sites import service as sites

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
ACTOR = "test:operator"


@dataclass
class FakeMeter:
    relay: str | None = "closed"
    valve: str | None = "open"
    protected: bool | None = False
    money: Decimal | None = Decimal("10.00")
    purchase_count: int | None = 3
    prices: dict[str, Decimal] = field(default_factory=dict)
    limits: dict[str, Decimal] = field(default_factory=dict)
    clock_set_to: datetime | None = None


class FakeDriver:
    """A meter behind a scriptable line. Counters script faults for the next N calls:
    ``silent_reads`` (reads time out), ``silent_sends`` (a command is lost on the way),
    ``lost_replies`` (the meter obeys, the reply is lost), ``ignored_sends`` (acknowledged,
    nothing happens); ``refusal`` makes the meter refuse every command."""

    def __init__(self, clock: FakeClock, meter: FakeMeter | None = None) -> None:
        self.clock = clock
        self.meter = meter or FakeMeter()
        self.calls: list[tuple[str, Any, datetime]] = []  # (what, argument, when)
        self.silent_reads = 0
        self.silent_sends = 0
        self.lost_replies = 0
        self.ignored_sends = 0
        self.refusal: str | None = None
        self.valve_travel = timedelta(seconds=8)
        self.on_send: Callable[[], None] | None = None
        self.deadlines: list[tuple[datetime, datetime]] = []  # (sent at, validity deadline)
        self._valve_moves: tuple[str, datetime] | None = None

    @property
    def sends(self) -> list[tuple[str, Any]]:
        return [(what, argument) for what, argument, _ in self.calls if what != "read"]

    async def read(self, meter: MeterAddress) -> Snapshot:
        self.calls.append(("read", None, self.clock()))
        if self.silent_reads:
            self.silent_reads -= 1
            raise DeviceTimeoutError("no answer within 1.0 s")
        if self._valve_moves and self.clock() >= self._valve_moves[1]:
            self.meter.valve, self._valve_moves = self._valve_moves[0], None
        m = self.meter
        return Snapshot(
            meter_id=meter.meter_id,
            measured_at=self.clock(),
            relay=m.relay,
            valve=m.valve,
            protected=m.protected,
            remaining_money=m.money,
            purchase_count=m.purchase_count,
        )

    async def _command(self, what: str, argument: Any, effect: Callable[[], None]) -> None:
        self.calls.append((what, argument, self.clock()))
        if self.on_send is not None:
            self.on_send()
        if self.refusal is not None:
            raise DeviceRefusedError(self.refusal)
        if self.silent_sends:
            self.silent_sends -= 1
            raise DeviceTimeoutError("no answer within 1.0 s")
        if self.ignored_sends:
            self.ignored_sends -= 1
            return
        effect()
        if self.lost_replies:
            self.lost_replies -= 1
            raise DeviceTimeoutError("no answer within 1.0 s")

    async def relay(self, meter: MeterAddress, action: RelayAction, deadline: datetime) -> None:
        if deadline <= self.clock():
            self.calls.append(("relay", action, self.clock()))
            raise DeviceRefusedError("validity deadline passed")
        effects = {
            RelayAction.TRIP: ("relay", "open"),
            RelayAction.CLOSE: ("relay", "closed"),
            RelayAction.PROTECT_ON: ("protected", True),
            RelayAction.PROTECT_OFF: ("protected", False),
        }
        self.deadlines.append((self.clock(), deadline))

        def apply() -> None:  # close allowed arms the relay: it closes when the tenant presses
            if action in effects:
                setattr(self.meter, *effects[action])

        await self._command("relay", action, apply)

    async def valve(self, meter: MeterAddress, action: ValveAction) -> None:
        target = "open" if action is ValveAction.OPEN else "closed"

        def move() -> None:
            self._valve_moves = (target, self.clock() + self.valve_travel)

        await self._command("valve", action, move)

    async def write_prices(self, meter: MeterAddress, prices: Mapping[str, Decimal]) -> None:
        await self._command("write_prices", dict(prices), lambda: self.meter.prices.update(prices))

    async def write_limits(self, meter: MeterAddress, limits: Mapping[str, Decimal]) -> None:
        await self._command("write_limits", dict(limits), lambda: self.meter.limits.update(limits))

    async def recharge(self, meter: MeterAddress, amount: Decimal, purchase_count: int) -> None:
        stored = self.meter.purchase_count or 0
        if purchase_count != stored + 1:
            self.calls.append(("recharge", (amount, purchase_count), self.clock()))
            raise DeviceRefusedError(
                f"purchase count {purchase_count} refused (meter has {stored})"
            )

        def apply() -> None:
            self.meter.purchase_count = purchase_count
            self.meter.money = (self.meter.money or Decimal(0)) + amount

        await self._command("recharge", (amount, purchase_count), apply)

    async def sync_clock(self, meter: MeterAddress, now: datetime) -> None:
        await self._command("sync_clock", now, lambda: setattr(self.meter, "clock_set_to", now))


@dataclass
class World:
    db: Database
    clock: FakeClock
    organisation_id: int
    site_id: int
    meter_id: int

    def add_meter(self, number: str, *, utility: str = "electricity") -> int:
        spec = metering.MeterSpec(
            number=number,
            utility=utility,
            kind="water" if utility == "water" else "single_phase",
            protocol="cjt188" if utility == "water" else "dlt645",
            address=f"{len(number):02d}{number.zfill(10)[-10:]}",
            site_id=self.site_id,
        )
        return metering.create_meter(
            self.db, organisation_id=self.organisation_id, spec=spec, actor=ACTOR
        )


def make_world(db: Database, clock: FakeClock, name: str = "Org A") -> World:
    org = sites.create_organisation(db, name=name, timezone="Asia/Shanghai")
    site = sites.create_site(db, organisation_id=org, name="Park", timezone="Asia/Shanghai")
    world = World(db, clock, org, site, 0)
    world.meter_id = world.add_meter("M1")
    return world


def sqlite_db(tmp_path: Path, clock: FakeClock) -> Database:
    engine = build_engine(f"sqlite:///{tmp_path}/commands.sqlite3")
    load_all_tables().create_all(engine)
    return Database(engine=engine, clock=clock)


FAST = ExecutorConfig(
    retry=RetryPolicy(first_backoff_s=5, max_backoff_s=60),
    settle={
        Aspect.RELAY: Settle(1, 6, 2),
        Aspect.PROTECT: Settle(1, 6, 2),
        Aspect.VALVE: Settle(8, 20, 2),
        Aspect.MONEY: Settle(0.5, 4, 2),
    },
    validity_window_s=120,
)


def executor(
    db: Database,
    clock: FakeClock,
    driver: FakeDriver | Callable[[CommandTarget], Any],
    config: ExecutorConfig = FAST,
) -> CommandExecutor:
    async def sleep(seconds: float) -> None:
        clock.advance(timedelta(seconds=seconds))

    driver_for = (
        driver if callable(driver) and not isinstance(driver, FakeDriver) else (lambda _t: driver)
    )
    return CommandExecutor(db, driver_for, config=config, clock=clock, sleep=sleep)


async def run_until_idle(
    work: CommandExecutor, db: Database, clock: FakeClock, rounds: int = 200
) -> int:
    """Run batches, moving the fake clock to the next due command, until none is open. When a
    batch claims nothing (a due push waits for an older one), move on to the next later time."""
    claimed = 1
    for batches in range(rounds):
        with db.read() as conn:
            times = sorted(
                conn.execute(
                    select(commands.c.next_attempt_at).where(commands.c.status.in_(OPEN_STATUSES))
                ).scalars()
            )
        if not times:
            return batches
        later = [t for t in times if t > clock.now]
        clock.now = later[0] if claimed == 0 and later else max(clock.now, times[0])
        claimed = await work.run_once()
    raise AssertionError("commands still open after many rounds")
