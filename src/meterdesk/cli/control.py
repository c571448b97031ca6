"""``meterdesk alarm-plan | policy | friendly | holiday | emergency | control-tick`` — the prepaid
control loop's settings from the shell (issue 4)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from meterdesk.billing import control_admin, control_tick
from meterdesk.billing.outbox import DatabaseOutbox
from meterdesk.cli.common import (
    ActorOption,
    JsonOption,
    OrgOption,
    app,
    emit,
    handled,
    load_json_file,
    organisation_id,
    who,
)
from meterdesk.cli.places import site_id
from meterdesk.shared.errors import ValidationError

alarm_cli = typer.Typer(
    help="Alarm plans (余额告警): levels by amount or days of credit left.", no_args_is_help=True
)
policy_cli = typer.Typer(
    help="An account's supply policy: cut, protect (保电), restore, emergency credit.",
    no_args_is_help=True,
)
friendly_cli = typer.Typer(
    help="Friendly hours: windows in which a due cut waits.", no_args_is_help=True
)
holiday_cli = typer.Typer(
    help="A site's public-holiday calendar (used by friendly hours).", no_args_is_help=True
)


@alarm_cli.command("create")
def alarm_create(
    name: str,
    org: OrgOption,
    file: Annotated[
        Path, typer.Option("--file", exists=True, dir_okay=False, help="JSON list of levels")
    ],
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Create an alarm plan, e.g. [{"level": 1, "amount": "20.00", "repeat_count": 2, "channels": ["sms"]}]."""
    with handled():
        new = control_admin.create_alarm_plan(
            app().db,
            organisation_id=organisation_id(org),
            name=name,
            levels=load_json_file(file),
            actor=who(actor),
        )
        emit({"id": new, "name": name}, as_json, lambda v: f"alarm plan {name} created (id {new})")


@policy_cli.command("set")
def policy_set(
    account: str,
    org: OrgOption,
    alarm_plan: Annotated[str | None, typer.Option(help="alarm plan name ('' to remove)")] = None,
    alarm_amount: Annotated[
        list[str] | None, typer.Option(help="per-account level amount, LEVEL=AMOUNT, e.g. 1=30.00")
    ] = None,
    friendly: Annotated[
        str | None, typer.Option(help="friendly-hours profile ('' to remove)")
    ] = None,
    cut_at: Annotated[str | None, typer.Option(help="zero | overdraft")] = None,
    protect: Annotated[
        bool | None, typer.Option("--protect/--no-protect", help="保电: never cut")
    ] = None,
    restore_above: Annotated[
        str | None, typer.Option(help="restore when the balance rises above this")
    ] = None,
    restore_mode: Annotated[str | None, typer.Option(help="direct | close_allowed")] = None,
    emergency_credit: Annotated[
        str | None, typer.Option(help="emergency credit amount (0 = none)")
    ] = None,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Change an account's supply policy; it takes effect at once (protect on restores a cut room)."""
    with handled():
        overrides = None
        if alarm_amount is not None:
            pairs = [item.split("=", 1) for item in alarm_amount]
            if any(len(pair) != 2 for pair in pairs):
                raise ValidationError("--alarm-amount: give LEVEL=AMOUNT, e.g. 1=30.00")
            overrides = {level.strip(): amount.strip() for level, amount in pairs}
        change = control_admin.PolicyChange(
            alarm_plan=alarm_plan,
            alarm_overrides=overrides,
            friendly_profile=friendly,
            cut_at=cut_at,
            protect=protect,
            restore_threshold=restore_above,
            restore_mode=restore_mode,
            emergency_credit=emergency_credit,
        )
        result = control_admin.set_account_policy(
            app().db,
            organisation_id=organisation_id(org),
            number=account,
            change=change,
            actor=who(actor),
            outbox=DatabaseOutbox(app().db.clock),
        )
        emit(result, as_json, lambda v: f"policy of account {account} updated")


@friendly_cli.command("create")
def friendly_create(
    name: str,
    org: OrgOption,
    window: Annotated[
        list[str] | None, typer.Option(help="HH:MM-HH:MM local time, repeatable")
    ] = None,
    weekends: Annotated[bool, typer.Option(help="no cut on Saturdays and Sundays")] = False,
    holidays: Annotated[bool, typer.Option(help="no cut on the site's holidays")] = False,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Create a friendly-hours profile, e.g. --window 20:00-08:00 --weekends --holidays."""
    with handled():
        windows = []
        for item in window or []:
            start, _, end = item.partition("-")
            windows.append({"start": start.strip(), "end": end.strip()})
        new = control_admin.create_friendly_profile(
            app().db,
            organisation_id=organisation_id(org),
            name=name,
            windows=windows,
            weekends=weekends,
            holidays=holidays,
            actor=who(actor),
        )
        emit(
            {"id": new, "name": name},
            as_json,
            lambda v: f"friendly-hours profile {name} created (id {new})",
        )


@holiday_cli.command("set")
def holiday_set(
    site: str,
    day: Annotated[str, typer.Argument(help="YYYY-MM-DD")],
    org: OrgOption,
    name: Annotated[str, typer.Option()] = "holiday",
    remove: Annotated[bool, typer.Option(help="remove the day instead")] = False,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Mark (or unmark) a public holiday for a site."""
    with handled():
        try:
            parsed = date.fromisoformat(day)
        except ValueError:
            raise ValidationError(f"day: {day!r} is not YYYY-MM-DD") from None
        o = organisation_id(org)
        control_admin.set_site_holiday(
            app().db,
            organisation_id=o,
            site_id=site_id(o, site),
            day=parsed,
            name=name,
            actor=who(actor),
            remove=remove,
        )
        emit(
            {"site": site, "day": day, "removed": remove},
            as_json,
            lambda v: f"{'removed' if remove else 'set'} holiday {day} for {site}",
        )


@holiday_cli.command("list")
def holiday_list(site: str, org: OrgOption, as_json: JsonOption = False) -> None:
    """A site's holidays."""
    with handled():
        o = organisation_id(org)
        days = control_admin.list_site_holidays(
            app().db, organisation_id=o, site_id=site_id(o, site)
        )
        emit(
            days,
            as_json,
            lambda v: "\n".join(f"{d['day']}  {d['name']}" for d in v) or "no holidays",
        )


def emergency(
    account: str, org: OrgOption, actor: ActorOption = "", as_json: JsonOption = False
) -> None:
    """Give the account its emergency credit (应急用电) once; the next recharge repays it first."""
    with handled():
        transfer = control_admin.take_emergency_credit(
            app().db,
            organisation_id=organisation_id(org),
            number=account,
            actor=who(actor),
            outbox=DatabaseOutbox(app().db.clock),
        )
        emit(
            {"account": account, "transfer_id": transfer},
            as_json,
            lambda v: f"emergency credit given to {account} (transfer {transfer})",
        )


def tick_command(as_json: JsonOption = False) -> None:
    """Run the control loop's periodic checks once (deferred cuts, alarm repeats, forecasts,
    meters put back to the decision)."""
    with handled():
        report = control_tick.tick(app().db)
        emit(
            report,
            as_json,
            lambda r: (
                f"checked {r.accounts} accounts, {r.decisions} decisions, "
                f"{r.reasserted} meters put back to the decision"
            ),
        )
