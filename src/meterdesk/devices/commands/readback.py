"""Read-back: does what the meter shows prove a command's desired state, and what should a
recharge attempt do given the meter's purchase counter? Pure, like ``model.py``.

- Relay, protect and valve commands are proved by the meter showing the state; "close allowed"
  only arms the relay (the tenant presses the button), so the meter's acknowledgement proves it
  unless the relay already shows closed. A field the meter does not report at all (``None`` in
  an otherwise good read) leaves the acknowledgement as the proof.
- Prices, limits and the clock cannot be read back through the port: the acknowledgement is the
  proof, and the log says so.
- A recharge is proved by the purchase counter alone (purchase count = N). Remaining money is
  compared too, but a shortfall is a note for the reconciliation report, never a reason to push
  again: the money is on the meter once the counter shows N.
- A take-back (退电) is proved by the meter's take-back counter alone, in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum

from meterdesk.devices.commands.model import ACKNOWLEDGED_ONLY, WANTED, CommandKind, CommandSpec
from meterdesk.devices.ports import Snapshot


@dataclass(frozen=True)
class Check:
    satisfied: bool
    detail: str  # what the meter showed, in words


def check(spec: CommandSpec, snapshot: Snapshot | None, *, acknowledged: bool) -> Check:
    """Does the meter show the desired state? ``acknowledged``: the meter accepted the command
    in this attempt (a reply without error)."""
    if spec.kind in ACKNOWLEDGED_ONLY:
        if acknowledged:
            return Check(True, "acknowledged by the meter (its read-back cannot show this)")
        return Check(False, "not yet written")
    if spec.kind is CommandKind.RECHARGE:
        return _check_recharge(spec, snapshot)
    if spec.kind is CommandKind.TAKE_BACK:  # its counter is not in a snapshot: take_back_attempt
        return Check(False, "a take-back is proved by the meter's take-back counter")
    name, value, words = WANTED[spec.kind]
    shown = None if snapshot is None else getattr(snapshot, name)
    if shown == value:
        return Check(True, f"meter shows {words}")
    if spec.kind is CommandKind.RELAY_CLOSE_ALLOWED and acknowledged:
        return Check(
            True, "close allowed acknowledged; supply returns when the tenant presses the button"
        )
    if shown is None:
        if acknowledged and snapshot is not None:
            return Check(True, f"acknowledged; the meter does not report its {name} state")
        return Check(False, f"the meter did not report its {name} state")
    return Check(False, f"{name} is {_show(shown)}, expected {_show(value)}")


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _check_recharge(spec: CommandSpec, snapshot: Snapshot | None) -> Check:
    count = None if snapshot is None else snapshot.purchase_count
    if count is None:
        return Check(False, "the meter did not report its purchase count")
    if count == spec.purchase_count:
        return Check(True, f"purchase count is {count}")
    return Check(False, f"purchase count is {count}, expected {spec.purchase_count}")


def money_note(
    *, before: Decimal | None, amount: Decimal, after: Decimal | None, tolerance: Decimal
) -> str:
    """Remaining money after an accepted push should be at least before + amount (less what the
    tenant used meanwhile). The purchase count is the proof; a shortfall is a note that the
    reconciliation report will show, never a reason to push again."""
    if before is None or after is None:
        return ""
    expected = before + amount - tolerance
    if after >= expected:
        return f"remaining money {after:f} (was {before:f})"
    return f"remaining money {after:f} is below the expected {before + amount:f}: reconcile"


class RechargeStep(StrEnum):
    SEND = "send"
    CONFIRM = "confirm"
    FAIL = "fail"
    WAIT = "wait"  # the meter did not tell its counter: try again later


@dataclass(frozen=True)
class RechargeDecision:
    step: RechargeStep
    purchase_count: int | None
    detail: str


def plan_recharge(
    *,
    assigned: int | None,
    meter_count: int | None,
    ever_sent: bool,
    confirmed: int | None = None,
) -> RechargeDecision:
    """Decide a recharge attempt from the meter's purchase counter, read just before sending.
    ``confirmed`` is the highest purchase confirmed on the meter's current device: a counter
    below it went back (a reset, or another device at the address), and money is not sent to
    it on the counter's word."""
    if meter_count is None:
        return RechargeDecision(
            RechargeStep.WAIT, assigned, "the meter did not report its purchase count"
        )
    if not ever_sent and confirmed is not None and meter_count < confirmed:
        return RechargeDecision(
            RechargeStep.FAIL,
            assigned,
            f"purchase count went back: the meter shows {meter_count} after purchase "
            f"{confirmed} was confirmed on it; record a replacement if it was reset or "
            "swapped, and reconcile before pushing again",
        )
    if not ever_sent:  # N is still provisional: fix it from the counter the meter shows now
        fixed = meter_count + 1
        note = (
            ""
            if fixed == assigned
            else f"purchase count set to {fixed} (meter shows {meter_count})"
        )
        return RechargeDecision(RechargeStep.SEND, fixed, note)
    assert assigned is not None  # a push that was sent always has its N
    if meter_count == assigned:
        return RechargeDecision(
            RechargeStep.CONFIRM, assigned, f"purchase count is {assigned}: the push took effect"
        )
    if meter_count == assigned - 1:
        return RechargeDecision(
            RechargeStep.SEND,
            assigned,
            f"meter shows {meter_count}: send purchase {assigned} again",
        )
    where = "behind" if meter_count < assigned else "past"
    return RechargeDecision(
        RechargeStep.FAIL,
        assigned,
        f"read-back disagrees: purchase count {meter_count} is {where} purchase {assigned}; "
        "reconcile before pushing again",
    )


@dataclass(frozen=True)
class TakeBackDecision:
    step: RechargeStep
    amount: Decimal | None  # what to take (fixed at the first send; "all" read just before it)
    take_back_count: int | None
    detail: str


def plan_take_back(
    *,
    spec: CommandSpec,
    meter_count: int | None,
    remaining_money: Decimal | None,
    ever_sent: bool,
    confirmed: int | None = None,
) -> TakeBackDecision:
    """Decide a take-back (退电) attempt from the meter's take-back counter (and, for "all", its
    remaining money), read just before sending — the recharge's rule on a counter of its own.

    Before the first send the amount and N are still the platform's guess: N becomes the
    counter + 1 and "all" becomes the remaining money (nothing to take: confirmed, nothing
    sent). After it both are fixed: N on the meter → confirmed (a lost reply), N − 1 → send the
    same again, anything else → failed. A counter below ``confirmed`` (the highest take-back
    confirmed on the current device) went back: nothing is sent on its word."""
    assigned, amount = spec.take_back_count, spec.amount
    if meter_count is None:
        return TakeBackDecision(
            RechargeStep.WAIT, amount, assigned, "the meter did not report its take-back count"
        )
    if not ever_sent:
        if confirmed is not None and meter_count < confirmed:
            return TakeBackDecision(
                RechargeStep.FAIL,
                amount,
                assigned,
                f"take-back count went back: the meter shows {meter_count} after take-back "
                f"{confirmed} was confirmed on it; record a replacement if it was reset or "
                "swapped, and reconcile before taking money back",
            )
        if spec.take_all:
            if remaining_money is None:
                return TakeBackDecision(
                    RechargeStep.WAIT,
                    None,
                    assigned,
                    "the meter did not report its remaining money",
                )
            amount = remaining_money.quantize(Decimal("0.01"), rounding=ROUND_FLOOR)
            if amount <= 0:
                return TakeBackDecision(
                    RechargeStep.CONFIRM,
                    None,
                    assigned,
                    f"nothing to take back: the meter holds {remaining_money:f}",
                )
        return TakeBackDecision(RechargeStep.SEND, amount, meter_count + 1, "")
    if meter_count == assigned:
        return TakeBackDecision(
            RechargeStep.CONFIRM,
            amount,
            assigned,
            f"take-back count is {assigned}: the take-back took effect",
        )
    assert assigned is not None  # a take-back that was sent always has its N
    if meter_count == assigned - 1:
        return TakeBackDecision(
            RechargeStep.SEND,
            amount,
            assigned,
            f"meter shows {meter_count}: send take-back {assigned} again",
        )
    where = "behind" if meter_count < assigned else "past"
    return TakeBackDecision(
        RechargeStep.FAIL,
        amount,
        assigned,
        f"read-back disagrees: take-back count {meter_count} is {where} take-back {assigned}; "
        "reconcile before taking money back again",
    )
