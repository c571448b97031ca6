"""The control loop's command batch on both databases: ids come back in request order
(``INSERT … RETURNING`` with many rows), a later command of the batch supersedes an earlier one
on the same meter, and a replayed batch writes nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit" / "devices"))

from test_commands_support import ACTOR, T0, World, make_world

from meterdesk.db.database import Database
from meterdesk.devices.commands import batch, service
from meterdesk.devices.commands.params import parse_spec
from meterdesk.devices.tables import command_events, commands
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration


@pytest.fixture
def world(db: Database, clock: FakeClock) -> World:
    found = make_world(db, clock)
    found.add_meter("M2")
    return found


def request(world: World, meter_offset: int, kind: str, key: str) -> batch.NewCommand:
    return batch.NewCommand(
        organisation_id=world.organisation_id,
        meter_id=world.meter_id + meter_offset,
        spec=parse_spec(kind, None),
        idempotency_key=key,
        context={"reason": kind},
    )


def record(world: World, requests: list[batch.NewCommand]) -> None:
    with world.db.transaction() as conn:
        batch.create_many_in(conn, requests, actor=ACTOR, at=T0)


def test_batch_on_both_databases(world: World) -> None:
    wanted = [
        request(world, 0, "relay_trip", "a"),
        request(world, 1, "relay_trip", "b"),
        request(world, 0, "relay_close", "c"),
        request(world, 1, "protect_on", "d"),
    ]
    record(world, wanted)
    found = service.list_commands(world.db, organisation_id=world.organisation_id)[::-1]
    assert [(c.meter_id, c.kind) for c in found] == [
        (r.meter_id, r.spec.kind.value) for r in wanted
    ]
    trip_a, trip_b, close_c, protect_d = found
    assert (trip_a.status, trip_a.reason) == ("cancelled", f"superseded by #{close_c.id}")
    assert [c.status for c in (trip_b, close_c, protect_d)] == ["pending"] * 3
    with world.db.read() as conn:
        events = conn.execute(select(func.count()).select_from(command_events)).scalar_one()
    assert events == 5  # four created, one cancelled
    record(world, wanted)  # replayed: nothing more
    with world.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(commands)).scalar_one() == 4
        assert conn.execute(select(func.count()).select_from(command_events)).scalar_one() == 5
