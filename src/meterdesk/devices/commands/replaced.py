"""A money command (recharge push, take-back) sent before a replacement of its meter was
recorded went to the device that was taken away. The new device's counter says nothing about
that send: showing N − 1, the no-twice protocol would send it again (the tenant's money moved
or taken a second time, when the old device took it); showing N, it would confirm a send the
old device may never have received. Such a command fails at its next attempt or deadline; a
person reconciles the old device (docs/commands.md).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING

from meterdesk.devices.commands import repository
from meterdesk.devices.commands.model import CommandKind

if TYPE_CHECKING:
    from meterdesk.devices.commands.attempt import Attempt


async def failed_as_replaced(attempt: Attempt) -> bool:
    """Fail the command (and say True) when it was sent before its meter's last replacement."""
    sent_at = attempt.command.sent_at
    if sent_at is None:
        return False
    replaced = await asyncio.to_thread(_replaced_after, attempt, sent_at)
    if replaced is None:
        return False
    spec = attempt.command.spec
    what = (
        f"purchase {spec.purchase_count}"
        if spec.kind is CommandKind.RECHARGE
        else f"take-back {spec.take_back_count}"
    )
    await attempt.fail(
        f"the meter was replaced at {replaced.isoformat()}, after {what} was sent: whether the "
        "old device took it is unknown and the new one is not asked; reconcile the old device"
    )
    return True


def _replaced_after(attempt: Attempt, sent_at: datetime) -> datetime | None:
    with attempt.x.db.read() as conn:
        return repository.replaced_after(conn, attempt.command.meter_id, sent_at)
