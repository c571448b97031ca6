"""``meterdesk demo`` runs end to end through the real use cases, leaves a ledger that balances,
and the CLI commands it suggests work on the database it wrote."""

from __future__ import annotations

import json
import shlex
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, func, select, text
from typer.testing import CliRunner

from meterdesk.billing import quantity, summaries
from meterdesk.billing.tables import account_controls, accounts, meter_assignments, quantity_lots
from meterdesk.cli import cli
from meterdesk.cli import common as cli_common
from meterdesk.db import migrate
from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.demo import DemoResult, run_demo
from meterdesk.demo.plan import ORGANISATION
from meterdesk.demo.summary import summary_lines
from meterdesk.devices.commands.service import send_command
from meterdesk.devices.tables import commands, device_status
from meterdesk.ledger.tables import ledger_accounts, transfers
from meterdesk.metering.tables import meters, readings
from meterdesk.notifications import summary_settings
from meterdesk.settings import Settings
from meterdesk.shared.money import from_fen
from meterdesk.shared.time import system_clock
from meterdesk.sites.service import create_organisation
from meterdesk.sites.tables import organisations
from support.database import PG_URL, postgres_unavailable

pytestmark = pytest.mark.integration

LAUNDRY = "A-0104"  # 公共洗衣房 Laundry, on quantity credit (购量)


def _forget_cli_app() -> None:
    """The CLI builds its app once per process: close it, so the next test builds its own."""
    if cli_common.app.cache_info().currsize:
        cli_common.app().db.engine.dispose()
    cli_common.app.cache_clear()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The URL the demo and the CLI will both use: the embedded SQLite file in a temporary
    data directory, or a new PostgreSQL schema given as METERDESK_DATABASE_URL."""
    monkeypatch.setenv("METERDESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("METERDESK_DATABASE_URL", raising=False)
    _forget_cli_app()
    if request.param == "sqlite":
        yield Settings().resolved_database_url()
    else:
        reason = postgres_unavailable()
        if reason:
            pytest.skip(f"PostgreSQL not answering: {reason}")
        schema = f"d_{uuid.uuid4().hex[:12]}"
        admin = create_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        migrate.upgrade(url)
        monkeypatch.setenv("METERDESK_DATABASE_URL", url)
        try:
            yield url
        finally:
            _forget_cli_app()
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    _forget_cli_app()


def _cli_args(result: DemoResult, marker: str) -> list[str]:
    line = next(line for line in result.suggestions if marker in line)
    return shlex.split(line)[1:]  # without the program name


def test_demo_bills_readings_keeps_the_ledger_balanced_and_its_statement_command_works(
    database: str,
) -> None:
    result = run_demo(hours=6, speed=0, fresh=True)

    outcome = result.outcome
    assert outcome is not None and not outcome.tally.interrupted
    # ~100 simulated meters read over their lines every 15 minutes
    assert outcome.tally.delivered == outcome.tally.accepted >= 100 * 6 * 4
    assert outcome.tally.deducted_fen > 0
    assert outcome.tally.messages > 0  # tenants who start low were warned (log channel)
    engine = build_engine(database)
    try:
        with engine.connect() as conn:
            total = conn.execute(select(func.sum(ledger_accounts.c.balance_fen))).scalar_one()
            balances = dict(
                conn.execute(select(ledger_accounts.c.id, ledger_accounts.c.balance_fen)).all()
            )
            moved = dict.fromkeys(balances, 0)
            for debit, credit, amount in conn.execute(
                select(
                    transfers.c.debit_account_id,
                    transfers.c.credit_account_id,
                    transfers.c.amount_fen,
                )
            ):
                moved[debit] -= amount
                moved[credit] += amount
    finally:
        engine.dispose()
    assert total == 0
    assert moved == balances

    invoked = CliRunner().invoke(cli, _cli_args(result, "--json"))

    assert invoked.exit_code == 0, invoked.output
    statement = json.loads(invoked.stdout)
    reasons = {line["reason"] for line in statement["lines"]}
    assert {"recharge", "deduction"} <= reasons
    changes = sum(Decimal(line["balance_change"]) for line in statement["lines"])
    assert Decimal(statement["opening_balance"]) + changes == Decimal(statement["closing_balance"])


def test_the_other_suggested_commands_work_after_the_demo(database: str) -> None:
    result = run_demo(hours=2, speed=0, fresh=True)
    runner = CliRunner()

    for marker in ("account balance", "quarantine list", "tariff show", "recharge"):
        invoked = runner.invoke(cli, _cli_args(result, marker))
        assert invoked.exit_code == 0, f"{marker}: {invoked.output}"


def test_fresh_never_deletes_a_database_that_holds_someone_elses_organisation(
    database: str,
) -> None:
    if not database.startswith("sqlite"):
        pytest.skip("only the embedded SQLite file is ever deleted")
    run_demo(hours=1, speed=0, fresh=True)
    again = run_demo(hours=1, speed=0, fresh=True)
    assert again.organisation == ORGANISATION  # nothing but the demo's data: started over

    engine = build_engine(database)
    try:
        create_organisation(Database(engine, system_clock), name="Real Property Ltd")
    finally:
        engine.dispose()
    kept = run_demo(hours=1, speed=0, fresh=True)

    assert kept.organisation == f"{ORGANISATION} (2)"
    invoked = CliRunner().invoke(cli, ["account", "list", "--org", "Real Property Ltd"])
    assert invoked.exit_code == 0 and "no accounts" in invoked.output


@dataclass(frozen=True)
class Day:
    result: DemoResult
    url: str
    data: Path


@pytest.fixture(scope="module")
def a_day(tmp_path_factory: pytest.TempPathFactory) -> Day:
    """One simulated day of the demo on embedded SQLite, run once for the tests that look at
    what a whole day did (about half a minute)."""
    data = tmp_path_factory.mktemp("a-day") / "data"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("METERDESK_DATA_DIR", str(data))
        patch.delenv("METERDESK_DATABASE_URL", raising=False)
        result = run_demo(hours=24, speed=0, fresh=True)
        url = Settings().resolved_database_url()
    return Day(result, url, data)


def test_a_day_of_the_demo_cuts_and_restores_simulated_meters_confirmed_by_read_back(
    a_day: Day,
) -> None:
    result = a_day.result
    tally = result.outcome.tally if result.outcome else None
    assert tally is not None
    assert tally.cuts >= 1 and tally.restores >= 1 and tally.commands_failed == 0
    engine = build_engine(a_day.url)
    try:
        with engine.connect() as conn:
            finished = dict(
                conn.execute(
                    select(commands.c.status, func.count()).group_by(commands.c.status)
                ).all()
            )
            relays = dict(
                conn.execute(select(device_status.c.meter_id, device_status.c.relay)).all()
            )
            held = conn.execute(
                select(meter_assignments.c.meter_id, account_controls.c.state)
                .join(
                    account_controls,
                    account_controls.c.account_id == meter_assignments.c.account_id,
                )
                .where(meter_assignments.c.end_at.is_(None))
            ).all()
            cut_meters = {m for m, state in held if json.loads(state)["supply"] == "off"}
    finally:
        engine.dispose()
    assert finished.get("confirmed", 0) == tally.cuts + tally.restores
    assert "open" in relays.values()  # someone who never paid is still cut off
    # The meters only measure and switch (远程费控): a relay is open exactly where the platform
    # cut the supply. (The simulated meters billed themselves once and tripped tenants with
    # money when their own 100 yuan ran out.)
    assert {m for m, relay in relays.items() if relay == "open"} == cut_meters
    log = (a_day.data / "notifications.log").read_text(encoding="utf-8")
    assert "supply_cut" in log and "supply_restored" in log and "alarm_level_3" in log


def test_the_laundry_on_quantity_credit_is_cut_when_its_m3_run_out_and_restored_when_it_buys(
    a_day: Day,
) -> None:
    """The laundry buys water by the m³ (购量): its first 2.89 m³ run out before dawn, the
    valve closes, the laundry buys more at the desk and the valve opens; through it all each
    quantity account's money is what its lots are worth."""
    engine = build_engine(a_day.url)
    try:
        with engine.connect() as conn:
            held = {
                number: (account_id, wallet_id, arrears_id)
                for account_id, number, wallet_id, arrears_id in conn.execute(
                    select(
                        accounts.c.id,
                        accounts.c.number,
                        accounts.c.wallet_id,
                        accounts.c.arrears_id,
                    ).where(accounts.c.credit_unit == "quantity")
                )
            }
            laundry = held[LAUNDRY][0]
            switched = (
                conn.execute(
                    select(commands.c.kind)
                    .join(meter_assignments, meter_assignments.c.meter_id == commands.c.meter_id)
                    .where(
                        meter_assignments.c.account_id == laundry, commands.c.status == "confirmed"
                    )
                    .order_by(commands.c.id)
                )
                .scalars()
                .all()
            )
            # a purchase is one or more lots (a used-ahead buy-back, a tier block crossed)
            purchases = conn.execute(
                select(func.count(quantity_lots.c.transfer_id.distinct())).where(
                    quantity_lots.c.account_id == laundry
                )
            ).scalar_one()
            balances = dict(
                conn.execute(select(ledger_accounts.c.id, ledger_accounts.c.balance_fen)).all()
            )
            views = {number: quantity.view(conn, ids[0]) for number, ids in held.items()}
    finally:
        engine.dispose()

    assert len(held) == 3
    assert switched == ["valve_close", "valve_open"]
    assert purchases == 2  # the opening credit, then the desk
    for number, (_account, wallet, arrears) in held.items():
        found = views[number]
        money = from_fen(balances[wallet] + balances[arrears])  # arrears are negative
        worth = found.unused_value - max(-found.left, Decimal(0)) * found.price + found.remainder
        assert abs(money - worth) <= Decimal("0.01"), (number, money, found)
    assert views[LAUNDRY].left > 0  # bought more than it has used since
    outcome = a_day.result.outcome
    assert outcome is not None
    line = next(line for line in summary_lines(outcome) if "quantity credit (购量)" in line)
    assert "valves closed 1 / reopened 1" in line and "money matches the lots ✓" in line
    log = (a_day.data / "notifications.log").read_text(encoding="utf-8")
    cut = next(line for line in log.splitlines() if "supply_cut" in line and "Laundry" in line)
    assert "m³" in cut  # the laundry is told about its water in m³, not yuan


def test_after_the_history_the_runtime_confirms_a_console_relay_command_in_real_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the console's cut button does while ``meterdesk demo`` serves it: the command is
    sent by the live runtime over the simulated line and confirmed by reading the meter back."""
    monkeypatch.setenv("METERDESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("METERDESK_DATABASE_URL", raising=False)
    seen: dict[str, str] = {}

    def operator_cuts_a_room(result: DemoResult) -> None:
        engine = build_engine(Settings().resolved_database_url())
        db = Database(engine, system_clock)
        try:
            with db.read() as conn:
                org = conn.execute(select(organisations.c.id)).scalar_one()
                meter = conn.execute(
                    select(meters.c.id).where(meters.c.number == "E-001")
                ).scalar_one()
            sent = send_command(
                db,
                organisation_id=org,
                meter_id=meter,
                kind="relay_trip",
                params=None,
                actor="test:operator",
                idempotency_key="console-cut-E-001",
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with db.read() as conn:
                    status = conn.execute(
                        select(commands.c.status).where(commands.c.id == sent.command.id)
                    ).scalar_one()
                if status in ("confirmed", "failed"):
                    break
                time.sleep(0.2)
            seen["status"] = status
        finally:
            engine.dispose()

    run_demo(hours=1, speed=0, fresh=True, then=operator_cuts_a_room)

    assert seen["status"] == "confirmed"


def test_the_demo_turns_daily_summaries_on_and_its_day_is_summarised_after_midnight(
    a_day: Day,
) -> None:
    engine = build_engine(a_day.url)
    try:
        db = Database(engine, system_clock)
        with db.read() as conn:
            last = conn.execute(select(func.max(readings.c.measured_at))).scalar_one()
            (org,) = conn.execute(select(organisations.c.id)).scalars().all()
        assert summary_settings.cadence_of(db, organisation_id=org).value == "daily"
        # the history stops at local midnight; an hour later ``run`` summarises its day
        report = summaries.send_due(db, now=last + timedelta(hours=1))
        assert report.queued > 50 and report.already == 0
        day = (last - timedelta(minutes=1)).astimezone(ZoneInfo("Asia/Shanghai")).date()
        assert [p["period"] for p in report.periods] == [day.isoformat()]
    finally:
        engine.dispose()
