"""send_command and friends: idempotency, organisation scope, validation, listing, cancelling."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from test_commands_support import ACTOR, T0, World, make_world, sqlite_db

from meterdesk.devices.commands import service
from meterdesk.devices.tables import command_events, commands
from meterdesk.shared.errors import (
    ConflictError,
    IdempotencyConflictError,
    NotFoundError,
    ValidationError,
)
from meterdesk.shared.time import FakeClock


@pytest.fixture
def world(tmp_path: Path) -> World:
    clock = FakeClock(T0)
    return make_world(sqlite_db(tmp_path, clock), clock)


def send(
    world: World,
    kind: str = "relay_trip",
    key: str = "k1",
    params: dict[str, object] | None = None,
    *,
    meter_id: int | None = None,
    organisation_id: int | None = None,
    **extra: int,
) -> service.SendResult:
    return service.send_command(
        world.db,
        organisation_id=organisation_id or world.organisation_id,
        meter_id=meter_id or world.meter_id,
        kind=kind,
        params=params,
        actor=ACTOR,
        idempotency_key=key,
        **extra,  # type: ignore[arg-type]
    )


def count(world: World, table: object) -> int:
    with world.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_same_key_and_request_returns_the_first_command(world: World) -> None:
    first = send(world, "write_limits", params={"limits": {"alarm_1": "20"}})
    again = send(world, "write_limits", params={"limits": {"alarm_1": "20.00"}})
    assert (again.command.id, again.replayed, first.replayed) == (first.command.id, True, False)
    assert count(world, commands) == 1 and count(world, command_events) == 1


@pytest.mark.parametrize(
    ("kind", "params", "other_meter"),
    [
        ("relay_close", None, False),
        ("write_limits", {"limits": {"alarm_1": "21"}}, False),
        ("write_limits", {"limits": {"alarm_1": "20"}}, True),
    ],
)
def test_same_key_with_another_request_is_a_conflict(
    world: World, kind: str, params: dict[str, object] | None, other_meter: bool
) -> None:
    send(world, "write_limits", params={"limits": {"alarm_1": "20"}})
    meter_id = world.add_meter("M2") if other_meter else None
    with pytest.raises(IdempotencyConflictError, match="'k1' was already used"):
        send(world, kind, params=params, meter_id=meter_id)


def test_keys_are_scoped_by_organisation_and_meters_too(world: World) -> None:
    other = make_world(world.db, world.clock, name="Org B")
    mine = send(world)
    theirs = send(other)
    assert mine.command.id != theirs.command.id
    with pytest.raises(NotFoundError):
        send(other, key="k2", meter_id=world.meter_id)
    with pytest.raises(NotFoundError):
        service.command_log(
            world.db, organisation_id=other.organisation_id, command_id=mine.command.id
        )


def test_money_cannot_be_sent_to_a_meter_by_hand(world: World) -> None:
    with pytest.raises(ValidationError, match="push_recharge_for_transfer"):
        send(world, "recharge", params={"amount": "10"})


@pytest.mark.parametrize(
    ("extra", "message"), [({"deadline_s": 5}, "deadline_s"), ({"max_attempts": 0}, "max_attempts")]
)
def test_deadline_and_attempts_are_bounded(
    world: World, extra: dict[str, int], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        send(world, **extra)
    assert count(world, commands) == 0


def test_list_filters_by_status_and_meter_newest_first(world: World) -> None:
    second_meter = world.add_meter("M2")
    trip = send(world, "relay_trip", "a").command.id
    close = send(world, "relay_close", "b").command.id  # supersedes the trip
    valve = send(world, "protect_on", "c", meter_id=second_meter).command.id
    pending = service.list_commands(
        world.db, organisation_id=world.organisation_id, status="pending"
    )
    assert [c.id for c in pending] == [valve, close]
    on_m1 = service.list_commands(
        world.db, organisation_id=world.organisation_id, meter_id=world.meter_id
    )
    assert [(c.id, c.status, c.meter_number) for c in on_m1] == [
        (close, "pending", "M1"),
        (trip, "cancelled", "M1"),
    ]
    with pytest.raises(ValidationError, match="status"):
        service.list_commands(world.db, organisation_id=world.organisation_id, status="done")


def test_cancel_is_audited_and_only_once(world: World) -> None:
    command_id = send(world).command.id
    cancelled = service.cancel(
        world.db, organisation_id=world.organisation_id, command_id=command_id, actor=ACTOR
    )
    assert (cancelled.status, cancelled.reason) == ("cancelled", f"cancelled by {ACTOR}")
    with pytest.raises(ConflictError, match="already cancelled"):
        service.cancel(
            world.db, organisation_id=world.organisation_id, command_id=command_id, actor=ACTOR
        )
    log = service.command_log(
        world.db, organisation_id=world.organisation_id, command_id=command_id
    )
    assert [e.event for e in log.events] == ["created", "cancelled"]


def test_partial_limits_do_not_supersede_a_wider_write(world: World) -> None:
    wide = send(world, "write_limits", "a", {"limits": {"alarm_1": "20", "overdraft_limit": "5"}})
    narrow = send(world, "write_limits", "b", {"limits": {"alarm_1": "30"}})
    assert narrow.superseded == ()
    wider = send(
        world,
        "write_limits",
        "c",
        {"limits": {"alarm_1": "30", "overdraft_limit": "0", "alarm_2": "1"}},
    )
    assert set(wider.superseded) == {wide.command.id, narrow.command.id}


def test_view_shows_the_desired_state_in_words(world: World) -> None:
    shown = send(world, "write_prices", params={"prices": {"flat": "0.6537"}}).command
    assert (shown.desired, shown.params) == ("prices flat=0.6537", {"prices": {"flat": "0.6537"}})
    assert shown.deadline_at == T0.replace(minute=15) and shown.max_attempts == 8
