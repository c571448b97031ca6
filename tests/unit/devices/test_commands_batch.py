"""create_many_in: a batch of commands leaves the database exactly as create_in one after the
other would (rows, statuses, supersede reasons, events, audit), replays are skipped, conflicts
refused with nothing written."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from test_commands_support import ACTOR, T0, World, make_world, sqlite_db

from meterdesk.audit.tables import audit_log
from meterdesk.devices.commands import batch, service
from meterdesk.devices.commands.params import parse_spec
from meterdesk.devices.tables import command_events, commands
from meterdesk.shared.errors import IdempotencyConflictError, NotFoundError
from meterdesk.shared.time import FakeClock

# (kind, params) pairs: relay and protect aspects supersede within themselves; limits supersede
# when they cover the older ones; a clock sync never supersedes anything but another.
REQUESTS = [
    ("relay_trip", None),
    ("relay_close", None),
    ("relay_close_allowed", None),
    ("protect_on", None),
    ("protect_off", None),
    ("write_limits", {"limits": {"alarm_1": "20"}}),
    ("write_limits", {"limits": {"alarm_1": "20", "alarm_2": "5"}}),
    ("clock_sync", None),
]


def fresh_world(folder: Path) -> World:
    clock = FakeClock(T0)
    world = make_world(sqlite_db(folder, clock), clock)
    world.add_meter("M2")
    return world


def new_command(world: World, meter: int, choice: int, key: str) -> batch.NewCommand:
    kind, params = REQUESTS[choice]
    return batch.NewCommand(
        organisation_id=world.organisation_id,
        meter_id=world.meter_id + meter,  # M1, then M2 (ids in order)
        spec=parse_spec(kind, params),
        idempotency_key=key,
        context={"reason": kind},
    )


def one_by_one(world: World, requests: list[batch.NewCommand]) -> None:
    with world.db.transaction() as conn:
        for request in requests:
            service.create_in(
                conn,
                organisation_id=request.organisation_id,
                meter_id=request.meter_id,
                spec=request.spec,
                actor=ACTOR,
                at=T0,
                idempotency_key=request.idempotency_key,
                context=request.context,
            )


def together(world: World, requests: list[batch.NewCommand]) -> None:
    with world.db.transaction() as conn:
        batch.create_many_in(conn, requests, actor=ACTOR, at=T0)


def snapshot(world: World) -> dict[str, Any]:
    """Everything the two paths write, with the events of each command in their own order."""
    with world.db.read() as conn:
        rows = conn.execute(select(commands).order_by(commands.c.id)).mappings().all()
        events = conn.execute(
            select(
                command_events.c.command_id, command_events.c.event, command_events.c.detail
            ).order_by(command_events.c.command_id, command_events.c.id)
        ).all()
        audits = conn.execute(
            select(
                audit_log.c.action, audit_log.c.subject, audit_log.c.detail, audit_log.c.actor
            ).order_by(audit_log.c.id)
        ).all()
    return {
        "commands": [{k: v for k, v in row.items()} for row in rows],
        "events": [tuple(event) for event in events],
        "audit": [(a, s, json.loads(d), who) for a, s, d, who in audits],
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, len(REQUESTS) - 1), st.integers(0, 3)),
        min_size=2,
        max_size=12,
    )
)
def test_a_batch_writes_what_one_by_one_would(draws: list[tuple[int, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        first, second = fresh_world(Path(folder) / "a"), fresh_world(Path(folder) / "b")
        # the same (meter, request, n) gives the same key: a repeat is a replay, never a conflict
        make = [(meter, choice, f"k:{meter}:{choice}:{n}") for meter, choice, n in draws]
        one_by_one(first, [new_command(first, m, c, k) for m, c, k in make])
        together(second, [new_command(second, m, c, k) for m, c, k in make])
        assert snapshot(second) == snapshot(first)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return fresh_world(tmp_path)


def test_a_later_command_of_the_batch_supersedes_an_earlier_one(world: World) -> None:
    together(world, [new_command(world, 0, 0, "trip"), new_command(world, 0, 1, "close")])
    trip, close = service.list_commands(world.db, organisation_id=world.organisation_id)[::-1]
    assert (trip.status, trip.reason) == ("cancelled", f"superseded by #{close.id}")
    assert close.status == "pending"
    audits = snapshot(world)["audit"]
    sent = [detail["superseded"] for action, _, detail, _ in audits if action == "command.send"]
    assert sent == [[], [trip.id]]


def test_a_replayed_batch_writes_nothing_more(world: World) -> None:
    requests = [new_command(world, 0, 0, "trip"), new_command(world, 1, 5, "limits")]
    together(world, requests)
    before = snapshot(world)
    together(world, requests)
    assert snapshot(world) == before


def test_a_key_used_for_another_request_refuses_the_whole_batch(world: World) -> None:
    together(world, [new_command(world, 0, 0, "k")])
    before = snapshot(world)
    with pytest.raises(IdempotencyConflictError, match="'k' was already used"):
        together(world, [new_command(world, 1, 3, "fresh"), new_command(world, 0, 1, "k")])
    assert snapshot(world) == before


def test_one_key_twice_in_a_batch_for_two_requests_is_a_conflict(world: World) -> None:
    with pytest.raises(IdempotencyConflictError, match="in the same batch"):
        together(world, [new_command(world, 0, 0, "k"), new_command(world, 0, 1, "k")])
    assert snapshot(world)["commands"] == []


def test_a_meter_of_another_organisation_is_not_found(world: World) -> None:
    other = make_world(world.db, world.clock, name="Org B")
    stranger = batch.NewCommand(
        organisation_id=world.organisation_id,
        meter_id=other.meter_id,
        spec=parse_spec("relay_trip", None),
        idempotency_key="x",
    )
    with pytest.raises(NotFoundError, match=f"meter {other.meter_id} not found"):
        together(world, [new_command(world, 0, 0, "mine"), stranger])
    assert snapshot(world)["commands"] == []
