"""Device commands (指令): list with filters, one command with its log, send a desired state to a
meter (relay cut / restore, protect, valve, prices, limits, clock) and cancel an unfinished one.

A command is only *recorded* here (the commands table is the outbox); the executor of
``meterdesk run`` sends it and confirms it by reading the meter back. Sending and cancelling
move supply, so both take an ``Idempotency-Key`` and are audited with the caller's address.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from meterdesk.api.deps import Caller, Cashier, IdempotencyKey, MetersWriter, Reader
from meterdesk.api.errors import ERROR_RESPONSES
from meterdesk.api.idempotency import run_once
from meterdesk.api.pagination import Cursor, Limit, Page, after_id, encode
from meterdesk.api.queries.places import one
from meterdesk.api.routers.accounts import replay_doc
from meterdesk.api.schemas.commands import (
    CancelIn,
    CommandDetailOut,
    CommandIn,
    CommandKindName,
    CommandOut,
    CommandSentOut,
    CommandStatusName,
    TakeBackIn,
)
from meterdesk.api.schemas.common import Id
from meterdesk.devices import reconcile, take_back
from meterdesk.devices.commands import service
from meterdesk.metering.tables import meters
from meterdesk.shared.errors import ValidationError

router = APIRouter(responses=ERROR_RESPONSES, tags=["commands"])


def command_out(view: service.CommandView) -> CommandOut:
    return CommandOut.model_validate(view, from_attributes=True)


@router.get("/commands", response_model=Page[CommandOut])
def list_commands(
    caller: Reader,
    status: CommandStatusName | None = None,
    meter_id: Id | None = None,
    kind: CommandKindName | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CommandOut]:
    """Commands newest first: 待发送 pending, 已下发 sent, 已确认 confirmed, 失败 failed, cancelled."""
    found = service.list_commands(
        caller.db,
        organisation_id=caller.organisation_id,
        status=status,
        meter_id=meter_id,
        kind=kind,
        before_id=after_id(cursor),
        limit=limit + 1,
    )
    next_cursor = encode(found[limit - 1].id) if len(found) > limit else None
    return Page[CommandOut](items=[command_out(c) for c in found[:limit]], next_cursor=next_cursor)


@router.get("/commands/{command_id}", response_model=CommandDetailOut)
def get_command(command_id: Id, caller: Reader) -> CommandDetailOut:
    """One command with every event of its life, oldest first."""
    log = service.command_log(
        caller.db, organisation_id=caller.organisation_id, command_id=command_id
    )
    events = [{"at": e.at, "event": e.event, "detail": e.detail} for e in log.events]
    return CommandDetailOut.model_validate(
        {**command_out(log.command).model_dump(), "events": events}
    )


def meter_number(caller: Caller, meter_id: int) -> str:
    """The meter's number; 404 for a meter of another organisation."""
    with caller.db.read() as conn:
        return str(one(conn, meters, caller.organisation_id, meter_id, "meter")["number"])


def _record(caller: Caller, meter_id: int, body: CommandIn, key: str) -> service.SendResult:
    if body.from_tariff:
        if body.kind != "write_prices" or body.params is not None:
            raise ValidationError("from_tariff: only with write_prices and without params")
        return reconcile.push_tariff_prices(
            caller.db,
            organisation_id=caller.organisation_id,
            meter_id=meter_id,
            actor=caller.actor,
            idempotency_key=key,
            deadline_s=body.deadline_s,
        )
    params = None if body.params is None else body.params.model_dump(exclude_none=True)
    return service.send_command(
        caller.db,
        organisation_id=caller.organisation_id,
        meter_id=meter_id,
        kind=body.kind,
        params=params,
        actor=caller.actor,
        idempotency_key=key,
        deadline_s=body.deadline_s,
    )


@router.post(
    "/meters/{meter_id}/commands",
    response_model=CommandSentOut,
    status_code=201,
    responses=replay_doc(CommandSentOut),
)
def send_command(
    meter_id: Id, body: CommandIn, request: Request, caller: MetersWriter, key: IdempotencyKey
) -> JSONResponse:
    """Ask a meter for a state; a newer command for the same relay, protect or valve cancels an
    older unfinished one ("superseded"). The executor confirms it by reading the meter back."""
    number = meter_number(caller, meter_id)

    def perform() -> tuple[BaseModel, bool]:
        sent = _record(caller, meter_id, body, key)
        answer = CommandSentOut(command=command_out(sent.command), superseded=list(sent.superseded))
        return answer, sent.replayed

    return run_once(
        caller,
        request,
        key=key,
        payload=body,
        action="command.send",
        subject=f"meter:{number}",
        perform=perform,
    )


@router.post(
    "/meters/{meter_id}/take-back",
    response_model=CommandSentOut,
    status_code=201,
    responses=replay_doc(CommandSentOut),
)
def take_back_money(
    meter_id: Id, body: TakeBackIn, request: Request, caller: Cashier, key: IdempotencyKey
) -> JSONResponse:
    """退电: take money back off a meter-billing meter (money.write, like a refund). Recorded
    here, sent by the executor; once the meter's take-back counter confirms it, the money is
    refundable from the account (``POST /accounts/{id}/refund``). ``all`` without an open
    meter-billing account clears the meter."""
    number = meter_number(caller, meter_id)

    def perform() -> tuple[BaseModel, bool]:
        sent = take_back.take_back(
            caller.db,
            organisation_id=caller.organisation_id,
            meter_id=meter_id,
            amount=body.amount,
            take_all=body.all,
            actor=caller.actor,
            idempotency_key=key,
        )
        return CommandSentOut(command=command_out(sent.command), superseded=[]), sent.replayed

    return run_once(
        caller,
        request,
        key=key,
        payload=body,
        action="money.take_back",
        subject=f"meter:{number}",
        perform=perform,
    )


@router.post("/commands/{command_id}/cancel", response_model=CommandOut)
def cancel_command(
    command_id: Id, body: CancelIn, request: Request, caller: MetersWriter, key: IdempotencyKey
) -> JSONResponse:
    """Stop a pending or sent command (409 when it has finished, or for a recharge push that may
    already be on the meter)."""

    def perform() -> tuple[BaseModel, bool]:
        cancelled = service.cancel(
            caller.db,
            organisation_id=caller.organisation_id,
            command_id=command_id,
            actor=caller.actor,
            reason=body.reason,
        )
        return command_out(cancelled), False

    return run_once(
        caller,
        request,
        key=key,
        payload=body,
        action="command.cancel",
        subject=f"command:{command_id}",
        perform=perform,
        status_code=200,
    )
