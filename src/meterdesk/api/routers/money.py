"""The desk: recharge (充值), refund (退费), arrears paid after a closing (欠费补缴) and reversal
(冲正). Each needs an Idempotency-Key:
the same key repeats the first answer (200, ``Idempotent-Replay: true``) and never moves money
twice; the same key on a different request is a 409."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from meterdesk.api.deps import Caller, Cashier, IdempotencyKey, Reverser
from meterdesk.api.errors import ERROR_RESPONSES
from meterdesk.api.idempotency import run_once
from meterdesk.api.routers.accounts import number_of, replay_doc
from meterdesk.api.schemas.accounts import (
    MoneyIn,
    MoneyOut,
    QuantityLeftOut,
    ReversalIn,
    ReversalOut,
)
from meterdesk.api.schemas.common import BigId, Id
from meterdesk.billing import cashier, cashier_arrears, cashier_refund, quantity_show
from meterdesk.shared.money import format_money, parse_positive_money

router = APIRouter(responses=ERROR_RESPONSES, tags=["money"])


def _money(
    caller: Caller, account_id: Id, body: MoneyIn, key: str, kind: str
) -> tuple[BaseModel, bool]:
    use_case = {
        "recharge": cashier.recharge,
        "refund": cashier_refund.refund,
        "arrears_payment": cashier_arrears.pay_arrears,
    }[kind]
    result = use_case(
        caller.db,
        organisation_id=caller.organisation_id,
        account_id=account_id,
        amount=body.amount,
        method=body.method,
        actor=caller.actor,
        idempotency_key=key,
        reference=body.reference,
    )
    held = None if kind == "arrears_payment" else result.quantity  # as its transaction saw it
    answer = MoneyOut(
        account_id=account_id,
        transfer_id=result.transfer_id,
        amount=format_money(parse_positive_money(body.amount)),
        balance=format_money(result.balance),
        arrears=format_money(result.arrears),
        quantity=None
        if held is None
        else QuantityLeftOut.model_validate(quantity_show.left_dict(held)),
    )
    return answer, result.replayed


def _desk(
    caller: Caller, request: Request, account_id: Id, body: MoneyIn, key: str, kind: str
) -> JSONResponse:
    number = number_of(caller, account_id)  # 404 for another organisation's account
    return run_once(
        caller,
        request,
        key=key,
        payload=body,
        action=f"money.{kind}",
        subject=f"account:{number}",
        perform=lambda: _money(caller, account_id, body, key, kind),
    )


@router.post(
    "/accounts/{account_id}/recharge",
    response_model=MoneyOut,
    status_code=201,
    responses=replay_doc(MoneyOut),
)
def recharge(
    account_id: Id, body: MoneyIn, request: Request, caller: Cashier, key: IdempotencyKey
) -> JSONResponse:
    """Credit money to the account (emergency credit taken is repaid first, then arrears); supply restores by policy.
    A quantity-credit account (购量) buys kWh or m³ with it at today's price: ``quantity`` says
    what is left."""
    return _desk(caller, request, account_id, body, key, "recharge")


@router.post(
    "/accounts/{account_id}/refund",
    response_model=MoneyOut,
    status_code=201,
    responses=replay_doc(MoneyOut),
)
def refund(
    account_id: Id, body: MoneyIn, request: Request, caller: Cashier, key: IdempotencyKey
) -> JSONResponse:
    """Pay back part or all of the credit (409 when the balance is not enough). The amount is
    money also for a quantity-credit account (购量): the money carried first, then the newest
    unused quantity worth it, at the prices it was bought at."""
    return _desk(caller, request, account_id, body, key, "refund")


@router.post(
    "/accounts/{account_id}/arrears-payment",
    response_model=MoneyOut,
    status_code=201,
    responses=replay_doc(MoneyOut),
)
def pay_arrears(
    account_id: Id, body: MoneyIn, request: Request, caller: Cashier, key: IdempotencyKey
) -> JSONResponse:
    """Collect arrears a closed account still owes (欠费补缴); 409 on an open account (a recharge
    repays arrears first), when nothing is owed, or above what is owed."""
    return _desk(caller, request, account_id, body, key, "arrears_payment")


@router.post(
    "/transfers/{transfer_id}/reversal",
    response_model=ReversalOut,
    status_code=201,
    responses=replay_doc(ReversalOut),
)
def reverse(
    transfer_id: BigId, body: ReversalIn, request: Request, caller: Reverser, key: IdempotencyKey
) -> JSONResponse:
    """Reverse a recharge, refund or arrears payment made in error, with a new opposite transfer
    (冲正)."""

    def perform() -> tuple[BaseModel, bool]:
        reversal = cashier_refund.reverse(
            caller.db,
            organisation_id=caller.organisation_id,
            transfer_id=transfer_id,
            actor=caller.actor,
            idempotency_key=key,
            memo=body.memo,
        )
        return ReversalOut(transfer_id=transfer_id, reversal_transfer_id=reversal), False

    return run_once(
        caller,
        request,
        key=key,
        payload=body,
        action="money.reverse",
        subject=f"transfer:{transfer_id}",
        perform=perform,
    )
