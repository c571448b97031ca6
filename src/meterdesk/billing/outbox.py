"""The control loop's outbox in the database: a decision becomes a ``commands`` row (the device
layer's executor sends it after commit) and tenant messages become notification rows (the
dispatcher delivers them after commit). Both are written in the caller's transaction and keyed by
the decision, so a decision can never leave twice."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Connection

from meterdesk.shared.time import Clock, system_clock

COMMAND_DEADLINE = timedelta(minutes=30)
CONTROL_ACTOR = "system:control"


class DatabaseOutbox:
    def __init__(self, clock: Clock = system_clock) -> None:
        self.clock = clock

    def command(
        self,
        conn: Connection,
        *,
        organisation_id: int,
        meter_id: int,
        kind: str,
        key: str,
        params: dict[str, Any],
    ) -> None:
        """A desired state for the device layer: superseding older commands for the same relay
        or valve, audited, with its created event; the executor sends it after commit."""
        from meterdesk.devices.commands import service as commands

        commands.send_command_in(
            conn,
            organisation_id=organisation_id,
            meter_id=meter_id,
            kind=kind,
            params=None,
            actor=CONTROL_ACTOR,
            at=self.clock(),
            idempotency_key=key,
            deadline_s=int(COMMAND_DEADLINE.total_seconds()),
            context=params,
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
        """A message to the tenant (and operators' webhooks/log), queued in the caller's
        transaction and delivered by the notifications dispatcher after commit."""
        from meterdesk.notifications import service as notifications

        notifications.enqueue_in(
            conn,
            organisation_id=organisation_id,
            event=event,
            key=key,
            params=params,
            at=self.clock(),
            account_id=account_id,
            channels=channels,
        )
