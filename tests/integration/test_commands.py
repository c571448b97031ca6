"""Device commands on SQLite and PostgreSQL: the lifecycle persisted with its events, claims that
never overlap between workers, recharge pushes from desk transfers, tariff pushes, and the
meter-billing reconciliation report."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Mapping
from contextlib import suppress
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from builders import (
    ACTOR,
    T0,
    Org,
    flat_definition,
    make_org,
    make_tariff,
    minutes,
    reading,
    row_counts,
)
from sqlalchemy import select

from meterdesk.audit.tables import audit_log
from meterdesk.billing import accounts as account_service
from meterdesk.billing import cashier, cashier_refund, control_admin
from meterdesk.billing.control_send import RecordingOutbox
from meterdesk.billing.ingest import Ingestor
from meterdesk.db.database import Database
from meterdesk.devices import reconcile
from meterdesk.devices.commands import claiming, service
from meterdesk.devices.commands.executor import CommandExecutor, ExecutorConfig
from meterdesk.devices.commands.model import OPEN_STATUSES, RetryPolicy
from meterdesk.devices.ports import (
    DeviceTimeoutError,
    MeterAddress,
    RelayAction,
    Snapshot,
    ValveAction,
)
from meterdesk.devices.tables import commands, device_status
from meterdesk.metering import service as metering
from meterdesk.shared.errors import ConflictError
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration
D = Decimal


class Meters:
    """A fake driver for many meters: relays, purchase and take-back counters and money; sends
    are counted."""

    def __init__(self, clock: FakeClock, *, money: str = "0.00", count: int = 0) -> None:
        self.clock = clock
        self.relays: dict[int, str] = {}
        self.money: dict[int, Decimal] = {}
        self.count: dict[int, int] = {}
        self.taken: dict[int, int] = {}  # take-back counters
        self.start = (D(money), count)
        self.sends: Counter[tuple[int, str]] = Counter()
        self.lose_next_send = 0
        self.prices: dict[int, dict[str, Decimal]] = {}

    async def read(self, meter: MeterAddress) -> Snapshot:
        m = meter.meter_id
        return Snapshot(
            meter_id=m,
            measured_at=self.clock(),
            relay=self.relays.get(m, "closed"),
            remaining_money=self.money.get(m, self.start[0]),
            purchase_count=self.count.get(m, self.start[1]),
        )

    def _lost(self) -> None:
        if self.lose_next_send:
            self.lose_next_send -= 1
            raise DeviceTimeoutError("no answer within 1.0 s")

    async def relay(self, meter: MeterAddress, action: RelayAction, deadline: datetime) -> None:
        self.sends[(meter.meter_id, action.value)] += 1
        self._lost()
        self.relays[meter.meter_id] = "open" if action is RelayAction.TRIP else "closed"

    async def recharge(self, meter: MeterAddress, amount: Decimal, purchase_count: int) -> None:
        m = meter.meter_id
        self.sends[(m, "recharge")] += 1
        self.count[m] = purchase_count
        self.money[m] = self.money.get(m, self.start[0]) + amount

    async def take_back(self, meter: MeterAddress, amount: Decimal, take_back_count: int) -> None:
        m = meter.meter_id
        self.sends[(m, "take_back")] += 1
        self.taken[m] = take_back_count
        self.money[m] = self.money.get(m, self.start[0]) - amount

    async def take_back_count(self, meter: MeterAddress) -> int:
        return self.taken.get(meter.meter_id, 0)

    async def write_prices(self, meter: MeterAddress, prices: Mapping[str, Decimal]) -> None:
        self.prices[meter.meter_id] = dict(prices)

    async def valve(self, meter: MeterAddress, action: ValveAction) -> None:
        raise NotImplementedError

    async def write_limits(self, meter: MeterAddress, limits: Mapping[str, Decimal]) -> None:
        raise NotImplementedError

    async def sync_clock(self, meter: MeterAddress, now: datetime) -> None:
        raise NotImplementedError


def executor(db: Database, clock: FakeClock, driver: Meters) -> CommandExecutor:
    async def sleep(seconds: float) -> None:
        clock.advance(timedelta(seconds=seconds))

    config = ExecutorConfig(retry=RetryPolicy(first_backoff_s=5), batch_size=4)
    return CommandExecutor(db, lambda _target: driver, config=config, clock=clock, sleep=sleep)


async def drain(db: Database, clock: FakeClock, *workers: CommandExecutor) -> None:
    """Run the workers side by side until no command is open, moving the clock to what is due."""
    for _ in range(100):
        with db.read() as conn:
            due = sorted(
                conn.execute(
                    select(commands.c.next_attempt_at).where(commands.c.status.in_(OPEN_STATUSES))
                ).scalars()
            )
        if not due:
            return
        clock.now = max(clock.now, due[0])
        await asyncio.gather(*(worker.run_once() for worker in workers))
    raise AssertionError("commands still open")


def meter(db: Database, org: Org, number: str) -> int:
    spec = metering.MeterSpec(
        number=number,
        utility="electricity",
        kind="single_phase",
        protocol="dlt645",
        address=number.rjust(12, "0")[-12:],
        room_id=org.room_id,
    )
    return metering.create_meter(db, organisation_id=org.id, spec=spec, actor=ACTOR)


def trip(db: Database, org: Org, meter_id: int, key: str) -> int:
    return service.send_command(
        db,
        organisation_id=org.id,
        meter_id=meter_id,
        kind="relay_trip",
        params=None,
        actor=ACTOR,
        idempotency_key=key,
    ).command.id


# --- lifecycle ---------------------------------------------------------------------------------


def test_command_lifecycle_is_persisted_with_its_events(db: Database, clock: FakeClock) -> None:
    org = make_org(db)
    meter_id = meter(db, org, "M1")
    command_id = trip(db, org, meter_id, "trip-1")
    driver = Meters(clock)
    driver.lose_next_send = 1
    asyncio.run(drain(db, clock, executor(db, clock, driver)))
    with db.read() as conn:
        row = conn.execute(select(commands).where(commands.c.id == command_id)).mappings().one()
        status = conn.execute(select(device_status)).mappings().one()
        actions = conn.execute(select(audit_log.c.action).order_by(audit_log.c.id)).scalars().all()
    assert (row["status"], row["reason"], row["attempts"]) == ("confirmed", None, 2)
    assert row["sent_at"] == T0 and row["finished_at"] > row["sent_at"]
    log = service.command_log(db, organisation_id=org.id, command_id=command_id)
    assert [e.event for e in log.events] == ["created", "sent", "retry", "sent", "confirmed"]
    assert log.events[2].detail["reason"] == "no answer after 1 attempt"
    assert (status["meter_id"], status["relay"], status["state"]) == (meter_id, "open", "online")
    assert actions[-2:] == ["command.send", "command.confirmed"]
    assert driver.sends == Counter({(meter_id, "trip"): 2})


# --- claiming ----------------------------------------------------------------------------------


def test_two_claim_transactions_never_take_the_same_command(db: Database, clock: FakeClock) -> None:
    if db.dialect != "postgresql":
        pytest.skip("row locks with SKIP LOCKED are PostgreSQL's; SQLite has one writer")
    org = make_org(db)
    ids = {trip(db, org, meter(db, org, f"M{n}"), f"k{n}") for n in range(12)}
    first_claimed, second_done = threading.Event(), threading.Event()
    taken: dict[str, list[int]] = {}

    def worker(name: str, before: threading.Event | None, after: threading.Event | None) -> None:
        if before is not None:
            before.wait(10)
        with db.engine.begin() as conn:
            taken[name] = claiming.claim(conn, now=T0, limit=8, lease=timedelta(minutes=3))
            if after is not None:
                after.set()
            if name == "first":
                second_done.wait(10)  # hold the row locks while the second claims

    threads = [
        threading.Thread(target=worker, args=("first", None, first_claimed)),
        threading.Thread(target=worker, args=("second", first_claimed, second_done)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(taken["first"]) == 8 and len(taken["second"]) == 4
    assert not set(taken["first"]) & set(taken["second"])
    assert set(taken["first"]) | set(taken["second"]) == ids


def test_two_executors_send_every_command_exactly_once(db: Database, clock: FakeClock) -> None:
    org = make_org(db)
    meters = [meter(db, org, f"M{n}") for n in range(10)]
    for n, meter_id in enumerate(meters):
        trip(db, org, meter_id, f"k{n}")
    driver = Meters(clock)
    asyncio.run(drain(db, clock, executor(db, clock, driver), executor(db, clock, driver)))
    assert driver.sends == Counter({(m, "trip"): 1 for m in meters})
    assert {c.status for c in service.list_commands(db, organisation_id=org.id)} == {"confirmed"}


class SettlingRelays(Meters):
    """Relays that land only once ``expected`` trips are on the wire at the same time."""

    def __init__(self, clock: FakeClock, expected: int) -> None:
        super().__init__(clock)
        self.expected, self.on_the_wire = expected, 0
        self.all_sent = asyncio.Event()

    async def relay(self, meter: MeterAddress, action: RelayAction, deadline: datetime) -> None:
        self.on_the_wire += 1
        if self.on_the_wire >= self.expected:
            self.all_sent.set()
        await self.all_sent.wait()
        await super().relay(meter, action, deadline)


def test_the_executor_works_many_meters_at_once(db: Database, clock: FakeClock) -> None:
    """A relay's worker holds its meter while the relay settles (≥ 1 s), so the number of meters
    worked at once bounds the commands sent per second. With 8 (the default until sitting 19),
    a building's trips queued for seconds before they were even claimed (`bench control`)."""
    org = make_org(db)
    meters = [meter(db, org, f"M{n}") for n in range(30)]
    for n, meter_id in enumerate(meters):
        trip(db, org, meter_id, f"k{n}")
    driver = SettlingRelays(clock, expected=len(meters))

    async def sleep(seconds: float) -> None:
        clock.advance(timedelta(seconds=seconds))
        await asyncio.sleep(0)

    worker = CommandExecutor(db, lambda _target: driver, clock=clock, sleep=sleep)

    async def scenario() -> int:
        running = asyncio.create_task(worker.run())
        with suppress(TimeoutError):
            await asyncio.wait_for(driver.all_sent.wait(), 10)
        at_once = driver.on_the_wire
        driver.all_sent.set()  # let the ones on the wire land, then stop
        await asyncio.sleep(0.5)
        worker.stop()
        await running
        return at_once

    assert asyncio.run(scenario()) == len(meters)
    assert driver.sends == Counter({(m, "trip"): 1 for m in meters})
    assert {c.status for c in service.list_commands(db, organisation_id=org.id)} == {"confirmed"}


class HeldOnTheWire(Meters):
    """A relay frame that stays on the wire until the test lets it land."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.on_the_wire = asyncio.Event()
        self.land = asyncio.Event()
        self.wire: list[str] = []

    async def relay(self, meter: MeterAddress, action: RelayAction, deadline: datetime) -> None:
        self.wire.append(action.value)
        if action is RelayAction.TRIP:
            self.on_the_wire.set()
            await self.land.wait()
        await super().relay(meter, action, deadline)


def test_no_executor_acts_on_a_meter_another_is_sending_to(db: Database, clock: FakeClock) -> None:
    """Two executors (two ``meterdesk run`` on PostgreSQL). The trip is on the wire when the
    tenant pays and a close supersedes it. Before, the second executor claimed the close at
    once: it could land before the trip, leaving a paying tenant cut off (until the hourly
    drift check), and be confirmed from a read taken before the trip landed. Now the second
    executor takes nothing of that meter until the first let go of it, then sends the close."""
    org = make_org(db)
    meter_id = meter(db, org, "M1")
    trip(db, org, meter_id, "trip-1")
    driver = HeldOnTheWire(clock)
    first, second = executor(db, clock, driver), executor(db, clock, driver)

    async def scenario() -> tuple[int, int]:
        sending = asyncio.create_task(first.run_once())
        await asyncio.wait_for(driver.on_the_wire.wait(), 10)
        close = service.send_command(
            db,
            organisation_id=org.id,
            meter_id=meter_id,
            kind="relay_close",
            params=None,
            actor=ACTOR,
            idempotency_key="close-1",
        ).command.id
        taken_while_sending = await second.run_once()
        driver.land.set()
        await sending
        return taken_while_sending, close

    taken_while_sending, close = asyncio.run(scenario())
    assert taken_while_sending == 0
    asyncio.run(drain(db, clock, second))
    assert driver.wire == ["trip", "close"]
    assert driver.relays[meter_id] == "closed"
    found = {c.id: c.status for c in service.list_commands(db, organisation_id=org.id)}
    assert found[close] == "confirmed"
    with db.read() as conn:  # every meter let go of
        assert conn.execute(select(commands.c.worked_until)).scalars().all() == [None, None]


def test_a_claim_waits_for_nothing_but_skips_a_meter_another_claim_is_taking(
    db: Database, clock: FakeClock
) -> None:
    if db.dialect != "postgresql":
        pytest.skip("row locks with SKIP LOCKED are PostgreSQL's; SQLite has one writer")
    org = make_org(db)
    meter_id = meter(db, org, "M1")
    older = trip(db, org, meter_id, "k1")
    copied = [c.name for c in commands.columns if c.name not in ("id", "idempotency_key")]
    with db.transaction() as conn:  # a command written without send_command: not superseded
        conn.execute(
            commands.insert().from_select(
                [*copied, "idempotency_key"],
                select(
                    *[commands.c[name] for name in copied],
                    commands.c.idempotency_key.concat("-again"),
                ).where(commands.c.id == older),
            )
        )
    first_claimed, second_done = threading.Event(), threading.Event()
    taken: dict[str, list[int]] = {}
    lease = timedelta(minutes=3)

    def worker(name: str) -> None:
        if name == "second":
            first_claimed.wait(10)
        with db.engine.begin() as conn:
            limit = 1 if name == "first" else 8
            taken[name] = claiming.claim(conn, now=T0, limit=limit, lease=lease)
            if name == "first":
                first_claimed.set()
                second_done.wait(10)  # hold the meter while the second claims
            else:
                second_done.set()

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert taken["first"] == [older] and taken["second"] == []
    later = T0 + timedelta(minutes=1)
    with db.engine.begin() as conn:  # committed: the meter is held by the first command's lease
        assert claiming.claim(conn, now=later, limit=8, lease=lease) == []
        claiming.release(conn, [(older, T0 + lease)])
        [again] = claiming.claim(conn, now=later, limit=8, lease=lease)
        assert again != older  # the other one; the first is leased until T0 + lease


# --- meter billing -----------------------------------------------------------------------------


def meter_billing_account(
    db: Database, *, credit: str = "100"
) -> tuple[Org, int, account_service.OpenedAccount]:
    org = make_org(db)
    tariff_id = make_tariff(db, org, definition=flat_definition("0.6537"))
    meter_id = meter(db, org, "M1")
    request = account_service.OpenAccount(
        number="A-1",
        customer_id=org.customer_id,
        room_id=org.room_id,
        meters=[account_service.MeterOpening(meter_id, tariff_id, D("1000"))],
        billing_mode="meter",
        initial_credit=credit,
    )
    opened = account_service.open_account(db, organisation_id=org.id, request=request, actor=ACTOR)
    return org, meter_id, opened


def snapshot(meter_id: int, money: str, count: int, at: datetime) -> Snapshot:
    return Snapshot(
        meter_id=meter_id, measured_at=at, remaining_money=D(money), purchase_count=count
    )


def test_recharge_is_pushed_once_per_transfer_and_confirmed_by_the_counter(
    db: Database, clock: FakeClock
) -> None:
    org, meter_id, opened = meter_billing_account(db)
    assert opened.initial_transfer_id is not None
    first = reconcile.push_recharge_for_transfer(db, opened.initial_transfer_id, ACTOR)
    again = reconcile.push_recharge_for_transfer(db, opened.initial_transfer_id, ACTOR)
    assert again.replayed and again.command.id == first.command.id
    assert first.command.params == {
        "amount": "100.00",
        "purchase_count": 1,
        "transfer_id": opened.initial_transfer_id,
    }
    driver = Meters(clock, money="3.00", count=4)  # the meter had been used before
    asyncio.run(drain(db, clock, executor(db, clock, driver)))
    done = service.command_log(db, organisation_id=org.id, command_id=first.command.id)
    assert (done.command.status, done.command.params["purchase_count"]) == ("confirmed", 5)
    assert driver.sends == Counter({(meter_id, "recharge"): 1}) and driver.money[meter_id] == D(
        "103.00"
    )


def test_emergency_credit_is_refused_on_meter_billing_which_has_the_meters_overdraft(
    db: Database, clock: FakeClock
) -> None:
    """Emergency credit on the platform's wallet would never reach the meter, and the next
    recharge would push all of itself to the meter while repaying it here."""
    org, _, _ = meter_billing_account(db, credit="0.50")
    before = row_counts(db)
    with pytest.raises(ConflictError, match="表端计费"):
        control_admin.set_account_policy(
            db,
            organisation_id=org.id,
            number="A-1",
            actor=ACTOR,
            outbox=RecordingOutbox(),
            change=control_admin.PolicyChange(emergency_credit="10.00"),
        )
    with pytest.raises(ConflictError, match="表端计费"):
        control_admin.take_emergency_credit(
            db, organisation_id=org.id, number="A-1", actor=ACTOR, outbox=RecordingOutbox()
        )
    assert row_counts(db) == before


def test_push_is_refused_for_platform_billing_and_reversed_recharges(
    db: Database, clock: FakeClock
) -> None:
    org, _, opened = meter_billing_account(db)
    paid = cashier.recharge(
        db,
        organisation_id=org.id,
        account_id=opened.account_id,
        amount="20",
        method="cash",
        actor=ACTOR,
        idempotency_key="desk-1",
    )
    cashier_refund.reverse(
        db,
        organisation_id=org.id,
        transfer_id=paid.transfer_id,
        actor=ACTOR,
        idempotency_key="undo-1",
    )
    with pytest.raises(ConflictError, match="was reversed"):
        reconcile.push_recharge_for_transfer(db, paid.transfer_id, ACTOR)
    other = make_org(db, name="Org B")
    tariff = make_tariff(db, other)
    platform_meter = meter(db, other, "P1")
    request = account_service.OpenAccount(
        number="P-1",
        customer_id=other.customer_id,
        room_id=other.room_id,
        meters=[account_service.MeterOpening(platform_meter, tariff, D("5"))],
        initial_credit="10",
    )
    platform = account_service.open_account(
        db, organisation_id=other.id, request=request, actor=ACTOR
    )
    assert platform.initial_transfer_id is not None
    with pytest.raises(ConflictError, match="platform billing"):
        reconcile.push_recharge_for_transfer(db, platform.initial_transfer_id, ACTOR)


def test_tariff_prices_are_pushed_to_the_meter(db: Database, clock: FakeClock) -> None:
    org, meter_id, _ = meter_billing_account(db)
    sent = reconcile.push_tariff_prices(
        db, organisation_id=org.id, meter_id=meter_id, actor=ACTOR, idempotency_key="tp-1"
    )
    assert sent.command.params == {
        "prices": dict.fromkeys(("sharp", "peak", "flat", "valley"), "0.6537")
    }
    driver = Meters(clock)
    asyncio.run(drain(db, clock, executor(db, clock, driver)))
    assert driver.prices[meter_id]["flat"] == D("0.6537")


def test_reconciliation_flags_a_meter_whose_mirrored_money_differs(
    db: Database, clock: FakeClock
) -> None:
    org, meter_id, opened = meter_billing_account(db)
    assert opened.initial_transfer_id is not None
    reconcile.push_recharge_for_transfer(db, opened.initial_transfer_id, ACTOR)
    asyncio.run(drain(db, clock, executor(db, clock, Meters(clock))))
    Ingestor(db).ingest([reading(meter_id, minutes(60), "1010")])  # 10 kWh × 0.6537 = 6.537

    agreed = reconcile.mirror(db, snapshot(meter_id, "93.46", 1, minutes(61)))
    assert agreed is not None and (agreed.verdict, agreed.difference) == ("ok", D("0.00"))
    assert (agreed.platform_balance, agreed.priced_usage, agreed.expected_meter_money) == (
        D("100.00"),
        D("6.54"),
        D("93.46"),
    )

    reconcile.mirror(db, snapshot(meter_id, "80.00", 1, minutes(62)))
    cashier.recharge(
        db,
        organisation_id=org.id,
        account_id=opened.account_id,
        amount="50",
        method="cash",
        actor=ACTOR,
        idempotency_key="desk-2",
    )
    [row] = reconcile.reconcile(db, org.id)
    assert (row.account_number, row.meter_number, row.meter_money) == ("A-1", "M1", D("80.00"))
    assert (row.platform_balance, row.not_on_meter, row.expected_meter_money) == (
        D("150.00"),
        D("50.00"),
        D("93.46"),
    )
    assert (row.purchases_expected, row.purchases_meter) == (1, 1)
    assert (row.difference, row.verdict) == (D("-13.46"), "money differs by -13.46")
    # The desk recharge was pushed to the meter in its own transaction; the push is still pending.
    assert any("pending" in note for note in row.notes), row.notes

    other_top_up = reconcile.mirror(db, snapshot(meter_id, "93.46", 2, minutes(63)))
    assert other_top_up is not None
    assert other_top_up.verdict == "purchases differ: meter 2, expected 1"


def test_mirror_of_a_platform_billed_meter_only_keeps_the_status(
    db: Database, clock: FakeClock
) -> None:
    org = make_org(db)
    meter_id = meter(db, org, "M1")
    assert reconcile.mirror(db, snapshot(meter_id, "5.00", 3, T0)) is None
    with db.read() as conn:
        row: Any = conn.execute(
            select(device_status.c.remaining_money, device_status.c.purchase_count)
        ).one()
    assert tuple(row) == (D("5.00"), 3)
