"""``meterdesk demo``: a sample property on simulated meters, in accelerated time, then live.

:func:`run_demo` builds "示例物业 Demo Property" through the real use cases (``sample.py``, from
the seeded data in ``plan.py``), puts every meter on the simulator (``devices.py``: DL/T 645
and CJ/T 188 lines on loopback sockets, registered as buses, meters linked, an alarm plan on
every account, messages to a log channel), then moves a
:class:`~meterdesk.shared.time.FakeClock` in 15-minute steps: every step the real poller reads
every meter over its line, the readings go through the real ingest, the control loop's cuts and
restores go out to the simulated relays and valves and are confirmed by read-back, messages are
delivered, and the cashier recharges tenants who went below zero (``simulation.py``). What
happens is printed as it happens (``view.py``); at the end a summary and the CLI commands to
look closer. With ``then`` given, the simulation switches to real time and ``meterdesk run``'s
runtime keeps polling, commanding and notifying while ``then`` runs (the console).

The simulated days end before the real "now" (the run starts at a local midnight ``hours``
back), so the data the CLI shows afterwards is all in the past, as it would be in production,
and ``meterdesk account statement`` finds it with its default period.
"""

from __future__ import annotations

import math
import time as wall
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from rich.console import Console

from meterdesk.bootstrap import App, build
from meterdesk.demo import storage
from meterdesk.demo.devices import DemoDevices
from meterdesk.demo.plan import SITE, TIMEZONE, build_plan, build_vacancies
from meterdesk.demo.queries import account_states, check_ledger, quantity_accounts
from meterdesk.demo.sample import SampleProperty, build_property
from meterdesk.demo.simulation import STEP, Simulation, level
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


def run_demo(
    *,
    hours: float = 72.0,
    speed: float = 7200.0,
    fresh: bool = True,
    then: Callable[[DemoResult], None] | None = None,
) -> DemoResult:
    """Run the demo for ``hours`` simulated hours at ``speed`` simulated seconds per real second
    (``speed <= 0``: as fast as possible). ``fresh`` starts from an empty demo database. With
    ``then``, the simulated meters go on in real time under the runtime while ``then`` runs."""
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
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _run(
            app,
            clock,
            console,
            hours=hours,
            speed=speed,
            where=_where(settings, prepared),
            data_dir=settings.data_dir,
            then=then,
        )
    finally:
        app.db.engine.dispose()


def _run(
    app: App,
    clock: FakeClock,
    console: Console,
    *,
    hours: float,
    speed: float,
    where: str,
    data_dir: Path,
    then: Callable[[DemoResult], None] | None,
) -> DemoResult:
    organisation = storage.free_organisation_name(app.db)
    tenants = build_plan()
    vacancies = build_vacancies(tenants)
    meters = sum(len(t.meters) for t in tenants) + sum(len(v.meters) for v in vacancies)
    console.print(
        f"meterdesk demo — building {organisation}: site {SITE} ({TIMEZONE}), "
        f"{len(tenants) + len(vacancies)} rooms ({len(tenants)} let, {len(vacancies)} empty, "
        f"{sum(v.preset is not None for v in vacancies)} of them with their tenant pre-entered), "
        f"{meters} meters, 3 tariffs …",
        markup=False,
        soft_wrap=True,
    )
    began = wall.monotonic()
    try:
        sample = build_property(
            app, organisation=organisation, tenants=tenants, vacancies=vacancies
        )
    except KeyboardInterrupt:
        console.print("stopped while building the sample property", markup=False)
        return DemoResult(organisation, where, None, [])
    devices = DemoDevices(app, sample, clock, data_dir)
    try:
        devices.start(tenants)
        intro = _intro(app, sample, hours, speed, wall.monotonic() - began, devices)
        console.print(intro, markup=False, soft_wrap=True)
        result = _simulate(
            app, clock, console, sample, devices, hours=hours, speed=speed, where=where
        )
        if then is not None and result.outcome is not None and not result.outcome.tally.interrupted:
            devices.go_live()
            then(result)
        return result
    finally:
        devices.close()


def _simulate(
    app: App,
    clock: FakeClock,
    console: Console,
    sample: SampleProperty,
    devices: DemoDevices,
    *,
    hours: float,
    speed: float,
    where: str,
) -> DemoResult:
    tz = zone(TIMEZONE)
    simulation = Simulation(app, clock, sample, devices, tz)
    steps = math.ceil(hours * 3600 / STEP.total_seconds())
    started = clock.now
    with make_view(console, tz, sample.tenants) as view:
        tally = simulation.run(steps, speed, view.event, view.hour)
    outcome = Outcome(
        sample.organisation,
        started,
        clock.now,
        tally,
        account_states(app.db, organisation_id=sample.organisation_id),
        check_ledger(app.db, organisation_id=sample.organisation_id),
        quantity_accounts(app.db, organisation_id=sample.organisation_id),
    )
    tips = suggestions(outcome, where=where, log=devices.log_path)
    console.print()
    console.print("\n".join([*summary_lines(outcome), "", *tips]), markup=False, soft_wrap=True)
    return DemoResult(sample.organisation, where, outcome, tips)


def _intro(
    app: App,
    sample: SampleProperty,
    hours: float,
    speed: float,
    took_s: float,
    devices: DemoDevices,
) -> str:
    states = account_states(app.db, organisation_id=sample.organisation_id)
    low = sum(1 for state in states.values() if level(state) > 0)
    start = app.db.clock().astimezone(zone(TIMEZONE))
    pace = "as fast as possible" if speed <= 0 else f"{speed:g}× real time"
    lines = ", ".join(f"{name} on 127.0.0.1:{port}" for name, port in devices.lines())
    return (
        f"built in {took_s:.1f} s; {low} accounts start low on credit.\n"
        f"Simulated meters answer on loopback: {lines}.\n"
        f"Polling every meter every 15 simulated minutes from {start:%a %Y-%m-%d %H:%M} for "
        f"{hours:g} h, {pace} (Ctrl-C stops with a summary); messages go to "
        f"{devices.log_path}.\n"
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
