"""The prepaid policy: known cases, and a hypothesis state machine that drives an account through
deductions, recharges, ticks, friendly hours and protect changes and checks the invariants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from meterdesk.billing.policy import (
    Action,
    AlarmLevel,
    Cause,
    ControlState,
    CutAt,
    Policy,
    RestoreMode,
    Situation,
    Supply,
    decide,
    emergency_repayment,
    may_take_emergency_credit,
)

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
LEVELS = (
    AlarmLevel(1, threshold_fen=2000, repeat_count=2, repeat_interval=timedelta(hours=6)),
    AlarmLevel(2, threshold_fen=1000, repeat_count=1, repeat_interval=timedelta(hours=6)),
    AlarmLevel(3, threshold_fen=500, repeat_count=0, channels=("sms", "voice")),
)


def actions(decisions: list[object]) -> list[str]:
    return [d.action.value for d in decisions]  # type: ignore[attr-defined]


def test_falling_balance_fires_each_level_once_then_cuts_at_zero() -> None:
    policy, state = Policy(alarms=LEVELS), ControlState()
    seen = []
    for balance in (2500, 1900, 1500, 900, 400, 0):
        state, decisions = decide(policy, state, Situation(balance, T0, Cause.DEDUCTION))
        seen.append(actions(decisions))
    assert seen == [[], ["alarm"], [], ["alarm"], ["alarm"], ["cut"]]
    assert state.supply is Supply.OFF


def test_cut_waits_for_friendly_hours_then_happens_on_the_next_tick() -> None:
    policy = Policy(alarms=())
    state, decisions = decide(
        policy, ControlState(), Situation(-10, T0, Cause.DEDUCTION, friendly=True)
    )
    assert actions(decisions) == ["cut_deferred"] and state.supply is Supply.CUT_PENDING
    state, decisions = decide(
        policy, state, Situation(-10, T0 + timedelta(hours=1), Cause.TICK, friendly=True)
    )
    assert decisions == []
    state, decisions = decide(policy, state, Situation(-30, T0 + timedelta(hours=9), Cause.TICK))
    assert actions(decisions) == ["cut"] and state.supply is Supply.OFF


def test_recharge_during_friendly_hours_cancels_the_pending_cut_without_a_command() -> None:
    policy = Policy(alarms=())
    state, _ = decide(policy, ControlState(), Situation(-10, T0, Cause.DEDUCTION, friendly=True))
    state, decisions = decide(policy, state, Situation(5000, T0, Cause.RECHARGE, friendly=True))
    assert actions(decisions) == ["cut_cancelled"] and state.supply is Supply.ON


def test_overdraft_policy_cuts_only_when_the_overdraft_is_used_up() -> None:
    policy = Policy(alarms=(), cut_at=CutAt.OVERDRAFT, overdraft_fen=5000)
    state, decisions = decide(policy, ControlState(), Situation(-4999, T0, Cause.DEDUCTION))
    assert decisions == []
    state, decisions = decide(policy, state, Situation(-5000, T0, Cause.DEDUCTION))
    assert actions(decisions) == ["cut"]


def test_restore_needs_the_balance_above_the_restore_threshold() -> None:
    policy = Policy(alarms=(), restore_threshold_fen=1000, restore_mode=RestoreMode.CLOSE_ALLOWED)
    state, _ = decide(policy, ControlState(), Situation(0, T0, Cause.DEDUCTION))
    state, decisions = decide(policy, state, Situation(800, T0, Cause.RECHARGE))
    assert decisions == [] and state.supply is Supply.OFF
    state, decisions = decide(policy, state, Situation(1200, T0, Cause.RECHARGE))
    assert [(d.action, d.restore_mode) for d in decisions] == [
        (Action.RESTORE, RestoreMode.CLOSE_ALLOWED)
    ]


def test_protect_restores_a_cut_supply_and_never_cuts() -> None:
    state, _ = decide(Policy(alarms=()), ControlState(), Situation(-100, T0, Cause.DEDUCTION))
    protected = Policy(alarms=(), protect=True)
    state, decisions = decide(protected, state, Situation(-100, T0, Cause.POLICY_CHANGE))
    assert actions(decisions) == ["protect_on", "restore"]
    state, decisions = decide(protected, state, Situation(-900, T0, Cause.DEDUCTION))
    assert decisions == []


def test_alarm_repeats_at_its_interval_up_to_its_count_until_a_recharge_rearms_it() -> None:
    policy = Policy(
        alarms=(
            AlarmLevel(1, threshold_fen=2000, repeat_count=2, repeat_interval=timedelta(hours=6)),
        )
    )
    state, sends = ControlState(), 0
    for hour in range(0, 48, 3):
        state, decisions = decide(
            policy, state, Situation(1500, T0 + timedelta(hours=hour), Cause.TICK)
        )
        sends += len(decisions)
    assert sends == 3
    state, _ = decide(policy, state, Situation(3000, T0 + timedelta(hours=49), Cause.RECHARGE))
    state, decisions = decide(
        policy, state, Situation(1900, T0 + timedelta(hours=50), Cause.DEDUCTION)
    )
    assert actions(decisions) == ["alarm"]


def test_days_of_credit_level_fires_on_the_forecast() -> None:
    policy = Policy(alarms=(AlarmLevel(1, days_left=3.0),))
    _, decisions = decide(policy, ControlState(), Situation(50_000, T0, Cause.TICK, days_left=2.5))
    assert actions(decisions) == ["alarm"]


def test_emergency_credit_once_until_repaid() -> None:
    policy = Policy(alarms=(), emergency_credit_fen=2000)
    assert may_take_emergency_credit(policy, ControlState(), 100) is None
    taken = ControlState(emergency_outstanding_fen=2000)
    assert "already taken" in (may_take_emergency_credit(policy, taken, 0) or "")
    assert emergency_repayment(taken, 5000) == 2000
    assert emergency_repayment(taken, 500) == 500
    assert "only available" in (may_take_emergency_credit(policy, ControlState(), 90_000) or "")


class AccountMachine(RuleBasedStateMachine):
    """Random walks of one account; the invariants are the policy's promises."""

    def __init__(self) -> None:
        super().__init__()
        self.protect = False
        self.state = ControlState()
        self.balance = 3000
        self.at = T0
        self.friendly = False
        self.cuts_since_restore = 0
        self.cut_while_protected = False
        self.sends: dict[int, int] = {}
        self.restore_pending = False
        self.restores = 0

    def policy(self) -> Policy:
        return Policy(alarms=LEVELS, protect=self.protect, restore_threshold_fen=0)

    def step(self, cause: Cause) -> None:
        self.state, decisions = decide(
            self.policy(), self.state, Situation(self.balance, self.at, cause, self.friendly)
        )
        for decision in decisions:
            if decision.action is Action.CUT:
                self.cuts_since_restore += 1
                self.cut_while_protected |= self.protect
            elif decision.action is Action.RESTORE:
                self.cuts_since_restore = 0
                self.restores += 1
            elif decision.action is Action.ALARM:
                assert decision.level is not None
                self.sends[decision.level] = self.sends.get(decision.level, 0) + 1

    @rule(amount=st.integers(1, 1500))
    def deduct(self, amount: int) -> None:
        self.balance -= amount
        self.at += timedelta(minutes=15)
        self.step(Cause.DEDUCTION)

    @rule(amount=st.integers(1, 6000))
    def recharge(self, amount: int) -> None:
        self.balance += amount
        was_off = self.state.supply is Supply.OFF
        restores_before = self.restores
        self.sends = {
            level: n
            for level, n in self.sends.items()
            if self.balance <= LEVELS[level - 1].threshold_fen
        }
        self.step(Cause.RECHARGE)
        if was_off and self.balance > 0 and not self.protect:
            assert self.restores == restores_before + 1, (
                "a sufficient recharge restores exactly once"
            )

    @rule(hours=st.integers(1, 30), friendly=st.booleans())
    def tick(self, hours: int, friendly: bool) -> None:
        self.at += timedelta(hours=hours)
        self.friendly = friendly
        self.step(Cause.TICK)

    @rule()
    def toggle_protect(self) -> None:
        self.protect = not self.protect
        self.step(Cause.POLICY_CHANGE)

    @invariant()
    def never_cut_in_protect_mode(self) -> None:
        assert not self.cut_while_protected

    @invariant()
    def never_cut_twice(self) -> None:
        assert self.cuts_since_restore <= 1

    @invariant()
    def alarm_sends_bounded_per_crossing(self) -> None:
        for level in LEVELS:
            assert self.sends.get(level.level, 0) <= level.repeat_count + 1

    @invariant()
    def supply_off_only_when_due(self) -> None:
        if self.state.supply is Supply.OFF:
            assert not self.protect


TestAccountMachine = AccountMachine.TestCase
TestAccountMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
