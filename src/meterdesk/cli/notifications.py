"""``meterdesk notification log | show | retry | channel list|set|test | quiet-hours`` — the
notification log (the outbox and each message's delivery attempts), sending a failed message
again, channel settings, a test message per channel and quiet hours, from the shell (issue 4).
``notification summaries`` (deduction summaries) is :mod:`meterdesk.cli.summaries`.

Secrets are never typed here: ``--secret-ref NAME=VARIABLE`` names the environment variable that
holds a secret (set it where ``meterdesk run`` runs); ``channel list`` shows each secret as that
name and whether the variable is set in this shell's environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from meterdesk.billing import accounts
from meterdesk.cli.common import (
    ActorOption,
    JsonOption,
    OrgOption,
    app,
    emit,
    handled,
    load_json_file,
    organisation_id,
    parse_when,
    who,
)
from meterdesk.cli.places import warn
from meterdesk.notifications import channel_status, channel_test, configuration, model, service
from meterdesk.shared.errors import ValidationError

notification_cli = typer.Typer(
    help="Notifications (消息通知): the log of every message, retries, channels, quiet hours.",
    no_args_is_help=True,
)
channel_cli = typer.Typer(
    help="Channels: SMS, voice, e-mail, WeChat, push, webhook, log.", no_args_is_help=True
)
notification_cli.add_typer(channel_cli, name="channel")


def _account_id(org: int, number: str | None) -> int | None:
    if number is None:
        return None
    with app().db.read() as conn:
        found = accounts.account_by_number(conn, organisation_id=org, number=number)
    return int(str(found["id"]))


_HEADER = (
    f"{'#':<8} {'queued (UTC)':<17} {'event':<22} {'account':<10} {'channel':<8} "
    f"{'to':<28} {'status':<10} tries"
)


def _line(row: dict[str, Any]) -> str:
    error = f" — {row['last_error']}" if row.get("last_error") else ""
    # the account the message is about (operators' messages about a meter or gateway have none)
    account = str((row.get("params") or {}).get("account") or "-")
    return (
        f"#{row['id']:<7} {row['created_at']:%Y-%m-%d %H:%M}Z {row['event_kind']:<22} "
        f"{account[:10]:<10} {row['channel']:<8} {row['address'][:28]:<28} {row['status']:<10} "
        f"{row['attempts']}{error}"
    )


@notification_cli.command("log")
def log(
    org: OrgOption,
    status: Annotated[
        str | None, typer.Option(help="pending | sending | sent | failed | suppressed | cancelled")
    ] = None,
    event: Annotated[str | None, typer.Option(help="e.g. alarm_level_1, supply_cut")] = None,
    channel: Annotated[str | None, typer.Option(help="sms | voice | email | wechat | …")] = None,
    account: Annotated[str | None, typer.Option(help="account number")] = None,
    since: Annotated[str | None, typer.Option(help="queued at or after (ISO, with offset)")] = None,
    until: Annotated[str | None, typer.Option(help="queued before (ISO, with offset)")] = None,
    before: Annotated[
        int | None, typer.Option(help="the next page: the messages listed after this id")
    ] = None,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Messages newest first, with their status and the last error: by id, or with --since or
    --until by the time queued (then id)."""
    with handled():
        if not 1 <= limit <= 1000:
            raise ValidationError("--limit: between 1 and 1000")
        o = organisation_id(org)
        rows = service.list_notifications(
            app().db,
            organisation_id=o,
            status=status,
            event=event,
            channel=channel,
            account_id=_account_id(o, account),
            since=parse_when(since),
            until=parse_when(until),
            before_id=before,
            limit=limit,
        )
        counts = service.status_counts(app().db, organisation_id=o)
        emit(rows, as_json, lambda found: _log_text(found, counts))


def _log_text(rows: list[dict[str, Any]], counts: dict[str, int]) -> str:
    summary = ", ".join(f"{status} {count}" for status, count in sorted(counts.items()))
    listed = [_HEADER, *(_line(row) for row in rows)] if rows else []
    return "\n".join([*listed, f"in all: {summary or 'no messages'}"])


@notification_cli.command("show")
def show(notification_id: int, org: OrgOption, as_json: JsonOption = False) -> None:
    """One message with its snapshot and every delivery attempt."""
    with handled():
        o = organisation_id(org)
        found = service.get_notification(app().db, organisation_id=o, outbox_id=notification_id)
        attempts = service.notification_attempts(
            app().db, organisation_id=o, outbox_id=notification_id
        )
        emit({**found, "attempt_log": attempts}, as_json, _show_text)


def _show_text(value: dict[str, Any]) -> str:
    lines = [_line(value), f"params: {value['params']}"]
    for a in value["attempt_log"]:
        said = a["error"] or a["provider_message_id"] or ""
        lines.append(
            f"  {a['at']:%Y-%m-%d %H:%M:%S}Z  attempt {a['attempt']}  {a['result']:<10} {said}"
        )
    if not value["attempt_log"]:
        lines.append("  no delivery attempt yet")
    return "\n".join(lines)


@notification_cli.command("retry")
def retry(
    notification_id: int, org: OrgOption, actor: ActorOption = "", as_json: JsonOption = False
) -> None:
    """Send a failed or suppressed message again now (audited); attempts start over. A message
    that failed for want of an address takes the customer's current one, or is refused."""
    with handled():
        o = organisation_id(org)
        service.retry_notification(
            app().db, organisation_id=o, outbox_id=notification_id, actor=who(actor)
        )
        found = service.get_notification(app().db, organisation_id=o, outbox_id=notification_id)
        emit(found, as_json, lambda v: f"notification #{v['id']} is {v['status']} again")


@channel_cli.command("list")
def channel_list(org: OrgOption, as_json: JsonOption = False) -> None:
    """Every channel: provider, enabled, settings, secrets (set / missing) and any problem."""
    with handled():
        views = channel_status.channel_views(app().db, organisation_id=organisation_id(org))
        emit(views, as_json, lambda found: "\n".join(_channel_text(v) for v in found))


def _channel_text(view: channel_status.ChannelView) -> str:
    if not view.configured:
        return f"{view.channel:<8} not configured (providers: {', '.join(view.providers)})"
    state = "enabled" if view.enabled else "disabled"
    secrets = ", ".join(
        f"{s.name}={s.variable or '?'} ({'set' if s.set else 'missing'})" for s in view.secrets
    )
    events = "every event" if view.events is None else ", ".join(view.events)
    lines = [
        f"{view.channel:<8} {view.provider} {state}; {events}",
        f"         config {dict(view.config)}",
    ]
    if secrets:
        lines.append(f"         secrets {secrets}")
    if view.problem:
        lines.append(f"         problem: {view.problem}")
    lines.extend(f"         warning: {warning}" for warning in view.address_warnings)
    return "\n".join(lines)


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValidationError(f"{option}: give NAME=VALUE, got {item!r}")
        pairs[name.strip()] = value.strip()
    return pairs


def _config(path: Path | None, settings: list[str] | None) -> dict[str, Any]:
    """Settings from a JSON file (nested ones such as ``templates``), then ``--set`` texts."""
    config: dict[str, Any] = {}
    if path is not None:
        loaded = load_json_file(path)
        if not isinstance(loaded, dict):
            raise ValidationError(f"{path.name}: give a JSON object of settings")
        config.update(loaded)
    config.update(_pairs(settings, "--set"))
    return config


@channel_cli.command("set")
def channel_set(
    channel: Annotated[
        str,
        typer.Argument(help="sms | voice | email | wechat | wechat_mini | push | webhook | log"),
    ],
    org: OrgOption,
    provider: Annotated[
        str,
        typer.Option(help="aliyun | tencent | smtp | wechat | wechat_mini | http | webhook | log"),
    ],
    config_file: Annotated[
        Path | None,
        typer.Option("--config-file", exists=True, dir_okay=False, help="JSON object of settings"),
    ] = None,
    setting: Annotated[
        list[str] | None, typer.Option("--set", help="NAME=VALUE, a text setting (repeatable)")
    ] = None,
    secret_ref: Annotated[
        list[str] | None,
        typer.Option(help="NAME=ENV_VARIABLE: where a secret is (repeatable), never the secret"),
    ] = None,
    event: Annotated[
        list[str] | None, typer.Option(help="subscribe only to these events (default: every)")
    ] = None,
    enabled: Annotated[bool, typer.Option("--enabled/--disabled")] = True,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Create or replace a channel's settings, e.g. 'channel set webhook --provider webhook
    --set url=https://… --secret-ref secret=METERDESK_WEBHOOK_SECRET'."""
    with handled():
        o = organisation_id(org)
        configuration.configure_channel(
            app().db,
            organisation_id=o,
            channel=channel,
            provider=provider,
            enabled=enabled,
            config=_config(config_file, setting),
            secret_refs=_pairs(secret_ref, "--secret-ref"),
            events=event or None,
            actor=who(actor),
        )
        view = channel_status.channel_view(
            app().db, organisation_id=o, channel=model.channel(channel)
        )
        emit(view, as_json, _channel_text)
        for warning in view.address_warnings:  # an SMS operator address that is a landline
            warn(warning)


@channel_cli.command("test")
def channel_test_message(
    channel: Annotated[
        str,
        typer.Argument(help="sms | voice | email | wechat | wechat_mini | push | webhook | log"),
    ],
    org: OrgOption,
    to: Annotated[
        str | None,
        typer.Option("--to", help="address (e-mail, phone, openid); default: first operator"),
    ] = None,
    language: Annotated[str | None, typer.Option(help="zh-CN (default) or en")] = None,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Queue a test message on the channel for immediate delivery by 'meterdesk run'; follow
    it with 'notification show ID' (sent, or failed with the provider's reason)."""
    with handled():
        o = organisation_id(org)
        found = channel_test.send_test_message(
            app().db,
            organisation_id=o,
            channel=channel,
            address=to,
            language=language,
            actor=who(actor),
        )
        row = service.get_notification(app().db, organisation_id=o, outbox_id=found)
        emit(
            row,
            as_json,
            lambda v: f"{_line(v)}\nqueued; follow it with: meterdesk notification show {v['id']}",
        )


@notification_cli.command("quiet-hours")
def quiet_hours(
    org: OrgOption,
    start: Annotated[str | None, typer.Option(help="local wall time, e.g. 22:00")] = None,
    end: Annotated[str | None, typer.Option(help="local wall time, e.g. 07:00")] = None,
    clear: Annotated[bool, typer.Option(help="no quiet hours")] = False,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Show the quiet window in which normal messages wait; with --start/--end set it."""
    with handled():
        o = organisation_id(org)
        if clear and (start or end):
            raise ValidationError("--clear: not together with --start/--end")
        if clear or start is not None or end is not None:
            configuration.set_quiet_hours(
                app().db, organisation_id=o, start=start, end=end, actor=who(actor)
            )
        found = channel_status.quiet_hours(app().db, organisation_id=o)
        value = {"start": found[0], "end": found[1]} if found else {"start": None, "end": None}
        emit(
            value,
            as_json,
            lambda v: f"quiet {v['start']}–{v['end']}" if v["start"] else "no quiet hours",
        )
