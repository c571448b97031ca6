"""The room page's alarm badge shows the highest level sent since the last re-arm, as the room
grid counts it (``control_config.grid_columns``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from apikit import World
from consolekit import Console
from sqlalchemy import insert

from meterdesk.billing import control_state
from meterdesk.billing.policy import AlarmState, ControlState, Supply
from meterdesk.billing.tables import account_controls

T = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("alarms", "badge"),
    [
        ({1: AlarmState(1, T), 2: AlarmState(2, T), 3: AlarmState(0, None)}, "Alarm level 2"),
        ({1: AlarmState(0, T), 2: AlarmState(0, T), 3: AlarmState(0, T)}, None),  # re-armed
    ],
)
def test_the_room_badge_shows_the_highest_alarm_level_sent_since_the_last_recharge(
    world: World, alarms: dict[int, AlarmState], badge: str | None
) -> None:
    """A recharge re-arms the levels but keeps their entries (sent 0): the badge used to show the
    highest entry, "Alarm level 3", on an account the grid counts as no alarm."""
    state = ControlState(Supply.ON, alarms)
    with world.db.transaction() as conn:
        conn.execute(
            insert(account_controls).values(
                account_id=world.alpha.account_id,
                **control_state.default_policy_columns(),
                **control_state.state_values(state, (0, True), 1, T),
            )
        )
    text = (
        Console(world.client, world.alpha, "operator")
        .get(f"/rooms/{world.alpha.room_id}/status")
        .text
    )
    shown = [
        level for level in ("Alarm level 1", "Alarm level 2", "Alarm level 3") if level in text
    ]
    assert shown == ([badge] if badge else [])
