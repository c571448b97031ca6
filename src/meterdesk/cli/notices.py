"""``meterdesk notice send | list | show | cancel`` — system notices (系统通知 / 公告) to the
tenants of the whole organisation, a site, a building, a floor or some rooms, at once or at a
chosen time (``--send-at``, the place's local time), with each notice's delivery counts; a
cancel stops its messages not yet gone out. Places are named as everywhere in the CLI: ``--site
NAME``, ``--building SITE/BUILDING``, ``--floor SITE/BUILDING/FLOOR``, ``--room
SITE/BUILDING/FLOOR/ROOM``."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import typer

from meterdesk.cli.common import (
    ActorOption,
    JsonOption,
    OrgOption,
    app,
    emit,
    handled,
    organisation_id,
    pad,
    who,
)
from meterdesk.cli.places import building_id, floor_id, room_id, site_id
from meterdesk.notifications import notice_model, notices
from meterdesk.shared.errors import ValidationError

notice_cli = typer.Typer(
    help="System notices (系统通知): tell the tenants of a scope something.", no_args_is_help=True
)


def _path(value: str, parts: int, option: str, shape: str) -> list[str]:
    found = [p.strip() for p in value.split("/")]
    if len(found) != parts or not all(found):
        raise ValidationError(f"{option}: give {shape}, got {value!r}")
    return found


def _scope(
    org: int,
    site: str | None,
    building: str | None,
    floor: str | None,
    rooms: list[str] | None,
    everyone: bool,
) -> tuple[str, list[int]]:
    given = [site is not None, building is not None, floor is not None, bool(rooms), everyone]
    if sum(given) != 1:
        raise ValidationError("give exactly one of --all, --site, --building, --floor, --room")
    if everyone:
        return "organisation", []
    if site is not None:
        return "site", [site_id(org, site)]
    if building is not None:
        s, b = _path(building, 2, "--building", "SITE/BUILDING")
        return "building", [building_id(org, s, b)]
    if floor is not None:
        s, b, f = _path(floor, 3, "--floor", "SITE/BUILDING/FLOOR")
        return "floor", [floor_id(org, s, b, f)]
    return "rooms", [room_id(org, room) for room in rooms or []]


@notice_cli.command("send")
def send(
    org: OrgOption,
    subject: Annotated[str, typer.Option(help="at most 60 characters, one line")],
    text: Annotated[str, typer.Option(help="at most 500 characters")],
    everyone: Annotated[
        bool, typer.Option("--all", help="every tenant of the organisation")
    ] = False,
    site: Annotated[str | None, typer.Option(help="SITE")] = None,
    building: Annotated[str | None, typer.Option(help="SITE/BUILDING")] = None,
    floor: Annotated[str | None, typer.Option(help="SITE/BUILDING/FLOOR")] = None,
    room: Annotated[
        list[str] | None, typer.Option(help="SITE/BUILDING/FLOOR/ROOM, repeat for more")
    ] = None,
    urgent: Annotated[bool, typer.Option(help="send at once, even in quiet hours")] = False,
    channel: Annotated[
        list[str] | None,
        typer.Option(help="sms | voice | email | wechat | wechat_mini | push; repeat"),
    ] = None,
    send_at: Annotated[
        str | None,
        typer.Option(
            help="send later: '2026-12-09 08:00' in the place's local time (or with an offset), "
            "in the future, at most 90 days ahead"
        ),
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="idempotency key: sending again with it sends nothing")
    ] = None,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Send a notice to the customers of the open accounts in scope, once per customer and
    channel (audited). Without --urgent it waits for the end of the quiet hours; with --send-at
    its messages are queued now and go out at that time."""
    with handled():
        o = organisation_id(org)
        kind, ids = _scope(o, site, building, floor, room, everyone)
        when = None
        if send_at is not None:
            tz = notices.scope_zone(app().db, o, notice_model.scope(kind, ids))
            when = notice_model.local_send_at(send_at, tz)
        request = notice_model.notice_request(
            scope_kind=kind,
            scope_ids=ids,
            subject_text=subject,
            body=text,
            urgent=urgent,
            channel_names=channel,
            send_at=when,
        )
        found, replayed = notices.send_notice(
            app().db,
            organisation_id=o,
            request=request,
            key=key or f"cli:{uuid.uuid4().hex}",
            actor=who(actor),
        )
        emit({**found, "replayed": replayed}, as_json, _sent_text)


def _sent_text(value: dict[str, Any]) -> str:
    said = "was already sent with this key" if value["replayed"] else "sent"
    if value["send_at"] is not None and not value["replayed"]:
        said = f"scheduled for {value['send_at']:%Y-%m-%d %H:%M}Z"
    return (
        f"notice #{value['id']} {said}: {value['recipient_count']} recipients\n{_show_text(value)}"
    )


def _counts(delivery: dict[str, int]) -> str:
    return ", ".join(f"{status} {count}" for status, count in delivery.items() if count) or "none"


def _state(value: dict[str, Any]) -> str:
    """at once | scheduled for … | cancelled …, for the list and show."""
    if value["cancelled_at"] is not None:
        return f"cancelled {value['cancelled_at']:%Y-%m-%d %H:%M}Z by {value['cancelled_by']}"
    if value["send_at"] is not None:
        return f"scheduled for {value['send_at']:%Y-%m-%d %H:%M}Z"
    return "at once"


def _scope_text(value: dict[str, Any]) -> str:
    ids = ",".join(str(i) for i in value["scope_ids"])
    return value["scope_kind"] if not ids else f"{value['scope_kind']} {ids}"


@notice_cli.command("list")
def list_notices(
    org: OrgOption,
    before: Annotated[int | None, typer.Option(help="the next page: notices after this id")] = None,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Notices newest first, with their delivery counts."""
    with handled():
        if not 1 <= limit <= 1000:
            raise ValidationError("--limit: between 1 and 1000")
        rows = notices.list_notices(
            app().db, organisation_id=organisation_id(org), before_id=before, limit=limit
        )
        emit(rows, as_json, _list_text)


def _list_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no notices"
    lines = [
        f"{'#':<6} {'sent (UTC)':<17} {'goes out (UTC)':<17} {'urgent':<6} {'scope':<16} "
        f"{'to':>4}  subject / messages"
    ]
    for row in rows:
        goes = "at once" if row["send_at"] is None else f"{row['send_at']:%Y-%m-%d %H:%M}Z"
        if row["cancelled_at"] is not None:
            goes = "cancelled"
        lines.append(
            f"#{row['id']:<5} {row['created_at']:%Y-%m-%d %H:%M}Z {goes:<17} "
            f"{'yes' if row['urgent'] else 'no':<6} "
            f"{_scope_text(row)[:16]:<16} {row['recipient_count']:>4}  {pad(row['subject'], 40)} "
            f"{_counts(row['delivery'])}"
        )
    return "\n".join(lines)


@notice_cli.command("show")
def show(notice_id: int, org: OrgOption, as_json: JsonOption = False) -> None:
    """One notice with its text and delivery counts."""
    with handled():
        found = notices.get_notice(
            app().db, organisation_id=organisation_id(org), notice_id=notice_id
        )
        emit(found, as_json, _show_text)


def _show_text(value: dict[str, Any]) -> str:
    channels = ", ".join(value["channels"]) if value["channels"] else "every subscribed channel"
    return "\n".join(
        [
            f"notice #{value['id']}  {value['created_at']:%Y-%m-%d %H:%M}Z by {value['created_by']}",
            f"scope: {_scope_text(value)}  recipients: {value['recipient_count']}  "
            f"urgent: {'yes' if value['urgent'] else 'no'}  channels: {channels}",
            f"sending: {_state(value)}",
            f"subject: {value['subject']}",
            f"text: {value['text']}",
            f"messages: {_counts(value['delivery'])}",
        ]
    )


@notice_cli.command("cancel")
def cancel(
    notice_id: int, org: OrgOption, actor: ActorOption = "", as_json: JsonOption = False
) -> None:
    """Stop every message of the notice that has not gone out (audited). A message a dispatcher
    already took or sent cannot be recalled: the answer says how many were stopped and how many
    had gone. Cancelling again answers the same and changes nothing."""
    with handled():
        found, before = notices.cancel_notice(
            app().db, organisation_id=organisation_id(org), notice_id=notice_id, actor=who(actor)
        )
        emit({**found, "already_cancelled": before}, as_json, _cancelled_text)


def _cancelled_text(value: dict[str, Any]) -> str:
    said = "was already cancelled" if value["already_cancelled"] else "cancelled"
    return (
        f"notice #{value['id']} {said}: {value['stopped']} messages stopped, "
        f"{value['gone']} had already gone out\n{_show_text(value)}"
    )
