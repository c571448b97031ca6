"""The prepaid control policy: when to warn, cut and restore — pure, no I/O, no clock reads.

The control loop calls :func:`decide` with an account's policy, its control state, its balance
and the time, in the same transaction as the deduction, recharge or scheduler tick that changed
things; it stores the new state and turns the decisions into commands and messages (outbox).

Invariants (each proven by the state-machine test):
- Protect mode (保电) never cuts; turning it on restores a cut supply.
- A cut is decided once per fall: once supply is off (or the cut is pending), no further cut
  decision is made until supply was restored.
- A cut that falls in friendly hours (a window, a weekend, a site holiday) waits; it is decided
  when a tick after the window finds the balance still at or below the cut threshold.
- Restore is decided exactly once after the balance rises above the restore threshold while
  supply is off (or a pending cut is dropped, with no command, if the cut never happened).
- Each alarm level fires when the balance falls to its threshold, then repeats at most
  ``repeat_count`` more times at ``repeat_interval`` until a recharge lifts the balance above it.
- Emergency credit (应急用电) can be taken only at or below the cut threshold and only when none
  is outstanding; the next recharge repays it first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum


class Supply(StrEnum):
    ON = "on"
    OFF = "off"
    CUT_PENDING = "cut_pending"  # due, waiting for friendly hours to end


class CutAt(StrEnum):
    ZERO = "zero"  # cut when the balance reaches 0
    OVERDRAFT = "overdraft"  # cut when the allowed overdraft is used up


class RestoreMode(StrEnum):
    DIRECT = "direct"  # 直接合闸
    CLOSE_ALLOWED = "close_allowed"  # 允许合闸: the tenant presses the meter's button


class Cause(StrEnum):
    DEDUCTION = "deduction"
    RECHARGE = "recharge"
    TICK = "tick"
    POLICY_CHANGE = "policy_change"


@dataclass(frozen=True)
class AlarmLevel:
    level: int  # 1, 2, 3
    threshold_fen: int | None = None  # fires when balance ≤ this
    days_left: float | None = None  # or: fires when the forecast credit lasts ≤ this many days
    repeat_count: int = 0  # extra sends after the first (告警次数 − 1)
    repeat_interval: timedelta = timedelta(hours=24)
    channels: tuple[str, ...] = ("sms",)


@dataclass(frozen=True)
class Policy:
    alarms: tuple[AlarmLevel, ...]
    cut_at: CutAt = CutAt.ZERO
    overdraft_fen: int = 0
    protect: bool = False
    restore_threshold_fen: int = 0  # restore when the balance rises above this
    restore_mode: RestoreMode = RestoreMode.DIRECT
    emergency_credit_fen: int = 0  # 0: not offered

    @property
    def cut_threshold_fen(self) -> int:
        return -self.overdraft_fen if self.cut_at is CutAt.OVERDRAFT else 0


@dataclass(frozen=True)
class AlarmState:
    sent: int = 0  # how many times this level was sent since it was last re-armed
    last_sent_at: datetime | None = None


@dataclass(frozen=True)
class ControlState:
    supply: Supply = Supply.ON
    alarms: dict[int, AlarmState] = field(default_factory=dict)
    emergency_outstanding_fen: int = 0
    protect_sent: bool = False  # the meter was told it is protected


@dataclass(frozen=True)
class Situation:
    """What the policy sees: the balance net of arrears, the time, why we are asked, whether the
    time is inside friendly hours, and the credit forecast (days left) when known."""

    balance_fen: int
    at: datetime
    cause: Cause
    friendly: bool = False
    days_left: float | None = None


class Action(StrEnum):
    ALARM = "alarm"
    CUT = "cut"
    RESTORE = "restore"
    CUT_DEFERRED = "cut_deferred"
    CUT_CANCELLED = "cut_cancelled"
    PROTECT_ON = "protect_on"
    PROTECT_OFF = "protect_off"


@dataclass(frozen=True)
class Decision:
    action: Action
    level: int | None = None  # alarm level
    repeat: int = 0  # 0 for the first send of a level, 1.. for repeats
    restore_mode: RestoreMode | None = None


def decide(
    policy: Policy, state: ControlState, now: Situation
) -> tuple[ControlState, list[Decision]]:
    decisions: list[Decision] = []
    state = _protect(policy, state, decisions)
    state = _alarms(policy, state, now, decisions)
    state = _supply(policy, state, now, decisions)
    return state, decisions


def _protect(policy: Policy, state: ControlState, out: list[Decision]) -> ControlState:
    if policy.protect and not state.protect_sent:
        out.append(Decision(Action.PROTECT_ON))
        return replace(state, protect_sent=True)
    if not policy.protect and state.protect_sent:
        out.append(Decision(Action.PROTECT_OFF))
        return replace(state, protect_sent=False)
    return state


def _below(level: AlarmLevel, now: Situation) -> bool:
    if level.threshold_fen is not None and now.balance_fen <= level.threshold_fen:
        return True
    return (
        level.days_left is not None
        and now.days_left is not None
        and now.days_left <= level.days_left
    )


def _alarms(
    policy: Policy, state: ControlState, now: Situation, out: list[Decision]
) -> ControlState:
    alarms = dict(state.alarms)
    for level in policy.alarms:
        current = alarms.get(level.level, AlarmState())
        if not _below(level, now):
            if now.cause is Cause.RECHARGE and current.sent:
                alarms[level.level] = AlarmState()  # a recharge re-arms the level
            continue
        if _due(level, current, now.at):
            out.append(Decision(Action.ALARM, level=level.level, repeat=current.sent))
            alarms[level.level] = AlarmState(current.sent + 1, now.at)
    return replace(state, alarms=alarms)


def _due(level: AlarmLevel, current: AlarmState, at: datetime) -> bool:
    if current.sent == 0:
        return True
    if current.sent > level.repeat_count or current.last_sent_at is None:
        return False
    return at - current.last_sent_at >= level.repeat_interval


def _supply(
    policy: Policy, state: ControlState, now: Situation, out: list[Decision]
) -> ControlState:
    at_or_below = now.balance_fen <= policy.cut_threshold_fen
    if policy.protect:
        return _restore(policy, state, out) if state.supply is not Supply.ON else state
    if state.supply is Supply.ON and at_or_below:
        if now.friendly:
            out.append(Decision(Action.CUT_DEFERRED))
            return replace(state, supply=Supply.CUT_PENDING)
        out.append(Decision(Action.CUT))
        return replace(state, supply=Supply.OFF)
    if state.supply is Supply.CUT_PENDING:
        if not at_or_below:
            out.append(Decision(Action.CUT_CANCELLED))
            return replace(state, supply=Supply.ON)
        if not now.friendly:
            out.append(Decision(Action.CUT))
            return replace(state, supply=Supply.OFF)
        return state
    if state.supply is Supply.OFF and now.balance_fen > max(
        policy.restore_threshold_fen, policy.cut_threshold_fen
    ):
        return _restore(policy, state, out)
    return state


def _restore(policy: Policy, state: ControlState, out: list[Decision]) -> ControlState:
    if state.supply is Supply.OFF:
        out.append(Decision(Action.RESTORE, restore_mode=policy.restore_mode))
    elif state.supply is Supply.CUT_PENDING:
        out.append(Decision(Action.CUT_CANCELLED))
    return replace(state, supply=Supply.ON)


def may_take_emergency_credit(policy: Policy, state: ControlState, balance_fen: int) -> str | None:
    """None when the tenant may take emergency credit now, else the reason why not."""
    if policy.emergency_credit_fen <= 0:
        return "this account is not offered emergency credit"
    if state.emergency_outstanding_fen > 0:
        return "emergency credit already taken; the next recharge repays it first"
    if balance_fen > policy.cut_threshold_fen + policy.emergency_credit_fen:
        return "emergency credit is only available when the credit is (nearly) used up"
    return None


def emergency_repayment(state: ControlState, recharge_fen: int) -> int:
    """How much of a recharge repays outstanding emergency credit (first, in full if it can)."""
    return min(state.emergency_outstanding_fen, recharge_fen)


FriendlyRule = Callable[[datetime], bool]
