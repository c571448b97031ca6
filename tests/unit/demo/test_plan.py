"""The demo's seeded plan: the quantity-credit rooms (购量) are drawn after everything else, so
the rooms, tenants, meters and credit the demo had before them are the same."""

from __future__ import annotations

from collections import Counter

import pytest

from meterdesk.demo import plan


def test_the_quantity_rooms_leave_every_earlier_draw_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    full = plan.build_plan()
    monkeypatch.setattr(plan, "QUANTITY_ROOMS", ())

    without = plan.build_plan()

    assert full[: len(without)] == without
    assert plan.build_vacancies(full) == plan.build_vacancies(without)


def test_quantity_rooms_hold_one_water_meter_and_take_numbers_nobody_else_has() -> None:
    tenants = plan.build_plan()
    vacancies = plan.build_vacancies(tenants)

    held = [t for t in tenants if t.credit_unit == "quantity"]
    assert [t.customer for t in held] == [room.customer for room in plan.QUANTITY_ROOMS]
    assert all(len(t.meters) == 1 and t.meters[0].utility == "water" for t in held)
    assert all(t.overdraft == 0 for t in held)  # a quantity account has no money overdraft
    accounts = [t.account for t in tenants] + [v.preset[0] for v in vacancies if v.preset]
    rooms = [t.room for t in tenants] + [v.room for v in vacancies]
    meters = [m.number for t in tenants for m in t.meters] + [
        m.number for v in vacancies for m in v.meters
    ]
    for numbers in (accounts, rooms, meters):
        assert not [n for n, count in Counter(numbers).items() if count > 1]
