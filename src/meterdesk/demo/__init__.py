"""``meterdesk demo``: a sample property fed with readings in accelerated time.

:func:`run_demo` builds "示例物业 Demo Property" through the real use cases (``sample.py``, from
the seeded data in ``plan.py``), then moves a :class:`~meterdesk.shared.time.FakeClock` in
15-minute steps: every step, each simulated meter gives a reading from its load profile, a few
are re-sent, held back or garbled (``feed.py``), the batch goes through the real ``Ingestor``,
and the cashier recharges tenants who went below zero (``simulation.py``). What happens is
printed as it happens (``view.py``); at the end a summary and the CLI commands to look closer.

The simulated days end before the real "now" (the run starts at a local midnight ``hours``
back), so the data the CLI shows afterwards is all in the past, as it would be in production,
and ``meterdesk account statement`` finds it with its default period.
"""

from __future__ import annotations

import math
import random
import time as wall
from dataclasses import dataclass
from datetime import timedelta

from rich.console import Console

from meterdesk.bootstrap import App, build
from meterdesk.demo import storage
from meterdesk.demo.feed import STEP, Feed, simulated_meters
from meterdesk.demo.plan import SEED, SITE, TIMEZONE, build_plan
from meterdesk.demo.queries import account_states, check_ledger
from meterdesk.demo.sample import SampleProperty, build_property
from meterdesk.demo.simulation import Simulation, level
from meterdesk.demo.summary import Outcome, suggestions, summary_lines
from meterdesk.demo.view import make_view
from meterdesk.settings import Settings
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.time import FakeClock, local_midnight, system_clock, zone

__all__ = ["DemoResult", "run_demo"]

MAX_HOURS = 24 * 366


@dataclass(frozen=True)
class DemoResult:
    organisation: str
    database: str
    outcome: Outcome | None  # None when stopped while the property was being built
    suggestions: list[str]


def run_demo(*, hours: float = 72.0, speed: float = 7200.0, fresh: bool = True) -> DemoResult:
    """Run the demo for ``hours`` simulated hours at ``speed`` simulated seconds per real second
    (``speed <= 0``: as fast as possible). ``fresh`` starts from an empty demo database."""
    if not 0 < hours <= MAX_HOURS:
        raise ValidationError(f"hours: between 0 and {MAX_HOURS}, got {hours:g}")
    console = Console(highlight=False)
    settings = Settings()
    prepared = storage.prepare(settings, fresh=fresh)
    for note in prepared.notes:
        console.print(note, markup=False, soft_wrap=True)
    tz = zone(TIMEZONE)
    days = math.ceil(hours / 24)
    start = local_midnight(system_clock().astimezone(tz).date() - timedelta(days=days), tz)
    clock = FakeClock(start)
    app = build(settings, clock=clock)
    try:
        return _run(app, clock, console, hours=hours, speed=speed, where=_where(settings, prepared))
    finally:
        app.db.engine.dispose()


def _run(
    app: App, clock: FakeClock, console: Console, *, hours: float, speed: float, where: str
) -> DemoResult:
    organisation = storage.free_organisation_name(app.db)
    tenants = build_plan()
    meters = sum(len(t.meters) for t in tenants)
    console.print(
        f"meterdesk demo — building {organisation}: site {SITE} ({TIMEZONE}), {len(tenants)} "
        f"rooms and accounts, {meters} meters, 3 tariffs …",
        markup=False,
        soft_wrap=True,
    )
    began = wall.monotonic()
    try:
        sample = build_property(app, organisation=organisation, tenants=tenants)
    except KeyboardInterrupt:
        console.print("stopped while building the sample property", markup=False)
        return DemoResult(organisation, where, None, [])
    intro = _intro(app, sample, hours, speed, wall.monotonic() - began)
    console.print(intro, markup=False, soft_wrap=True)
    tz = zone(TIMEZONE)
    feed = Feed(simulated_meters(tenants, sample.meter_ids), tz, random.Random(SEED + 1))  # noqa: S311
    simulation = Simulation(app, clock, sample, feed, tz)
    steps = math.ceil(hours * 3600 / STEP.total_seconds())
    started = clock.now
    with make_view(console, tz, sample.tenants) as view:
        tally = simulation.run(steps, speed, view.event, view.hour)
    outcome = Outcome(
        organisation,
        started,
        clock.now,
        tally,
        account_states(app.db, organisation_id=sample.organisation_id),
        check_ledger(app.db, organisation_id=sample.organisation_id),
    )
    tips = suggestions(outcome, where=where)
    console.print()
    console.print("\n".join([*summary_lines(outcome), "", *tips]), markup=False, soft_wrap=True)
    return DemoResult(organisation, where, outcome, tips)


def _intro(app: App, sample: SampleProperty, hours: float, speed: float, took_s: float) -> str:
    states = account_states(app.db, organisation_id=sample.organisation_id)
    low = sum(1 for state in states.values() if level(state) > 0)
    start = app.db.clock().astimezone(zone(TIMEZONE))
    pace = "as fast as possible" if speed <= 0 else f"{speed:g}× real time"
    return (
        f"built in {took_s:.1f} s; {low} accounts start low on credit.\n"
        f"Feeding readings every 15 simulated minutes from {start:%a %Y-%m-%d %H:%M} for "
        f"{hours:g} h, {pace} (Ctrl-C stops with a summary).\n"
    )


def _where(settings: Settings, prepared: storage.Prepared) -> str:
    if settings.database_url:
        return f"keep METERDESK_DATABASE_URL set: the demo wrote to {prepared.shown}"
    if settings.data_dir.is_absolute():
        return f"the data is in {prepared.shown}; keep METERDESK_DATA_DIR set"
    absolute = settings.data_dir.resolve()
    return (
        f"the data is in {prepared.shown}: run these from this directory, "
        f"or set METERDESK_DATA_DIR={absolute}"
    )
