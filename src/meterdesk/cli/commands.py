"""``meterdesk command send | list | show | cancel | push-recharge | take-back | reconcile`` —
device commands
(指令) as desired states, and the meter-billing reconciliation, from the shell.

Commands are only recorded here; the executor (``meterdesk.devices.commands.executor``, run by
the worker process) sends them and confirms them by reading the meter back.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated

import typer

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
from meterdesk.devices import price_sync
from meterdesk.devices import reconcile as meter_billing
from meterdesk.devices import take_back as meter_take_back
from meterdesk.devices.commands import service
from meterdesk.devices.commands.model import MONEY_KINDS, CommandKind
from meterdesk.metering.service import find_meter
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.money import to_decimal

command_cli = typer.Typer(
    help="Device commands (指令): relay, protect (保电), valve, prices, limits, clock — each a "
    "desired state with a deadline, confirmed by reading the meter back.",
    no_args_is_help=True,
)

KINDS = " | ".join(k.value for k in CommandKind if k not in MONEY_KINDS)


def _meter_id(org: int, number: str) -> int:
    with app().db.read() as conn:
        return find_meter(conn, organisation_id=org, number=number)


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValidationError(f"{option}: give NAME=VALUE, got {item!r}")
        pairs[name.strip()] = value.strip()
    return pairs


def _line(c: service.CommandView) -> str:
    why = f" — {c.reason}" if c.reason else ""
    return f"#{c.id:<6} {c.meter_number:<12} {c.kind:<20} {c.status:<10} {c.desired}{why}"


@command_cli.command("send")
def send(
    meter: Annotated[str, typer.Argument(help="meter number")],
    kind: Annotated[str, typer.Argument(help=KINDS)],
    org: OrgOption,
    key: Annotated[
        str | None, typer.Option("--key", help="idempotency key (default: a new one)")
    ] = None,
    price: Annotated[
        list[str] | None, typer.Option(help="write_prices: SLOT=PRICE, slot sharp|peak|flat|valley")
    ] = None,
    from_tariff: Annotated[
        bool, typer.Option(help="write_prices: the price table of the meter's tariff (F-TAR-PUSH)")
    ] = False,
    limit: Annotated[
        list[str] | None,
        typer.Option(
            help="write_limits: NAME=AMOUNT, alarm_1|alarm_2|overdraft_limit|hoarding_limit|close_allowed"
        ),
    ] = None,
    deadline: Annotated[int | None, typer.Option(help="seconds until the command gives up")] = None,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Ask a meter for a state; a newer command for the same relay/valve replaces an older one."""
    with handled():
        o, idempotency_key = organisation_id(org), key or f"cli:{uuid.uuid4()}"
        params: dict[str, object] = {
            name: _pairs(values, f"--{option}")
            for name, option, values in (("prices", "price", price), ("limits", "limit", limit))
            if values
        }
        result = _record(
            o, _meter_id(o, meter), kind, params, from_tariff, who(actor), idempotency_key, deadline
        )
        emit(result, as_json, lambda r: _sent(r, idempotency_key))


def _record(
    org: int,
    meter_id: int,
    kind: str,
    params: dict[str, object],
    from_tariff: bool,
    actor: str,
    key: str,
    deadline: int | None,
) -> service.SendResult:
    if from_tariff:
        if kind != CommandKind.WRITE_PRICES.value:
            raise ValidationError("--from-tariff: only with write_prices")
        return meter_billing.push_tariff_prices(
            app().db,
            organisation_id=org,
            meter_id=meter_id,
            actor=actor,
            idempotency_key=key,
            deadline_s=deadline,
        )
    return service.send_command(
        app().db,
        organisation_id=org,
        meter_id=meter_id,
        kind=kind,
        params=params,
        actor=actor,
        idempotency_key=key,
        deadline_s=deadline,
    )


def _sent(result: service.SendResult, key: str) -> str:
    c = result.command
    head = "already recorded (same key)" if result.replayed else "recorded"
    lines = [
        f"{head}: command #{c.id} {c.kind} for meter {c.meter_number}: wants {c.desired}",
        f"deadline {c.deadline_at.isoformat()}, key {key}",
    ]
    lines += [f"replaces #{old} (superseded)" for old in result.superseded]
    return "\n".join(lines)


@command_cli.command("list")
def list_(
    org: OrgOption,
    status: Annotated[
        str | None, typer.Option(help="pending | sent | confirmed | failed | cancelled")
    ] = None,
    meter: Annotated[str | None, typer.Option(help="meter number")] = None,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Commands, newest first: 待发送 pending / 已下发 sent / 已确认 confirmed / 失败 failed."""
    with handled():
        o = organisation_id(org)
        found = service.list_commands(
            app().db,
            organisation_id=o,
            status=status,
            meter_id=None if meter is None else _meter_id(o, meter),
            limit=limit,
        )
        emit(found, as_json, _list_text)


def _list_text(rows: list[service.CommandView]) -> str:
    if not rows:
        return "no commands"
    # The last column is the state the command asks for, not a result: a pending relay_close
    # reads "relay closed" before anything was sent. A failure's reason follows it.
    header = f"{'#':<7} {'meter':<12} {'command':<20} {'status':<10} wants"
    return "\n".join([header, *(_line(c) for c in rows)])


@command_cli.command("show")
def show(command_id: int, org: OrgOption, as_json: JsonOption = False) -> None:
    """One command with every event of its life."""
    with handled():
        log = service.command_log(
            app().db, organisation_id=organisation_id(org), command_id=command_id
        )

        def text(value: service.CommandLog) -> str:
            c = value.command
            lines = [
                _line(c),
                f"attempts {c.attempts}/{c.max_attempts}, deadline {c.deadline_at.isoformat()}",
            ]
            lines += [
                f"  {e.at.isoformat()}  {e.event:<11} {_detail(e.detail)}" for e in value.events
            ]
            return "\n".join(lines)

        emit(log, as_json, text)


def _detail(detail: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(detail.items()))


@command_cli.command("cancel")
def cancel(
    command_id: int,
    org: OrgOption,
    reason: Annotated[str | None, typer.Option(help="why (audited)")] = None,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Stop a pending or sent command (not a recharge that may already be on the meter)."""
    with handled():
        done = service.cancel(
            app().db,
            organisation_id=organisation_id(org),
            command_id=command_id,
            actor=who(actor),
            reason=reason,
        )
        emit(done, as_json, _line)


@command_cli.command("push-recharge")
def push_recharge(
    transfer: Annotated[int, typer.Argument(help="the desk recharge's transfer id")],
    org: OrgOption,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Send a recharge of a meter-billing account to its meter (once per transfer, ever)."""
    with handled():
        result = meter_billing.push_recharge_for_transfer(
            app().db, transfer, who(actor), organisation_id=organisation_id(org)
        )
        emit(result, as_json, lambda r: _sent(r, meter_billing.push_key(transfer)))


@command_cli.command("take-back")
def take_back(
    meter: Annotated[str, typer.Argument(help="meter number")],
    org: OrgOption,
    key: Annotated[
        str, typer.Option("--key", help="idempotency key: repeating it never takes money twice")
    ],
    amount: Annotated[str | None, typer.Option(help="CNY to take back off the meter")] = None,
    take_all: Annotated[
        bool, typer.Option("--all", help="all the meter holds (read just before sending)")
    ] = False,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """退电: take money back off a meter-billing meter (refundable once the meter confirms it);
    --all without an account clears a meter."""
    with handled():
        o = organisation_id(org)
        result = meter_take_back.take_back(
            app().db,
            organisation_id=o,
            meter_id=_meter_id(o, meter),
            amount=amount,
            take_all=take_all,
            actor=who(actor),
            idempotency_key=key,
        )
        emit(result, as_json, lambda r: _sent(r, key))


@command_cli.command("reconcile")
def reconcile(
    org: OrgOption,
    tolerance: Annotated[str, typer.Option(help="money difference still called ok")] = "0.50",
    as_json: JsonOption = False,
) -> None:
    """Meter billing (表端计费): platform balance vs the meter's remaining money and purchases."""
    with handled():
        allowed = to_decimal(tolerance, field="tolerance")
        rows = meter_billing.reconcile(app().db, organisation_id(org), tolerance=allowed)

        def text(found: list[meter_billing.ReconciliationRow]) -> str:
            return (
                "\n".join(
                    f"{r.account_number:<10} {r.meter_number:<10} platform {r.platform_balance:>10} "
                    f"expected {_money(r.expected_meter_money):>10} meter {_money(r.meter_money):>10} "
                    f"purchases {r.purchases_expected}/{r.purchases_meter}  {r.verdict}"
                    for r in found
                )
                or "no meter-billing accounts"
            )

        emit(rows, as_json, text)


@command_cli.command("sync-prices")
def sync_prices(org: OrgOption, as_json: JsonOption = False) -> None:
    """Meter billing (表端计费): write its tariff's prices in force today to every meter that
    bills itself and does not have them ('meterdesk run' does this every hour)."""
    with handled():
        report = price_sync.sync_prices(app().db, organisation_id=organisation_id(org))

        def text(found: price_sync.PriceSyncReport) -> str:
            lines = [
                f"meters that bill themselves on DL/T 645 or Modbus lines: {found.checked}; "
                f"with today's prices: {found.in_step}; writes queued: {len(found.queued)}"
            ]
            lines += [f"  {number:<12} write_prices #{command}" for number, command in found.queued]
            lines += [
                f"  {number:<12} not written today (#{command}); tried again tomorrow"
                for number, command in found.failed_today
            ]
            lines += [
                f"  {number:<12} cannot be written: {why}" for number, why in found.not_writable
            ]
            return "\n".join(lines)

        emit(report, as_json, text)


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:.2f}"
