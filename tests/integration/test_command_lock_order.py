"""The executor and an MQTT ingest take ``commands`` and ``device_status`` rows in the same order.

An ingest transaction whose control decision supersedes a meter's command locks that command,
then saves the meter's live values (``device_status``). The executor's "snapshot + sent"
transaction once wrote the snapshot first and the command second: on PostgreSQL the two
deadlocked (found in review; the executor's attempt failed with DeadlockDetected)."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit" / "devices"))

from test_commands_support import ACTOR, FAST, FakeDriver, make_world

from meterdesk.db.database import Database
from meterdesk.devices import mqtt_rows
from meterdesk.devices.commands import service
from meterdesk.devices.commands.executor import CommandExecutor
from meterdesk.devices.uplink import MeterReport
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration


def test_a_supersede_during_the_send_does_not_deadlock_with_the_ingest(
    db: Database, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    world = make_world(db, clock)
    service.send_command(
        db,
        organisation_id=world.organisation_id,
        meter_id=world.meter_id,
        kind="relay_trip",
        params={},
        actor=ACTOR,
        idempotency_key="trip",
    )
    superseded = threading.Event()
    ingest_errors: list[BaseException] = []

    def ingest_batch() -> None:  # what UplinkStore.commit does for one report of this meter
        try:
            with db.transaction() as conn:
                service.send_command_in(  # the control decision: supersedes the trip
                    conn,
                    organisation_id=world.organisation_id,
                    meter_id=world.meter_id,
                    kind="relay_close",
                    params=None,
                    actor=ACTOR,
                    at=clock(),
                    idempotency_key="control-decision",
                )
                superseded.set()
                time.sleep(0.5)  # the rest of the batch
                report = MeterReport(addr="x", time=int(time.time() * 1000), state="ONLINE")
                mqtt_rows.save_live(conn, {world.meter_id: report}, datetime.now(UTC))
        except BaseException as error:  # recorded for the assertion below
            ingest_errors.append(error)
            superseded.set()

    class Driver(FakeDriver):
        first = True

        async def read(self, meter: Any) -> Any:
            if self.first:  # the ingest starts while the executor reads the meter
                self.first = False
                threading.Thread(target=ingest_batch).start()
                await asyncio.to_thread(superseded.wait, 5)
            return await super().read(meter)

    driver = Driver(clock)

    async def no_sleep(_seconds: float) -> None:
        await asyncio.sleep(0)

    executor = CommandExecutor(db, lambda _t: driver, config=FAST, clock=clock, sleep=no_sleep)
    caplog.set_level(logging.ERROR)
    asyncio.run(executor.run_once())
    deadline = time.monotonic() + 10
    while not ingest_errors and threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ingest_errors == []
    assert [record.getMessage() for record in caplog.records] == []
