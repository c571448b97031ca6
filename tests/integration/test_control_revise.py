"""Revising an alarm plan or a friendly-hours profile that accounts already use: the change
reaches every open account on it at once — a tenant already below a raised level is warned now,
a raised level fires on the next deduction that crosses it (the stored watch threshold moves
with it), a cut that waited for a window removed happens now — in one audited transaction, on
SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from test_control_loop import LEVELS, Room

from meterdesk.audit.tables import audit_log
from meterdesk.billing import control_read, control_revise
from meterdesk.billing.control_send import RecordingOutbox
from meterdesk.billing.tables import alarm_plans, friendly_profiles
from meterdesk.db.database import Database
from meterdesk.shared.errors import ConflictError, NotFoundError, ValidationError
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration


@pytest.fixture
def room(db: Database, clock: FakeClock) -> Room:
    from meterdesk.billing import control_admin

    r = Room(db, clock, RecordingOutbox())  # 30.00 of credit, 1.00 per kWh
    control_admin.create_alarm_plan(
        db, organisation_id=r.org, name="default", levels=LEVELS, actor="op"
    )  # levels at 20, 10 and 5
    r.policy(alarm_plan="default")
    return r


def plan_id(room: Room) -> int:
    return control_read.id_of_name(
        room.db, organisation_id=room.org, table=alarm_plans, name="default", what="alarm plan"
    )


def revise(room: Room, level_1: str, **extra: object) -> int:
    levels = [{**LEVELS[0], "amount": level_1}, *LEVELS[1:]]
    return control_revise.revise_alarm_plan(
        room.db,
        organisation_id=room.org,
        plan_id=plan_id(room),
        levels=levels,
        actor="op",
        outbox=room.outbox,
        **extra,  # type: ignore[arg-type]
    )


def test_raising_a_level_warns_at_once_a_tenant_already_below_it(room: Room, db: Database) -> None:
    assert room.events() == []
    assert revise(room, "40.00") == 1  # one open account on the plan, decided again
    assert room.events() == ["alarm_level_1"]
    assert revise(room, "40.00") == 1
    assert room.events() == ["alarm_level_1"], "deciding again never warns twice"
    with db.read() as conn:
        entry = conn.execute(
            select(audit_log.c.actor, audit_log.c.detail)
            .where(audit_log.c.action == "alarm_plan.update")
            .order_by(audit_log.c.id)
        ).first()
    assert entry is not None
    detail = json.loads(entry.detail) if isinstance(entry.detail, str) else entry.detail
    assert entry.actor == "op"
    before = {lv["level"]: lv.get("amount") for lv in detail["before"]["levels"]}
    after = {lv["level"]: lv.get("amount") for lv in detail["after"]["levels"]}
    assert (before[1], after[1]) == ("20.00", "40.00")


def test_a_raised_level_fires_on_the_next_deduction_that_crosses_it(room: Room) -> None:
    """The hot path looks only at accounts at or below their stored watch threshold: the
    revision must move it, or a balance between the old and the new level is never looked at."""
    room.use("1")  # 29.00: the ingestor has read and cached the watch (20.00)
    revise(room, "25.00")
    assert room.events() == []  # 29.00 is above the new level
    room.use("5")  # 24.00: crosses 25.00, still above the old 20.00
    assert room.events() == ["alarm_level_1"]


def test_a_window_taken_out_of_a_profile_lets_the_waiting_cut_happen_now(room: Room) -> None:
    room.always_friendly()
    for _ in range(7):
        room.use("5")  # 30.00 used up: the cut waits for the window to end
    assert "relay_trip" not in room.kinds()
    profile = control_read.id_of_name(
        room.db,
        organisation_id=room.org,
        table=friendly_profiles,
        name="always",
        what="friendly-hours profile",
    )
    decided = control_revise.revise_friendly_profile(
        room.db,
        organisation_id=room.org,
        profile_id=profile,
        windows=[],
        weekends=False,
        holidays=False,
        actor="op",
        outbox=room.outbox,
    )
    assert decided == 1 and room.kinds() == ["relay_trip"]
    shown = control_read.friendly_profile(room.db, organisation_id=room.org, profile_id=profile)
    assert (shown.windows, shown.weekends, shown.holidays) == ([], False, False)


def test_a_bad_revision_changes_nothing(room: Room, db: Database) -> None:
    from meterdesk.billing import control_admin

    control_admin.create_alarm_plan(
        db, organisation_id=room.org, name="other", levels=LEVELS, actor="op"
    )
    before = control_read.alarm_plan(db, organisation_id=room.org, plan_id=plan_id(room))
    with pytest.raises(ConflictError, match="already exists"):
        revise(room, "40.00", name="other")
    with pytest.raises(ValidationError):
        revise(room, "-1")
    with pytest.raises(NotFoundError):
        control_revise.revise_alarm_plan(
            db,
            organisation_id=room.org + 1000,  # another organisation's id is "not found"
            plan_id=plan_id(room),
            levels=LEVELS,
            actor="op",
            outbox=room.outbox,
        )
    assert control_read.alarm_plan(db, organisation_id=room.org, plan_id=plan_id(room)) == before
    assert room.events() == []
    with db.read() as conn:
        assert not conn.execute(
            select(audit_log.c.id).where(audit_log.c.action == "alarm_plan.update")
        ).all()
