"""When a meter's last read disagrees with the platform's supply decision, and which command
puts the decision back: every combination of decision, protect, utility and shown state."""

from __future__ import annotations

import pytest

from meterdesk.billing.policy import RestoreMode, Supply
from meterdesk.billing.supply_drift import Drift, drift

ON, OFF, PENDING = Supply.ON, Supply.OFF, Supply.CUT_PENDING


@pytest.mark.parametrize(
    ("supply", "protect", "utility", "shown", "expected"),
    [
        (ON, False, "electricity", "open", Drift("relay", "open", "on", "relay_close")),
        (ON, False, "electricity", "closed", None),
        (OFF, False, "electricity", "closed", Drift("relay", "closed", "off", "relay_trip")),
        (OFF, False, "electricity", "open", None),
        (OFF, True, "electricity", "open", Drift("relay", "open", "on", "relay_close")),
        (OFF, True, "electricity", "closed", None),  # protected: on is right
        (ON, True, "electricity", "open", Drift("relay", "open", "on", "relay_close")),
        (PENDING, False, "electricity", "open", None),  # friendly hours decide
        (PENDING, False, "electricity", "closed", None),
        (ON, False, "electricity", None, None),  # never read
        (ON, False, "water", "closed", Drift("valve", "closed", "on", "valve_open")),
        (ON, False, "water", "open", None),
        (OFF, False, "water", "open", Drift("valve", "open", "off", "valve_close")),
        (OFF, False, "water", "closed", None),
        (ON, False, "water", "abnormal", None),  # no command makes a stuck valve well
        (ON, False, "heat", "open", None),  # nothing to switch
    ],
)
def test_drift_is_a_read_that_contradicts_the_decision(
    supply: Supply, protect: bool, utility: str, shown: str | None, expected: Drift | None
) -> None:
    relay, valve = (shown, None) if utility != "water" else (None, shown)
    found = drift(supply=supply, protect=protect, utility=utility, relay=relay, valve=valve)
    assert found == expected


def test_a_relay_is_put_back_as_the_account_restores() -> None:
    found = drift(
        supply=ON, protect=False, utility="electricity", relay="open", valve=None,
        restore_mode=RestoreMode.CLOSE_ALLOWED,
    )  # fmt: skip
    assert found is not None and found.kind == "relay_close_allowed"
    assert found.why == "meter showed relay open while supply is on"


def test_an_armed_meter_waits_for_the_button_but_one_closed_while_cut_is_still_tripped() -> None:
    common = {"utility": "electricity", "valve": None, "armed": True}
    assert drift(supply=ON, protect=False, relay="open", **common) is None  # type: ignore[arg-type]
    found = drift(supply=OFF, protect=False, relay="closed", **common)  # type: ignore[arg-type]
    assert found is not None and found.kind == "relay_trip"
