"""``meterdesk notification summaries set | show | send`` — deduction summaries (扣费通知) to
tenants: how often (off, daily, monthly; off by default, each is an SMS someone pays for), and
queueing a period's summaries now (``meterdesk run`` does it by itself after each local
midnight or month end)."""

from __future__ import annotations

from typing import Annotated

import typer

from meterdesk.billing import summaries
from meterdesk.cli.common import (
    ActorOption,
    JsonOption,
    OrgOption,
    app,
    emit,
    handled,
    organisation_id,
    who,
)
from meterdesk.notifications import summary_settings

summaries_cli = typer.Typer(
    help="Deduction summaries (扣费通知): each tenant's use, charges and balance per day or month.",
    no_args_is_help=True,
)


def _setting(value: str) -> str:
    return {
        "off": "deduction summaries: off",
        "daily": "deduction summaries: daily (the previous local day, after midnight)",
        "monthly": "deduction summaries: monthly (the previous local month, after it ends)",
    }[value]


@summaries_cli.command("set")
def set_cadence(
    org: OrgOption,
    cadence: Annotated[str, typer.Option(help="off | daily | monthly")],
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Turn the organisation's summaries off, or on daily or monthly (audited)."""
    with handled():
        found = summary_settings.set_cadence(
            app().db, organisation_id=organisation_id(org), value=cadence, actor=who(actor)
        )
        emit({"cadence": found.value}, as_json, lambda v: _setting(v["cadence"]))


@summaries_cli.command("show")
def show(org: OrgOption, as_json: JsonOption = False) -> None:
    """How often the organisation's tenants get a summary."""
    with handled():
        found = summary_settings.cadence_of(app().db, organisation_id=organisation_id(org))
        emit({"cadence": found.value}, as_json, lambda v: _setting(v["cadence"]))


def _sent(report: summaries.SummaryReport) -> str:
    periods = ", ".join(f"{p['period']} ({p['zone']})" for p in report.periods) or "none"
    return (
        f"period {periods}: {report.queued} queued, {report.already} already queued, "
        f"{report.skipped} skipped (nothing used or charged)"
    )


@summaries_cli.command("send")
def send(
    org: OrgOption,
    period: Annotated[
        str | None,
        typer.Option(help="a local day (2026-12-06) or month (2026-11); default: the latest"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Queue the summaries of a period now (a repeat queues nothing twice)."""
    with handled():
        report = summaries.send(app().db, organisation_id=organisation_id(org), period=period)
        emit(report, as_json, _sent)
