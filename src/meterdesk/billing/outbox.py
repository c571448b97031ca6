"""The control loop's outbox in the database: a decision becomes a ``commands`` row (the device
layer's executor sends it after commit) and tenant messages become notification rows (the
dispatcher delivers them after commit). Both are written in the caller's transaction and keyed by
the decision, so a decision can never leave twice."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from meterdesk.devices.commands import batch, service
from meterdesk.notifications import queueing
from meterdesk.shared.time import Clock, system_clock

if TYPE_CHECKING:
    from meterdesk.billing.control_send import CommandRequest, MessageRequest

COMMAND_DEADLINE = timedelta(minutes=30)
CONTROL_ACTOR = "system:control"


class DatabaseOutbox:
    def __init__(self, clock: Clock = system_clock) -> None:
        self.clock = clock

    def send_commands(self, conn: Connection, requests: Sequence[CommandRequest]) -> None:
        """Desired states for the device layer, recorded together: each supersedes older
        commands for the same relay or valve, is audited and has its created event; the
        executor sends them after commit."""
        batch.create_many_in(
            conn,
            [
                batch.NewCommand(
                    organisation_id=request.organisation_id,
                    meter_id=request.meter_id,
                    spec=service.sendable_spec(request.kind, None),
                    idempotency_key=request.key,
                    deadline_s=int(COMMAND_DEADLINE.total_seconds()),
                    context=request.params,
                )
                for request in requests
            ],
            actor=CONTROL_ACTOR,
            at=self.clock(),
        )

    def send_messages(self, conn: Connection, requests: Sequence[MessageRequest]) -> None:
        """Messages to tenants (and operators' webhooks/log), queued together in the caller's
        transaction and delivered by the notifications dispatcher after commit."""
        queueing.enqueue_many_in(
            conn,
            [
                queueing.NewNotification(
                    organisation_id=request.organisation_id,
                    event=request.event,
                    key=request.key,
                    params=request.params,
                    account_id=request.account_id,
                    channels=request.channels,
                    urgency=request.urgency,
                )
                for request in requests
            ],
            at=self.clock(),
        )

    def message(
        self,
        conn: Connection,
        *,
        organisation_id: int,
        account_id: int,
        event: str,
        key: str,
        params: dict[str, Any],
        channels: tuple[str, ...] | None,
    ) -> None:
        """One message, as :meth:`send_messages` queues them."""
        queueing.enqueue_in(
            conn,
            organisation_id=organisation_id,
            event=event,
            key=key,
            params=params,
            at=self.clock(),
            account_id=account_id,
            channels=channels,
        )
