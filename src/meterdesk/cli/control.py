"""``meterdesk alarm-plan | policy | friendly | holiday | emergency | control-tick`` — the prepaid
control loop's settings from the shell (issue 4): alarm plans and friendly-hours profiles are
created, listed, shown and revised (a revision decides again for every account on them at once,
:mod:`meterdesk.billing.control_revise`); an account's policy is set and shown."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from meterdesk.billing import (
    accounts,
    control_admin,
    control_config,
    control_read,
    control_revise,
    control_tick,
)
from meterdesk.billing.outbox import DatabaseOutbox
from meterdesk.billing.tables import alarm_plans, friendly_profiles
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
from meterdesk.shared.money import format_money, from_fen

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


@alarm_cli.command("list")
def alarm_list(org: OrgOption, as_json: JsonOption = False) -> None:
    """The organisation's alarm plans with their levels."""
    with handled():
        plans = control_read.list_alarm_plans(app().db, organisation_id=organisation_id(org))
        emit(
            [plan.__dict__ for plan in plans],
            as_json,
            lambda v: "\n".join(_plan_text(p) for p in v) or "no alarm plans",
        )


@alarm_cli.command("show")
def alarm_show(name: str, org: OrgOption, as_json: JsonOption = False) -> None:
    """One alarm plan with its levels."""
    with handled():
        o = organisation_id(org)
        plan_id = control_read.id_of_name(
            app().db, organisation_id=o, table=alarm_plans, name=name, what="alarm plan"
        )
        plan = control_read.alarm_plan(app().db, organisation_id=o, plan_id=plan_id)
        emit(plan.__dict__, as_json, _plan_text)


@alarm_cli.command("update")
def alarm_update(
    name: str,
    org: OrgOption,
    file: Annotated[
        Path, typer.Option("--file", exists=True, dir_okay=False, help="JSON list of levels")
    ],
    rename: Annotated[str | None, typer.Option(help="a new name for the plan")] = None,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Replace a plan's levels; every open account on it is decided again at once (a tenant
    already below a raised level is warned now)."""
    with handled():
        o = organisation_id(org)
        plan_id = control_read.id_of_name(
            app().db, organisation_id=o, table=alarm_plans, name=name, what="alarm plan"
        )
        decided = control_revise.revise_alarm_plan(
            app().db,
            organisation_id=o,
            plan_id=plan_id,
            levels=load_json_file(file),
            name=rename,
            actor=who(actor),
            outbox=DatabaseOutbox(app().db.clock),
        )
        emit(
            {"id": plan_id, "name": rename or name, "accounts_decided": decided},
            as_json,
            lambda v: f"alarm plan {v['name']} updated; {decided} open account(s) decided again",
        )


def _hours(value: object) -> str:
    """24.0 → "24", 1.5 → "1.5"."""
    return f"{float(str(value)):g}"


def _plan_text(plan: dict[str, object]) -> str:
    levels = plan["levels"]
    assert isinstance(levels, list)
    lines = [f"{plan['name']} (id {plan['id']})"]
    for level in levels:
        when = (
            f"balance ≤ {level['amount']}"
            if "amount" in level
            else f"≤ {level['days_left']} days of credit left"
        )
        repeats = int(level.get("repeat_count", 0))
        sent = (
            "sent once"
            if repeats == 0
            else f"sent {1 + repeats} times, "
            f"{_hours(level.get('repeat_interval_hours', 24))} h apart"
        )
        lines.append(
            f"  level {level['level']}: {when}; {sent}; "
            f"channels {', '.join(level.get('channels', []))}"
        )
    return "\n".join(lines)


@policy_cli.command("show")
def policy_show(account: str, org: OrgOption, as_json: JsonOption = False) -> None:
    """An account's supply policy (defaults until one is set) and where the control loop stands."""
    with handled():
        o = organisation_id(org)
        with app().db.read() as conn:
            found = accounts.account_by_number(conn, organisation_id=o, number=account)
        view = control_read.account_policy(
            app().db, organisation_id=o, account_id=int(str(found["id"]))
        )
        emit(view.__dict__, as_json, _policy_text)


def _policy_text(view: dict[str, object]) -> str:
    amounts = view["alarm_amounts"]
    assert isinstance(amounts, dict)
    sent = view["alarms_sent"]
    assert isinstance(sent, dict)
    own = ", ".join(f"level {k} at {v}" for k, v in sorted(amounts.items()))
    return "\n".join(
        [
            f"account {view['number']}: supply {view['supply']}",
            f"  alarm plan      {view['alarm_plan'] or '-'}"
            + (f" (own amounts: {own})" if own else ""),
            f"  alarms sent     {', '.join(f'level {k}: {v}' for k, v in sorted(sent.items())) or '-'}",
            f"  friendly hours  {view['friendly_profile'] or '-'}",
            f"  cut at          {view['cut_at']}; protect (保电) {'on' if view['protect'] else 'off'}",
            f"  restore         {view['restore_mode']} above {_yuan(view['restore_threshold_fen'])}",
            f"  emergency       {_yuan(view['emergency_credit_fen'])} "
            f"(outstanding {_yuan(view['emergency_outstanding_fen'])})",
        ]
    )


def _yuan(fen: object) -> str:
    return format_money(from_fen(int(str(fen))))


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
        windows = control_config.window_spans(window or [])
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


@friendly_cli.command("list")
def friendly_list(org: OrgOption, as_json: JsonOption = False) -> None:
    """The organisation's friendly-hours profiles."""
    with handled():
        found = control_read.list_friendly_profiles(app().db, organisation_id=organisation_id(org))
        emit(
            [profile.__dict__ for profile in found],
            as_json,
            lambda v: "\n".join(_profile_text(p) for p in v) or "no friendly-hours profiles",
        )


@friendly_cli.command("show")
def friendly_show(name: str, org: OrgOption, as_json: JsonOption = False) -> None:
    """One friendly-hours profile."""
    with handled():
        o = organisation_id(org)
        profile_id = control_read.id_of_name(
            app().db,
            organisation_id=o,
            table=friendly_profiles,
            name=name,
            what="friendly-hours profile",
        )
        found = control_read.friendly_profile(app().db, organisation_id=o, profile_id=profile_id)
        emit(found.__dict__, as_json, _profile_text)


@friendly_cli.command("update")
def friendly_update(
    name: str,
    org: OrgOption,
    window: Annotated[
        list[str] | None, typer.Option(help="HH:MM-HH:MM local time, repeatable")
    ] = None,
    weekends: Annotated[bool, typer.Option(help="no cut on Saturdays and Sundays")] = False,
    holidays: Annotated[bool, typer.Option(help="no cut on the site's holidays")] = False,
    rename: Annotated[str | None, typer.Option(help="a new name for the profile")] = None,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Replace a profile's windows, weekends and holidays (give them all, as for create); every
    open account on it is decided again at once."""
    with handled():
        o = organisation_id(org)
        profile_id = control_read.id_of_name(
            app().db,
            organisation_id=o,
            table=friendly_profiles,
            name=name,
            what="friendly-hours profile",
        )
        decided = control_revise.revise_friendly_profile(
            app().db,
            organisation_id=o,
            profile_id=profile_id,
            windows=control_config.window_spans(window or []),
            weekends=weekends,
            holidays=holidays,
            name=rename,
            actor=who(actor),
            outbox=DatabaseOutbox(app().db.clock),
        )
        emit(
            {"id": profile_id, "name": rename or name, "accounts_decided": decided},
            as_json,
            lambda v: (
                f"friendly-hours profile {v['name']} updated; "
                f"{decided} open account(s) decided again"
            ),
        )


def _profile_text(profile: dict[str, object]) -> str:
    windows = profile["windows"]
    assert isinstance(windows, list)
    spans = ", ".join(f"{w['start']}-{w['end']}" for w in windows) or "no windows"
    extra = [
        word
        for word, on in (("weekends", profile["weekends"]), ("holidays", profile["holidays"]))
        if on
    ]
    return f"{profile['name']} (id {profile['id']}): {spans}" + (
        f"; and {' and '.join(extra)}" if extra else ""
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
