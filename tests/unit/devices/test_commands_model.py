"""The pure command model: parameters, desired states, read-back, retries, supersede, recharges."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from meterdesk.devices.commands.model import (
    CommandKind,
    CommandSpec,
    RetryPolicy,
    deadline_passed,
    disagrees,
    next_attempt_at,
    supersedes,
    validity_deadline,
)
from meterdesk.devices.commands.params import meter_price_table, parse_spec
from meterdesk.devices.commands.readback import (
    RechargeStep,
    check,
    money_note,
    plan_recharge,
    plan_take_back,
)
from meterdesk.devices.ports import Snapshot
from meterdesk.shared.errors import ValidationError
from meterdesk.tariffs.model import TariffVersion, TierBlock, TierPlan

D = Decimal
T0 = datetime(2026, 11, 2, tzinfo=UTC)


def snap(**values: object) -> Snapshot:
    return Snapshot(meter_id=1, measured_at=T0, **values)  # type: ignore[arg-type]


# --- parameters --------------------------------------------------------------------------------


def test_relay_commands_take_no_parameters() -> None:
    assert parse_spec("relay_trip", {}).kind is CommandKind.RELAY_TRIP
    with pytest.raises(ValidationError, match="takes no parameter 'amount'"):
        parse_spec("relay_trip", {"amount": "1"})


def test_unknown_kind_is_refused_with_the_choices() -> None:
    with pytest.raises(ValidationError, match="relay_trip"):
        parse_spec("explode", None)


def test_prices_must_fit_the_meters_four_place_register() -> None:
    spec = parse_spec("write_prices", {"prices": {"valley": "0.32", "peak": "1.0512"}})
    assert spec.prices == {"peak": D("1.0512"), "valley": D("0.32")}
    with pytest.raises(ValidationError, match="more than 4 decimal places"):
        parse_spec("write_prices", {"prices": {"flat": "0.65371"}})
    with pytest.raises(ValidationError, match="deep_valley"):
        parse_spec("write_prices", {"prices": {"deep_valley": "0.1"}})


def test_alarm_1_must_not_be_below_alarm_2() -> None:
    spec = parse_spec("write_limits", {"limits": {"alarm_1": "20", "alarm_2": "10"}})
    assert spec.limits == {"alarm_1": D("20.00"), "alarm_2": D("10.00")}
    with pytest.raises(ValidationError, match="alarm_1 must be at least alarm_2"):
        parse_spec("write_limits", {"limits": {"alarm_1": "5", "alarm_2": "10"}})
    with pytest.raises(ValidationError, match="whole fen"):
        parse_spec("write_limits", {"limits": {"overdraft_limit": "1.001"}})


def test_recharge_amount_is_positive_money_never_a_float() -> None:
    assert parse_spec("recharge", {"amount": "50", "purchase_count": 3}).amount == D("50.00")
    with pytest.raises(ValidationError):
        parse_spec("recharge", {"amount": 50.0})
    with pytest.raises(ValidationError):
        parse_spec("recharge", {"amount": "0"})


def test_request_hash_ignores_the_assigned_purchase_count_but_not_the_meter() -> None:
    one = parse_spec("recharge", {"amount": "5", "purchase_count": 3, "transfer_id": 9})
    two = parse_spec("recharge", {"amount": "5", "purchase_count": 4, "transfer_id": 9})
    assert one.request_hash(1) == two.request_hash(1)
    assert one.request_hash(1) != one.request_hash(2)
    assert one.request_hash(1) != parse_spec("recharge", {"amount": "6"}).request_hash(1)


def test_flat_tariff_fills_all_four_price_slots() -> None:
    flat = TariffVersion(date(2026, 1, 1), {"flat": D("0.6537")})
    assert meter_price_table(flat) == dict.fromkeys(
        ("sharp", "peak", "flat", "valley"), D("0.6537")
    )


def test_tiered_tariff_cannot_be_written_to_a_meter() -> None:
    tiers = TierPlan("month", "price", (TierBlock(D(100), D("0.5")), TierBlock(None, D("0.8"))))
    with pytest.raises(ValidationError, match="tiered"):
        meter_price_table(TariffVersion(date(2026, 1, 1), {}, tiers=tiers))


# --- read-back ---------------------------------------------------------------------------------


def test_trip_is_proved_only_by_an_open_relay() -> None:
    trip = parse_spec("relay_trip", {})
    assert check(trip, snap(relay="open"), acknowledged=False).satisfied
    shown = check(trip, snap(relay="closed"), acknowledged=True)
    assert not shown.satisfied and shown.detail == "relay is closed, expected open"
    assert not check(trip, None, acknowledged=True).satisfied


def test_close_allowed_is_proved_by_the_acknowledgement_or_a_closed_relay() -> None:
    spec = parse_spec("relay_close_allowed", {})
    assert check(spec, snap(relay="closed"), acknowledged=False).satisfied
    assert not check(spec, snap(relay="open"), acknowledged=False).satisfied
    assert check(spec, snap(relay="open"), acknowledged=True).satisfied


def test_a_field_the_meter_never_reports_leaves_the_acknowledgement_as_proof() -> None:
    spec = parse_spec("protect_on", {})
    assert not check(spec, snap(), acknowledged=False).satisfied
    assert check(spec, snap(), acknowledged=True).satisfied
    assert not check(spec, snap(protected=False), acknowledged=True).satisfied


def test_abnormal_valve_is_not_closed() -> None:
    result = check(parse_spec("valve_close", {}), snap(valve="abnormal"), acknowledged=True)
    assert not result.satisfied and "abnormal" in result.detail


def test_prices_are_confirmed_by_acknowledgement_only() -> None:
    spec = parse_spec("write_prices", {"prices": {"flat": "1"}})
    assert not check(spec, snap(), acknowledged=False).satisfied
    assert check(spec, None, acknowledged=True).satisfied


def test_recharge_is_proved_by_the_purchase_count() -> None:
    spec = parse_spec("recharge", {"amount": "50", "purchase_count": 4})
    assert check(spec, snap(purchase_count=4), acknowledged=False).satisfied
    assert not check(spec, snap(purchase_count=3), acknowledged=True).satisfied


def test_money_shortfall_is_a_note_not_a_failure() -> None:
    assert "reconcile" in money_note(before=D(10), amount=D(50), after=D(20), tolerance=D("0.5"))
    assert "below" not in money_note(
        before=D(10), amount=D(50), after=D("59.80"), tolerance=D("0.5")
    )
    assert money_note(before=None, amount=D(50), after=D(1), tolerance=D(0)) == ""


# --- recharge plan -----------------------------------------------------------------------------


def test_unsent_push_takes_its_count_from_the_meter_now() -> None:
    decision = plan_recharge(assigned=4, meter_count=6, ever_sent=False)
    assert decision.step is RechargeStep.SEND and decision.purchase_count == 7
    assert "set to 7" in decision.detail


def test_sent_push_with_its_count_on_the_meter_is_confirmed_never_resent() -> None:
    decision = plan_recharge(assigned=7, meter_count=7, ever_sent=True)
    assert decision.step is RechargeStep.CONFIRM


def test_sent_push_not_on_the_meter_is_resent_with_the_same_count() -> None:
    decision = plan_recharge(assigned=7, meter_count=6, ever_sent=True)
    assert (decision.step, decision.purchase_count) == (RechargeStep.SEND, 7)


@pytest.mark.parametrize("meter_count", [5, 8])
def test_sent_push_with_the_counter_elsewhere_fails_for_reconciliation(meter_count: int) -> None:
    decision = plan_recharge(assigned=7, meter_count=meter_count, ever_sent=True)
    assert decision.step is RechargeStep.FAIL
    assert decision.detail.startswith("read-back disagrees")


def test_unknown_counter_means_wait() -> None:
    assert plan_recharge(assigned=7, meter_count=None, ever_sent=True).step is RechargeStep.WAIT


# --- retries, deadlines, supersede -------------------------------------------------------------


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(first_backoff_s=5, max_backoff_s=30)
    assert [policy.backoff(n).total_seconds() for n in range(1, 6)] == [5, 10, 20, 30, 30]


def test_retry_never_falls_after_the_deadline_and_stops_when_attempts_are_used() -> None:
    policy = RetryPolicy(first_backoff_s=60)
    deadline = T0 + timedelta(seconds=90)
    assert next_attempt_at(
        attempts=1, max_attempts=5, now=T0, deadline=deadline, policy=policy
    ) == T0 + timedelta(seconds=60)
    assert (
        next_attempt_at(attempts=2, max_attempts=5, now=T0, deadline=deadline, policy=policy)
        == deadline
    )
    assert (
        next_attempt_at(attempts=5, max_attempts=5, now=T0, deadline=deadline, policy=policy)
        is None
    )


def test_validity_window_is_fresh_and_capped_at_the_deadline() -> None:
    window = timedelta(seconds=120)
    assert validity_deadline(T0, window, T0 + timedelta(hours=1)) == T0 + window
    assert validity_deadline(T0, window, T0 + timedelta(seconds=30)) == T0 + timedelta(seconds=30)


def test_newer_command_supersedes_the_same_aspect_only() -> None:
    trip, close = parse_spec("relay_trip", {}), parse_spec("relay_close", {})
    assert supersedes(close, trip)
    assert not supersedes(parse_spec("protect_on", {}), trip)
    assert not supersedes(parse_spec("valve_close", {}), trip)


def test_limits_supersede_only_when_the_newer_covers_every_older_limit() -> None:
    both = parse_spec("write_limits", {"limits": {"alarm_1": "20", "alarm_2": "10"}})
    one = parse_spec("write_limits", {"limits": {"alarm_1": "30"}})
    assert supersedes(both, one)
    assert not supersedes(one, both)


def test_recharges_never_supersede_or_get_superseded() -> None:
    push = parse_spec("recharge", {"amount": "5", "purchase_count": 1})
    assert not supersedes(push, push)


def test_reasons_start_with_their_category() -> None:
    assert (
        deadline_passed("no answer after 2 attempts")
        == "deadline passed (last: no answer after 2 attempts)"
    )
    assert disagrees("relay is closed").startswith("read-back disagrees: ")
    assert disagrees("read-back disagrees: x") == "read-back disagrees: x"


def _take_back(**given: object) -> CommandSpec:
    return parse_spec("take_back", given)


def test_take_back_fixes_count_and_all_from_the_meter_before_its_first_send() -> None:
    decision = plan_take_back(
        spec=_take_back(all=True, take_back_count=1),
        meter_count=4,
        remaining_money=D("31.479"),
        ever_sent=False,
    )
    assert (decision.step, decision.amount, decision.take_back_count) == (
        RechargeStep.SEND,
        D("31.47"),  # never more than the meter holds
        5,
    )
    nothing = plan_take_back(
        spec=_take_back(all=True), meter_count=4, remaining_money=D("-2.00"), ever_sent=False
    )
    assert nothing.step is RechargeStep.CONFIRM and "nothing to take back" in nothing.detail
    went_back = plan_take_back(
        spec=_take_back(amount="5"), meter_count=1, remaining_money=None, ever_sent=False,
        confirmed=3,
    )  # fmt: skip
    assert went_back.step is RechargeStep.FAIL and "went back" in went_back.detail


@pytest.mark.parametrize(
    ("meter_count", "step"),
    [(7, RechargeStep.CONFIRM), (6, RechargeStep.SEND), (5, RechargeStep.FAIL),
     (8, RechargeStep.FAIL), (None, RechargeStep.WAIT)],
)  # fmt: skip
def test_a_sent_take_back_keeps_its_amount_and_count_and_trusts_the_counter(
    meter_count: int | None, step: RechargeStep
) -> None:
    spec = _take_back(all=True, amount="12.00", take_back_count=7)
    decision = plan_take_back(
        spec=spec, meter_count=meter_count, remaining_money=D("99.00"), ever_sent=True
    )
    assert (decision.step, decision.amount, decision.take_back_count) == (step, D("12.00"), 7)


def test_take_back_requests_are_the_same_whatever_the_platform_filled_in() -> None:
    asked = _take_back(all=True)
    fixed = _take_back(all=True, amount="80.00", take_back_count=3, account_id=9)
    assert asked.request_hash(1) == fixed.request_hash(1)
    assert _take_back(amount="5").request_hash(1) != _take_back(amount="6").request_hash(1)
    assert not supersedes(_take_back(amount="5"), _take_back(amount="6"))
    assert not supersedes(_take_back(amount="5"), parse_spec("recharge", {"amount": "1"}))
    for bad in ({}, {"all": "yes"}, {"amount": "0"}, {"amount": "1", "typo": 1}):
        with pytest.raises(ValidationError):
            _take_back(**bad)
