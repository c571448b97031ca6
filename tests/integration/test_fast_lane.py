"""The fast lane writes exactly what the general path writes: an equivalence property.

``Ingestor(db, fast_lane=True)`` may take an integer lane (``billing/fast_lane.py``) for the
common case of a batch — a meter with a cursor, readings after it, total register only, one
account, platform billing, single-line pricing — and must fall back to the general pipeline for
everything else. Nothing may tell the two apart afterwards. So a generated world is built once,
copied into two databases, and the same generated delivery is fed to one with
``fast_lane=True`` and to the other with ``fast_lane=False``: every batch's ``IngestReport``
(all fields, accepted keys included), every event's outcome and the whole state afterwards
(:func:`builders.snapshot`: readings, cursors, quarantine, active and superseded charge lines,
period totals, transfers with their keys, balances by ledger code, control state, device
commands and notification messages) must be identical, and both ledgers must balance.

The worlds mix the common case with everything that must leave the lane, often in one batch:
2-6 meters on accounts shared by several meters or single-meter ones; flat, time-of-use,
TOU + monthly adder tiers, monthly price tiers, yearly tiers, a tariff whose versions change
mid-stream, water; CT ratios 2 and 2.5; small register moduli that roll over; band registers
(sometimes missing, sometimes disagreeing with the total); implausible jumps, decreasing
readings, conflicting and exact duplicates in a batch and across batches, late readings,
readings of an unknown meter; meters opened without a reading (their first batch has no
cursor); meter-billing accounts (single-meter ones: the meter holds the money); little credit,
overdrafts, alarm plans and friendly hours so the control loop alarms, cuts and (after a
recharge) restores; streams across a local month and year end and across TOU boundaries;
between the two halves of the stream, a tariff change, a meter replacement (whose old device's
readings then arrive late), account openings and recharges.

The lane side also keeps what each batch wrote for the next (``keep_state``, SQLite), while the
reference side reads everything every batch: the events between batches (recharges, openings,
tariff changes, replacements) are outside writes the kept state must notice.

Also on PostgreSQL (fewer examples: the lane may use dialect-specific SQL), and once on a slice
of the bench workload (``meterdesk.bench``), deterministically.
"""

from __future__ import annotations

import itertools
import random
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from builders import (
    ACTOR,
    ALL_MONTHS,
    MONTH_TIERS,
    T0,
    TOU_DAY,
    TOU_PRICES,
    Org,
    check_books,
    flat_definition,
    local,
    make_org,
    make_tariff,
    snapshot,
    snapshot_difference,
    tou_definition,
    tou_tier_definition,
)
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, text

from meterdesk.bench import setup as bench_setup
from meterdesk.bench.workload import START as BENCH_START
from meterdesk.bench.workload import TIERED_TARIFF, TOU_TARIFF
from meterdesk.bench.workload import build as bench_workload
from meterdesk.billing import accounts, cashier, control_admin, corrections, tariff_change
from meterdesk.billing.ingest import IncomingReading, Ingestor, IngestReport
from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.db.metadata import load_all_tables
from meterdesk.metering import service as metering
from meterdesk.notifications import configuration
from meterdesk.shared.errors import MeterdeskError
from meterdesk.shared.time import FakeClock
from meterdesk.tariffs.service import find_tariff
from support.database import PG_URL, postgres_unavailable

pytestmark = [pytest.mark.integration, pytest.mark.slow]

D = Decimal
MONTH_END = local("2026-11-30 20:00")  # streams starting here cross into December
YEAR_END = local("2026-12-31 20:00")  # ... into January: a new month and a new tier year
UNKNOWN_METER = 99_999

# --- tariffs ----------------------------------------------------------------------------------

PRICE_TIERS = {  # monthly blocks in "price" mode, small enough for a short stream to climb
    "utility": "electricity",
    "versions": [
        {
            "effective_from": "2026-01-01",
            "prices": {},
            "tiers": {
                "period": "month",
                "mode": "price",
                "blocks": [
                    {"up_to": "5", "price": "0.55"},
                    {"up_to": "20", "price": "0.6"},
                    {"up_to": None, "price": "0.85"},
                ],
            },
        }
    ],
}
YEARLY_TIERS = {
    "utility": "electricity",
    "versions": [
        {
            "effective_from": "2026-01-01",
            "prices": {"flat": "0.6"},
            "tiers": {
                "period": "year",
                "mode": "adder",
                "blocks": [
                    {"up_to": "10", "price": "0"},
                    {"up_to": "40", "price": "0.1"},
                    {"up_to": None, "price": "0.3"},
                ],
            },
        }
    ],
}
VERSIONED = {  # a new version the day after each start: flat → TOU + tiers → price tiers → flat
    "utility": "electricity",
    "versions": [
        {"effective_from": "2026-01-01", "prices": {"flat": "0.6537"}},
        {
            "effective_from": "2026-11-03",
            "prices": TOU_PRICES,
            "seasons": [{"name": "all", "months": ALL_MONTHS, "workday": TOU_DAY}],
            "tiers": MONTH_TIERS,
        },
        {**PRICE_TIERS["versions"][0], "effective_from": "2026-12-01"},
        {"effective_from": "2027-01-01", "prices": {"flat": "0.71"}},
    ],
}
TARIFFS: dict[str, Callable[[], dict[str, Any]]] = {
    "flat": lambda: flat_definition("0.6537"),
    "tou": tou_definition,
    "tou_tier": tou_tier_definition,
    "price_tier": lambda: PRICE_TIERS,
    "bench_tou": lambda: TOU_TARIFF,
    "bench_tiered": lambda: TIERED_TARIFF,
    "yearly": lambda: YEARLY_TIERS,
    "versioned": lambda: VERSIONED,
    "water": lambda: flat_definition("4.1", utility="water"),
}
WITH_BANDS = ("tou", "tou_tier", "bench_tou")  # tariffs a meter with band registers may have
ALARMS = [
    {"level": 1, "amount": "20.00", "channels": ["sms"]},
    {"level": 2, "amount": "5.00", "channels": ["sms"]},
]

# --- generated worlds -------------------------------------------------------------------------

# A fault on a reading: an extra implausible reading 30 s after it ("jump", "down"), the same
# time with another total ("conflict"), no band registers ("no_bands") or disagreeing ones.
FAULTS = (None,) * 10 + ("jump", "down", "conflict", "no_bands", "bands_off")


@dataclass(frozen=True)
class MeterPlan:
    tariff: str
    modulus: Decimal
    opening: Decimal | None  # None: opened later, from its first reading (no cursor before)
    ct: str
    max_rate: str | None
    bands: bool
    account: int  # index into Scenario.accounts (meters opened later get their own)
    steps: tuple[tuple[int, int, str | None], ...]  # (minutes, advance in 1e-4, fault)
    cut: int  # readings (steps) in the first half of the stream
    switch: bool  # change tariff between the halves
    replace: bool  # replace the device between the halves


@dataclass(frozen=True)
class AccountPlan:
    credit: str
    overdraft: str
    mode: str  # platform | meter
    policy: str  # default | alarms | friendly (alarms, and a cut waits: always friendly)
    recharge: bool  # recharged between the halves


@dataclass(frozen=True)
class Scenario:
    start: datetime
    accounts: tuple[AccountPlan, ...]
    meters: tuple[MeterPlan, ...]
    unknown: bool  # readings for a meter id that does not exist


@st.composite
def meter_plans(draw: st.DrawFn) -> MeterPlan:
    tariff = draw(st.sampled_from(sorted(TARIFFS)))
    water = tariff == "water"
    if draw(st.booleans()):  # close below a 10 000 register, so the stream wraps
        modulus, opening = D(10_000), D(draw(st.integers(99_500_000, 99_999_999))).scaleb(-4)
    else:
        modulus, opening = D(1_000_000), D(draw(st.integers(0, 10**9))).scaleb(-4)
    bands = tariff in WITH_BANDS and draw(st.booleans())
    steps = draw(
        st.lists(
            st.tuples(st.integers(2, 240), st.integers(0, 30_000), st.sampled_from(FAULTS)),
            min_size=1,
            max_size=14,
        )
    )
    return MeterPlan(
        tariff=tariff,
        modulus=modulus,
        opening=None if draw(st.integers(0, 5)) == 0 else opening,
        ct="1" if water else draw(st.sampled_from(["1", "1", "2", "2.5"])),
        max_rate=draw(st.sampled_from([None, None, "60"])),
        bands=bands,
        account=draw(st.integers(0, 2)),
        steps=tuple(steps),
        cut=draw(st.integers(1, 14)),
        switch=not water and draw(st.integers(0, 3)) == 0,
        replace=not bands and draw(st.integers(0, 3)) == 0,
    )


account_plans = st.builds(
    AccountPlan,
    credit=st.sampled_from(["0", "3", "15", "40", "500"]),
    overdraft=st.sampled_from(["0", "0", "5", "30"]),
    mode=st.sampled_from(["platform", "platform", "platform", "meter"]),
    policy=st.sampled_from(["default", "default", "alarms", "friendly"]),
    recharge=st.booleans(),
)
scenarios = st.builds(
    Scenario,
    start=st.sampled_from([T0, MONTH_END, YEAR_END]),
    accounts=st.lists(account_plans, min_size=3, max_size=3).map(tuple),
    meters=st.lists(meter_plans(), min_size=2, max_size=6).map(tuple),
    unknown=st.booleans(),
)


# --- building the world -----------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    org: Org
    meter_ids: list[int]
    account_of: dict[int, str]  # meter index → account number (meters opened later: "L<i>")


def build_world(db: Database, scenario: Scenario) -> World:
    """Organisation, channels, tariffs, alarm plan, meters (remotely switchable, so cuts become
    commands) and the accounts of the meters with an opening reading."""
    setup_ingestor = Ingestor(db, fast_lane=False)  # the world is the same for both lanes
    org = make_org(db)
    configure = configuration.configure_channel
    sms = {"access_key_id": "id", "sign_name": "物业", "templates": {}}
    configure(db, organisation_id=org.id, channel="sms", provider="aliyun", config=sms, actor=ACTOR)
    hook = {"url": "https://hooks.example.com/md"}
    configure(
        db, organisation_id=org.id, channel="webhook", provider="webhook", config=hook, actor=ACTOR
    )
    control_admin.create_alarm_plan(
        db, organisation_id=org.id, name="alarms", levels=ALARMS, actor=ACTOR
    )
    control_admin.create_friendly_profile(
        db,
        organisation_id=org.id,
        name="always",
        windows=[{"start": "00:00", "end": "00:00"}],
        weekends=True,
        holidays=True,
        actor=ACTOR,
    )
    tariff_ids = {name: make_tariff(db, org, name, make()) for name, make in TARIFFS.items()}
    meter_ids = [
        make_switchable_meter(db, org, index, plan) for index, plan in enumerate(scenario.meters)
    ]
    account_of = {
        index: f"A{plan.account}" if plan.opening is not None else f"L{index}"
        for index, plan in enumerate(scenario.meters)
    }
    for number, account in enumerate(scenario.accounts):
        openings = [
            (meter_ids[i], tariff_ids[plan.tariff], f"{plan.opening}")
            for i, plan in enumerate(scenario.meters)
            if account_of[i] == f"A{number}"
        ]
        if len(openings) > 1:  # meter billing pushes money to exactly one meter
            account = replace(account, mode="platform")
        if openings:
            open_with_policy(db, org, f"A{number}", openings, account, setup_ingestor)
    return World(org, meter_ids, account_of)


def make_switchable_meter(db: Database, org: Org, index: int, plan: MeterPlan) -> int:
    water = plan.tariff == "water"
    spec = metering.MeterSpec(
        number=f"M{index}",
        utility="water" if water else "electricity",
        kind="water" if water else "single_phase",
        protocol="dlt645",
        address=f"{index + 1:012d}",
        room_id=org.room_id,
        register_modulus=plan.modulus,
        max_rate_per_hour=plan.max_rate,
        has_band_registers=plan.bands,
        ct_ratio=plan.ct,
    )
    return metering.create_meter(db, organisation_id=org.id, spec=spec, actor=ACTOR)


def open_with_policy(
    db: Database,
    org: Org,
    number: str,
    openings: list[tuple[int, int, str | None]],
    plan: AccountPlan,
    ingestor: Ingestor,
) -> None:
    request = accounts.OpenAccount(
        number=number,
        customer_id=org.customer_id,
        room_id=org.room_id,
        meters=[accounts.MeterOpening(m, t, None if r is None else D(r)) for m, t, r in openings],
        billing_mode=plan.mode,
        overdraft_limit=plan.overdraft,
        initial_credit=plan.credit,
    )
    accounts.open_account(
        db, organisation_id=org.id, request=request, actor=ACTOR, ingestor=ingestor
    )
    if plan.policy != "default":
        control_admin.set_account_policy(
            db,
            organisation_id=org.id,
            number=number,
            actor=ACTOR,
            outbox=ingestor.outbox,
            change=control_admin.PolicyChange(
                alarm_plan="alarms",
                friendly_profile="always" if plan.policy == "friendly" else None,
            ),
        )


# --- the delivery -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """Something an operator does between the two halves of the stream."""

    kind: str  # open | switch | replace | recharge
    meter: int = -1  # meter index (open, switch, replace)
    number: str = ""  # account number (recharge)
    tariff: str = ""  # the tariff to open with (open)
    replacement: corrections.Replacement | None = None


Step = list[IncomingReading] | Event


def meter_stream(
    plan: MeterPlan, meter_id: int, start: datetime
) -> tuple[list[IncomingReading], list[IncomingReading], corrections.Replacement | None]:
    """The meter's readings in order, faults included, split at ``plan.cut`` into two halves;
    with ``plan.replace`` the second half comes from a new device that starts at 3."""
    at, total = start, plan.opening if plan.opening is not None else D(100)
    bands = {"flat": total} if plan.bands else None
    cut = min(plan.cut, len(plan.steps))
    halves: tuple[list[IncomingReading], list[IncomingReading]] = ([], [])
    replacement = None
    for index, (gap, advance, fault) in enumerate(plan.steps):
        if index == cut and plan.replace and index > 0:
            replacement = corrections.Replacement(meter_id, at + timedelta(minutes=1), total, D(3))
            total = D(3)
        at += timedelta(minutes=gap)
        step = D(advance).scaleb(-4)
        total = (total + step) % plan.modulus
        if bands is not None:
            band = ("peak", "flat", "valley")[advance % 3]
            bands[band] = (bands.get(band, D(0)) + step) % plan.modulus
        sent = None if bands is None or fault == "no_bands" else dict(bands)
        if sent is not None and fault == "bands_off":
            sent["valley"] = sent.get("valley", D(0)) + 1
        half = halves[index >= cut]
        half.append(IncomingReading(meter_id, at, total, sent))
        later = at + timedelta(seconds=30)
        if fault == "jump":
            half.append(IncomingReading(meter_id, later, (total + 400) % plan.modulus))
        elif fault == "down":
            down = total - 5 if total >= 5 else total - 5 + plan.modulus  # Decimal % keeps signs
            half.append(IncomingReading(meter_id, later, down))
        elif fault == "conflict":
            half.append(IncomingReading(meter_id, at, total + D("0.0001"), sent))
    return halves[0], halves[1], replacement


def messy(stream: list[IncomingReading], rng: random.Random) -> list[list[IncomingReading]]:
    """Mostly in order (the common case), with some readings twice, some swapped with a near
    neighbour, cut into batches of 1-8."""
    ordered = sorted(stream, key=lambda r: r.measured_at)
    copies = [r for r in ordered for _ in range(rng.choice((1, 1, 1, 1, 2)))]
    for i in range(len(copies) - 1):
        if rng.random() < 0.15:
            j = min(len(copies) - 1, i + rng.randint(1, 6))
            copies[i], copies[j] = copies[j], copies[i]
    cuts, position = [0], 0
    while position < len(copies):
        position += rng.randint(1, 8)
        cuts.append(min(position, len(copies)))
    return [copies[a:b] for a, b in itertools.pairwise(cuts)]


def plan_delivery(scenario: Scenario, world: World, rng: random.Random) -> list[Step]:
    """First half (minus some held-back readings), the events, then the second half with the
    held-back readings arriving late."""
    first: list[IncomingReading] = []
    second: list[IncomingReading] = []
    events: list[Event] = []
    for index, plan in enumerate(scenario.meters):
        early, late, replacement = meter_stream(plan, world.meter_ids[index], scenario.start)
        held = [r for r in early if rng.random() < 0.15]
        first += [r for r in early if r not in held]
        second += late + held
        if plan.opening is None:
            events.append(Event("open", index, tariff=plan.tariff))
        if plan.switch:
            events.append(Event("switch", index))
        if replacement is not None:
            events.append(Event("replace", index, replacement=replacement))
    opened = set(world.account_of.values())
    for number, account in enumerate(scenario.accounts):
        if account.recharge and f"A{number}" in opened:
            events.append(Event("recharge", number=f"A{number}"))
    if scenario.unknown:
        first.append(IncomingReading(UNKNOWN_METER, scenario.start + timedelta(hours=1), D(5)))
        second.append(IncomingReading(UNKNOWN_METER, scenario.start + timedelta(hours=2), D(7)))
    return [*messy(first, rng), *events, *messy(second, rng)]


def apply_event(db: Database, ingestor: Ingestor, world: World, event: Event) -> str:
    """Carry out the event; its outcome ("ok" or the error) is part of what must be equal."""
    try:
        if event.kind == "open":
            plan = AccountPlan("5", "0", "platform", "default", recharge=False)
            tariff = find_tariff(db, organisation_id=world.org.id, name=event.tariff)
            openings = [(world.meter_ids[event.meter], tariff, None)]
            open_with_policy(db, world.org, world.account_of[event.meter], openings, plan, ingestor)
        elif event.kind == "switch":
            switch_tariff(db, world, event.meter)
        elif event.kind == "replace":
            assert event.replacement is not None
            corrections.replace_meter(
                db,
                organisation_id=world.org.id,
                replacement=event.replacement,
                actor=ACTOR,
                ingestor=ingestor,
            )
        else:
            cashier.recharge(
                db,
                organisation_id=world.org.id,
                account_id=account_id(db, world, event.number),
                amount="20",
                method="cash",
                actor=ACTOR,
                idempotency_key=f"recharge-{event.number}",
                outbox=ingestor.outbox,
            )
    except MeterdeskError as error:
        return f"{event.kind}: {type(error).__name__}: {error}"
    return f"{event.kind}: ok"


def account_id(db: Database, world: World, number: str) -> int:
    with db.read() as conn:
        account = accounts.account_by_number(conn, organisation_id=world.org.id, number=number)
    return int(str(account["id"]))


def switch_tariff(db: Database, world: World, meter: int) -> None:
    with db.read() as conn:
        point = tariff_change.switch_point(
            conn,
            organisation_id=world.org.id,
            account_id=account_id(db, world, world.account_of[meter]),
            meter_id=world.meter_ids[meter],
        )
    other = "tou_tier" if point.tariff == "flat" else "flat"
    tariff_change.change_tariff(
        db,
        organisation_id=world.org.id,
        account_id=point.account_id,
        meter_id=point.meter_id,
        tariff_id=find_tariff(db, organisation_id=world.org.id, name=other),
        actor=ACTOR,
        idempotency_key=f"switch-{point.meter_id}",
    )


# --- running it both ways ---------------------------------------------------------------------


@dataclass
class Outcome:
    results: list[IngestReport | str]  # per step: the batch's report or the event's outcome
    state: dict[str, Any]


def deliver(
    db: Database, clock: FakeClock, world: World, steps: list[Step], *, fast: bool
) -> Outcome:
    # The optimised side also keeps its state between batches (billing/ingest_state.py), so the
    # events between batches test that it notices every outside write; the reference side is
    # the plain general path, reading everything every batch.
    ingestor = Ingestor(db, fast_lane=fast, keep_state=fast)
    results: list[IngestReport | str] = []
    for step in steps:
        clock.advance(timedelta(seconds=1))
        if isinstance(step, Event):
            results.append(apply_event(db, ingestor, world, step))
        else:
            results.append(ingestor.ingest(step))
    check_books(db)
    return Outcome(results, snapshot(db))


def report_difference(fast: IngestReport | str, general: IngestReport | str) -> str:
    if isinstance(fast, str) or isinstance(general, str):
        return f"{fast!r} != {general!r}"
    return ", ".join(
        f"{f.name}: {getattr(fast, f.name)!r} != {getattr(general, f.name)!r}"
        for f in fields(IngestReport)
        if getattr(fast, f.name) != getattr(general, f.name)
    )


def assert_same(fast: Outcome, general: Outcome, steps: list[Step]) -> None:
    for index, (a, b) in enumerate(zip(fast.results, general.results, strict=True)):
        step = steps[index]
        what = repr(step) if isinstance(step, Event) else f"a batch of {len(step)} readings"
        assert a == b, (
            f"step {index} ({what}): the fast lane and the general path differ: "
            f"{report_difference(a, b)}"
        )
    difference = snapshot_difference(fast.state, general.state)
    assert not difference, (
        f"the fast lane (first) and the general path (second) differ:\n{difference}"
    )
    assert fast.state == general.state


# --- SQLite: one world, copied --------------------------------------------------------------


def on_sqlite(path: Path, start: datetime, work: Callable[[Database, FakeClock], Any]) -> Any:
    engine = build_engine(f"sqlite:///{path}")
    try:
        clock = FakeClock(start)
        return work(Database(engine=engine, clock=clock), clock)
    finally:
        engine.dispose()  # the last connection checkpoints the WAL: the file is complete


def run_both_on_sqlite(
    template: Path,
    start: datetime,
    build: Callable[[Database], Any],
    steps_for: Callable[[Any], list[Step]],
) -> Outcome:
    """Build the world once, copy it, deliver the same steps with and without the lane; the
    (common) outcome."""
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder) / "world.sqlite3"
        shutil.copy(template, base)
        world = on_sqlite(base, start, lambda db, clock: build(db))
        steps = steps_for(world)
        outcomes = {}
        for fast in (True, False):
            path = Path(folder) / f"fast-{fast}.sqlite3"
            shutil.copy(base, path)
            outcomes[fast] = on_sqlite(
                path, start, lambda db, clock, f=fast: deliver(db, clock, world, steps, fast=f)
            )
    assert_same(outcomes[True], outcomes[False], steps)
    return outcomes[True]


def examples(count: int) -> settings:
    """No shrinking: an example takes a third of a second, so shrinking a failure would run into
    the test timeout; the failure names the step or the table and rows that differ, and
    Hypothesis prints the (small) scenario."""
    return settings(
        max_examples=count,
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@examples(100)
@given(scenario=scenarios, rng=st.randoms(use_true_random=False))
def test_the_fast_lane_writes_what_the_general_path_writes(
    template: Path, scenario: Scenario, rng: random.Random
) -> None:
    seed = rng.randint(0, 2**32)  # the delivery's own generator: Hypothesis's is not uniform
    note(f"{scenario!r}, delivery seed {seed}")
    run_both_on_sqlite(
        template,
        scenario.start,
        lambda db: build_world(db, scenario),
        lambda world: plan_delivery(scenario, world, random.Random(seed)),
    )


# --- PostgreSQL: a schema per database ----------------------------------------------------------


@pytest.fixture
def postgres() -> Callable[[], Engine]:
    reason = postgres_unavailable()
    if reason:
        pytest.skip(f"PostgreSQL not answering: {reason}")
    return pg_schema


def pg_schema() -> Engine:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    engine = build_engine(f"{PG_URL}?options=-csearch_path%3D{schema}")
    load_all_tables().create_all(engine)
    return engine


def drop_schema(engine: Engine) -> None:
    schema = str(engine.url.query["options"]).split("=")[-1]
    engine.dispose()
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@examples(12)
@given(scenario=scenarios, rng=st.randoms(use_true_random=False))
def test_the_fast_lane_writes_what_the_general_path_writes_on_postgresql(
    postgres: Callable[[], Engine], scenario: Scenario, rng: random.Random
) -> None:
    """The same property, each side in its own schema (the world built in each, identically)."""
    seed = rng.randint(0, 2**32)
    note(f"{scenario!r}, delivery seed {seed}")
    outcomes, steps = {}, []
    for fast in (True, False):
        engine = postgres()
        try:
            clock = FakeClock(scenario.start)
            db = Database(engine=engine, clock=clock)
            world = build_world(db, scenario)
            steps = plan_delivery(scenario, world, random.Random(seed))
            outcomes[fast] = deliver(db, clock, world, steps, fast=fast)
        finally:
            drop_schema(engine)
    assert_same(outcomes[True], outcomes[False], steps)


# --- the bench workload -----------------------------------------------------------------------


def test_a_slice_of_the_bench_workload_bills_alike_both_ways(template: Path) -> None:
    """50 meters × 6 quarter hours, seed 1: TOU with adder tiers and price tiers, CT 2 and 5,
    rollovers, some accounts running into arrears (so cuts), duplicates, reordering and
    readings several batches late — in batches of 40, as ``bench ingest`` feeds them."""
    workload = bench_workload(seed=1, meters=50, rounds=6, batch_size=40)

    def steps_for(prepared: bench_setup.Prepared) -> list[Step]:
        return [[prepared.incoming(item) for item in batch] for batch in workload.batches]

    outcome = run_both_on_sqlite(
        template,
        BENCH_START + timedelta(hours=2),
        lambda db: bench_setup.prepare(db, workload),
        steps_for,
    )

    reports = [r for r in outcome.results if isinstance(r, IngestReport)]
    assert sum(r.accepted for r in reports) == len(workload.truth)
    assert any(r.late for r in reports) and any(r.duplicates for r in reports)
    assert outcome.state["commands"], "some accounts run out of credit: cuts"
