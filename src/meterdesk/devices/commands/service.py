"""Device command use cases: send (as a desired state), list, show the log, cancel, and push a
meter's tariff prices (F-TAR-PUSH).

``send_command`` only *records* the command (the commands table is the outbox): the bytes go
out after commit, from :mod:`meterdesk.devices.commands.executor`. A use case that must send a
command together with other writes (a recharge and its push to a meter-billing meter) calls the
``*_in`` variant inside its own transaction, so both commit or neither does.

Idempotency: the key is scoped by organisation. The same key with the same request (meter,
kind, parameters) returns the first command; the same key with anything else is an
``IdempotencyConflictError``. The meter's row is locked while a command is created, so two
operators acting on one meter are serialised and the newer command always supersedes the older.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from meterdesk.audit import service as audit
from meterdesk.db.database import Database
from meterdesk.devices.commands import creation, event_log, repository, writes
from meterdesk.devices.commands.model import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_ATTEMPTS,
    FALLBACK_DEADLINE_S,
    FALLBACK_MAX_ATTEMPTS,
    MAX_DEADLINE_S,
    MIN_DEADLINE_S,
    MONEY_KINDS,
    Command,
    CommandKind,
    CommandSpec,
    CommandStatus,
    parse_kind,
)
from meterdesk.devices.commands.params import parse_context, parse_spec
from meterdesk.metering.tables import meters
from meterdesk.shared.errors import (
    ConflictError,
    IdempotencyConflictError,
    NotFoundError,
    ValidationError,
)


@dataclass(frozen=True)
class CommandView:
    id: int
    meter_id: int
    meter_number: str
    kind: str
    params: dict[str, object]
    desired: str
    status: str
    reason: str | None
    attempts: int
    max_attempts: int
    deadline_at: datetime
    next_attempt_at: datetime
    created_by: str
    created_at: datetime
    sent_at: datetime | None
    finished_at: datetime | None
    context: dict[str, object]  # why the command was made (control loop: reason, account)


@dataclass(frozen=True)
class SendResult:
    command: CommandView
    replayed: bool  # the key had already been used for this very request
    superseded: tuple[int, ...] = ()  # older commands this one cancelled


@dataclass(frozen=True)
class CommandEvent:
    at: datetime
    event: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class CommandLog:
    command: CommandView
    events: list[CommandEvent]


def view(command: Command, meter_number: str) -> CommandView:
    return CommandView(
        id=command.id,
        meter_id=command.meter_id,
        meter_number=meter_number,
        kind=command.spec.kind.value,
        params=command.spec.to_params(),
        desired=command.spec.describe(),
        status=command.status.value,
        reason=command.reason,
        attempts=command.attempts,
        max_attempts=command.max_attempts,
        deadline_at=command.deadline_at,
        next_attempt_at=command.next_attempt_at,
        created_by=command.created_by,
        created_at=command.created_at,
        sent_at=command.sent_at,
        finished_at=command.finished_at,
        context=dict(command.context),
    )


def _views(conn: Connection, found: list[Command]) -> list[CommandView]:
    ids = sorted({c.meter_id for c in found})
    rows = conn.execute(select(meters.c.id, meters.c.number).where(meters.c.id.in_(ids)))
    numbers = {int(meter_id): str(number) for meter_id, number in rows}
    return [view(command, str(numbers.get(command.meter_id, "?"))) for command in found]


def send_command(
    db: Database,
    *,
    organisation_id: int,
    meter_id: int,
    kind: str,
    params: dict[str, object] | None,
    actor: str,
    idempotency_key: str,
    deadline_s: int | None = None,
    max_attempts: int | None = None,
    context: Mapping[str, object] | None = None,
) -> SendResult:
    """Record a command for the executor; supersede older ones of the same aspect."""
    with db.transaction() as conn:
        return send_command_in(
            conn,
            organisation_id=organisation_id,
            meter_id=meter_id,
            kind=kind,
            params=params,
            actor=actor,
            at=db.clock(),
            idempotency_key=idempotency_key,
            deadline_s=deadline_s,
            max_attempts=max_attempts,
            context=context,
        )


def send_command_in(
    conn: Connection,
    *,
    organisation_id: int,
    meter_id: int,
    kind: str,
    params: dict[str, object] | None,
    actor: str,
    at: datetime,
    idempotency_key: str,
    deadline_s: int | None = None,
    max_attempts: int | None = None,
    context: Mapping[str, object] | None = None,
) -> SendResult:
    spec = sendable_spec(kind, params)
    return create_in(
        conn,
        organisation_id=organisation_id,
        meter_id=meter_id,
        spec=spec,
        actor=actor,
        at=at,
        idempotency_key=idempotency_key,
        deadline_s=deadline_s,
        max_attempts=max_attempts,
        context=context,
    )


def sendable_spec(kind: object, params: Mapping[str, object] | None) -> CommandSpec:
    """A command anyone may send: every kind but the money commands, which have their own use
    cases (they decide the account and the amount)."""
    spec = parse_spec(kind, params)
    if spec.kind is CommandKind.RECHARGE:
        raise ValidationError(
            "kind: money reaches a meter only from a ledger recharge (push_recharge_for_transfer)"
        )
    if spec.kind is CommandKind.TAKE_BACK:
        raise ValidationError(
            "kind: take money back with the take-back command (meterdesk command take-back, "
            "POST /meters/{id}/take-back)"
        )
    return spec


def command_limits(
    spec: CommandSpec, deadline_s: int | None, max_attempts: int | None
) -> tuple[int, int]:
    seconds = (
        deadline_s
        if deadline_s is not None
        else DEFAULT_DEADLINE_S.get(spec.kind, FALLBACK_DEADLINE_S)
    )
    attempts = (
        max_attempts
        if max_attempts is not None
        else DEFAULT_MAX_ATTEMPTS.get(spec.kind, FALLBACK_MAX_ATTEMPTS)
    )
    if not MIN_DEADLINE_S <= seconds <= MAX_DEADLINE_S:
        raise ValidationError(f"deadline_s: between {MIN_DEADLINE_S} and {MAX_DEADLINE_S} seconds")
    if not 1 <= attempts <= 1000:
        raise ValidationError("max_attempts: between 1 and 1000")
    return seconds, attempts


def _replayed(
    conn: Connection, key: str, spec: CommandSpec, meter_id: int, given_key: str
) -> SendResult | None:
    """The command already recorded under this key for this very request, if any."""
    existing = repository.find_by_key(conn, key)
    if existing is None:
        return None
    check_replay(existing, spec, meter_id, given_key)
    return SendResult(_views(conn, [existing])[0], True)


def check_replay(existing: Command, spec: CommandSpec, meter_id: int, given_key: str) -> None:
    """A key already recorded must be for this very request."""
    if existing.meter_id != meter_id or existing.request_hash != spec.request_hash(meter_id):
        raise key_conflict(given_key, existing.id)


def key_conflict(given_key: str, existing_id: int | None) -> IdempotencyConflictError:
    where = f"(#{existing_id})" if existing_id is not None else "in the same batch"
    return IdempotencyConflictError(
        f"idempotency key {given_key!r} was already used for a different command {where}"
    )


def create_in(
    conn: Connection,
    *,
    organisation_id: int,
    meter_id: int,
    spec: CommandSpec,
    actor: str,
    at: datetime,
    idempotency_key: str,
    deadline_s: int | None = None,
    max_attempts: int | None = None,
    context: Mapping[str, object] | None = None,
) -> SendResult:
    """Record a validated command (recharges included) inside the caller's transaction."""
    seconds, attempts = command_limits(spec, deadline_s, max_attempts)
    key = scoped_key(organisation_id, idempotency_key)
    replayed = _replayed(conn, key, spec, meter_id, idempotency_key)
    if replayed is not None:
        return replayed
    meter = writes.lock_meter(conn, organisation_id=organisation_id, meter_id=meter_id)
    if meter is None:
        raise NotFoundError(f"meter {meter_id} not found")
    try:
        with conn.begin_nested():
            command_id = writes.insert_command(
                conn,
                organisation_id=organisation_id,
                meter_id=meter_id,
                spec=spec,
                idempotency_key=key,
                actor=actor,
                at=at,
                deadline_at=at + timedelta(seconds=seconds),
                max_attempts=attempts,
                context=parse_context(context, spec.kind),
            )
    except IntegrityError:  # the same key, committed by someone else a moment ago
        return _replayed(conn, key, spec, meter_id, idempotency_key) or _missing(key)
    number = str(meter["number"])
    made = creation.Created(organisation_id, meter_id, number, command_id, spec)
    superseded = creation.record_created(conn, [made], actor=actor, at=at).get(command_id, ())
    created = repository.get(conn, command_id)
    assert created is not None
    return SendResult(view(created, number), False, superseded)


def scoped_key(organisation_id: int, idempotency_key: str) -> str:
    if not idempotency_key.strip():
        raise ValidationError("idempotency_key: must not be empty")
    return f"{organisation_id}:{idempotency_key}"


def _missing(key: str) -> SendResult:
    raise ConflictError(f"idempotency key {key!r} is taken but its command cannot be read")


def list_commands(
    db: Database,
    *,
    organisation_id: int,
    status: str | None = None,
    meter_id: int | None = None,
    kind: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[CommandView]:
    """Newest first; page with ``before_id`` (the last id of the previous page)."""
    if status is not None and status not in {s.value for s in CommandStatus}:
        raise ValidationError(
            f"status: {status!r} is not one of {', '.join(s.value for s in CommandStatus)}"
        )
    if not 1 <= limit <= 10_000:
        raise ValidationError("limit: between 1 and 10000")
    with db.read() as conn:
        found = repository.select_commands(
            conn,
            organisation_id=organisation_id,
            status=status,
            meter_id=meter_id,
            kind=None if kind is None else parse_kind(kind).value,
            before_id=before_id,
            limit=limit,
        )
        return _views(conn, found)


def command_log(db: Database, *, organisation_id: int, command_id: int) -> CommandLog:
    """One command with every event, oldest first."""
    with db.read() as conn:
        command = repository.get(conn, command_id, organisation_id)
        if command is None:
            raise NotFoundError(f"command {command_id} not found")
        events = [
            CommandEvent(at, event, detail)
            for at, event, detail in event_log.events(conn, command_id)
        ]
        return CommandLog(_views(conn, [command])[0], events)


def cancel(
    db: Database, *, organisation_id: int, command_id: int, actor: str, reason: str | None = None
) -> CommandView:
    """Stop an unfinished command. A recharge push that may already have reached the meter
    cannot be cancelled: it runs until the meter's counter proves it one way or the other."""
    at = db.clock()
    with db.transaction() as conn:
        command = repository.get(conn, command_id, organisation_id)
        if command is None:
            raise NotFoundError(f"command {command_id} not found")
        if not command.is_open:
            raise ConflictError(f"command #{command_id} is already {command.status.value}")
        money = command.spec.kind in MONEY_KINDS
        if money and command.sent_at is not None:
            what = "recharge push" if command.spec.kind is CommandKind.RECHARGE else "take-back"
            raise ConflictError(
                f"{what} #{command_id} may already have reached the meter: it cannot be "
                "cancelled; wait until it is confirmed or failed, then reconcile"
            )
        why = f"cancelled by {actor}" + (f": {reason}" if reason else "")
        # A push checked unsent above may be marked sent by the executor before this update:
        # its cancel is conditional on it still being unsent.
        cancelled_now = (
            writes.cancel_unsent(conn, command_id, why, at)
            if money
            else writes.finish(conn, command_id, CommandStatus.CANCELLED, why, at)
        )
        if not cancelled_now:
            raise ConflictError(f"command #{command_id} was sent or finished meanwhile")
        event_log.add_event(conn, command_id, at, "cancelled", {"reason": why})
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="command.cancel",
            subject=f"command:{command_id}",
            at=at,
            detail={"reason": reason or ""},
        )
        cancelled = repository.get(conn, command_id)
        assert cancelled is not None
        return _views(conn, [cancelled])[0]
