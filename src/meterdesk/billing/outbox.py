"""The control loop's outbox in the database: a decision becomes a ``commands`` row (the device
layer's executor sends it after commit) and tenant messages become notification rows (the
dispatcher delivers them after commit). Both are written in the caller's transaction and keyed by
the decision, so a decision can never leave twice."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from meterdesk.devices.tables import commands
from meterdesk.shared.time import Clock, system_clock

COMMAND_DEADLINE = timedelta(minutes=30)
COMMAND_ATTEMPTS = 8


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
        now = self.clock()
        builder = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(
            builder(commands)
            .values(
                organisation_id=organisation_id,
                meter_id=meter_id,
                kind=kind,
                params=json.dumps(params, sort_keys=True),
                status="pending",
                reason=None,
                attempts=0,
                max_attempts=COMMAND_ATTEMPTS,
                next_attempt_at=now,
                deadline_at=now + COMMAND_DEADLINE,
                idempotency_key=key,
                created_by="system:control",
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
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
        """Tenant messages are queued by the notifications area once it exists (issue 4)."""
