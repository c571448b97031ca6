"""One attempt at a take-back (退电): the recharge's no-twice protocol on the meter's take-back
counter (:func:`~meterdesk.devices.commands.readback.plan_take_back` decides).

Before every send the counter is read (the driver's ``take_back_count``; it is not part of a
poll's read, so polls cost no extra request): before the first send the amount ("all": the
remaining money the attempt has just read) and N = counter + 1 are fixed and written with
"sent", before the bytes leave; after it they never change, and N already on the meter
confirms without sending again (a lost reply). A refusal whose N is on the meter was an earlier
attempt that arrived; any other refusal (more than the meter holds, a replay of another N) fails
the command and nothing was taken. Confirmed by reading the counter back; one more read then
mirrors the meter's remaining money.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from meterdesk.devices.commands import repository
from meterdesk.devices.commands.model import (
    Aspect,
    CommandSpec,
    deadline_passed,
    disagrees,
    no_answer,
    refused,
)
from meterdesk.devices.commands.readback import RechargeStep, plan_take_back
from meterdesk.devices.commands.replaced import failed_as_replaced
from meterdesk.devices.drivers import UnsupportedCommandError
from meterdesk.devices.ports import DeviceError, DeviceRefusedError, Snapshot

if TYPE_CHECKING:
    from meterdesk.devices.commands.attempt import Attempt


class _Unsupported(Exception):  # noqa: N818 - internal signal: the meter cannot do it at all
    pass


async def run(attempt: Attempt, snapshot: Snapshot) -> None:
    """The attempt after its first read (``snapshot``: remaining money for "all")."""
    spec = attempt.command.spec
    if await failed_as_replaced(attempt):
        return
    try:
        count = await _count(attempt)
    except _Unsupported as error:
        await attempt.fail(refused(str(error)))
        return
    confirmed = None if attempt.sent else await asyncio.to_thread(_confirmed_on_device, attempt)
    decision = plan_take_back(
        spec=spec,
        meter_count=count,
        remaining_money=snapshot.remaining_money,
        ever_sent=attempt.sent,
        confirmed=confirmed,
    )
    if count is None:
        await attempt.retry_or_fail(no_answer(attempt.command.attempts))
    elif decision.step is RechargeStep.WAIT:
        await attempt.retry_or_fail(disagrees(decision.detail))
    elif decision.step is RechargeStep.CONFIRM:
        await attempt.confirm(decision.detail)
    elif decision.step is RechargeStep.FAIL:
        await attempt.fail(decision.detail)
    else:
        fixed = replace(spec, amount=decision.amount, take_back_count=decision.take_back_count)
        await _send_and_confirm(attempt, fixed, snapshot)


async def final_check(attempt: Attempt) -> None:
    """At the deadline: a take-back that was sent gets one last look at the counter."""
    spec = attempt.command.spec
    if await failed_as_replaced(attempt):
        return
    if attempt.sent:
        try:
            count = await _count(attempt)
        except _Unsupported:
            count = None
        if count is not None and count == spec.take_back_count:
            await attempt.confirm(f"take-back count is {count}: the take-back took effect")
            return
    await attempt.fail(deadline_passed(attempt.command.reason))


async def _send_and_confirm(attempt: Attempt, spec: CommandSpec, before: Snapshot) -> None:
    if not await attempt.mark_sent(spec, before, attempt.command.deadline_at):
        return  # cancelled meanwhile: nothing goes out
    assert attempt.driver is not None and spec.amount is not None
    assert spec.take_back_count is not None
    try:
        await attempt.driver.take_back(attempt.target.meter, spec.amount, spec.take_back_count)
    except DeviceRefusedError as error:
        await _refused(attempt, spec, str(error))
        return
    except DeviceError as error:
        attempt.note_failure(str(error))
        await attempt.retry_or_fail(no_answer(attempt.command.attempts))
        return
    shown = await _read_back(attempt, spec)
    if shown != spec.take_back_count:
        await attempt.retry_or_fail(disagrees(read_back_detail(shown, spec.take_back_count)))
        return
    after = await attempt.read()  # the money it holds now, mirrored with the outcome
    await attempt.confirm(_taken(spec, before.remaining_money, after))


async def _refused(attempt: Attempt, spec: CommandSpec, text: str) -> None:
    """A refused take-back may be the meter refusing a replay of one it already took."""
    try:
        count = await _count(attempt)
    except _Unsupported:
        count = None
    if count is not None and count == spec.take_back_count:
        await attempt.confirm(
            f"refused as a replay: the meter already has take-back {spec.take_back_count}"
        )
        return
    await attempt.fail(refused(text))


async def _read_back(attempt: Attempt, spec: CommandSpec) -> int | None:
    """The counter, read until it shows N or the money aspect's settle time is over."""
    settle = attempt.settle_of(Aspect.MONEY)
    end = min(attempt.now() + timedelta(seconds=settle.timeout_s), attempt.command.deadline_at)
    await attempt.x.sleep(settle.delay_s)
    shown = None
    while True:
        try:
            shown = await _count(attempt)
        except _Unsupported:
            return None
        if shown == spec.take_back_count:
            return shown
        if attempt.now() + timedelta(seconds=settle.poll_s) > end:
            return shown
        await attempt.x.sleep(settle.poll_s)


async def _count(attempt: Attempt) -> int | None:
    """The meter's take-back counter; None when it did not answer (noted for the mirror)."""
    assert attempt.driver is not None
    try:
        return await attempt.driver.take_back_count(attempt.target.meter)
    except UnsupportedCommandError as error:
        raise _Unsupported(str(error)) from None
    except DeviceError as error:
        attempt.note_failure(str(error))
        return None


def read_back_detail(shown: int | None, wanted: int | None) -> str:
    """Why a read-back did not confirm the take-back (a retry's reason)."""
    if shown is None:
        return "the meter did not answer the read-back"
    return f"take-back count is {shown}, expected {wanted}"


def _confirmed_on_device(attempt: Attempt) -> int | None:
    with attempt.x.db.read() as conn:
        return repository.highest_confirmed_take_back(conn, attempt.command.meter_id)


def _taken(spec: CommandSpec, before: Decimal | None, after: Snapshot | None) -> str:
    detail = f"take-back count is {spec.take_back_count}; took {spec.amount}"
    if before is not None and after is not None and after.remaining_money is not None:
        detail += f"; remaining money {after.remaining_money:f} (was {before:f})"
    return detail
