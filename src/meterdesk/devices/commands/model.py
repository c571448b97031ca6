"""Device commands as desired states: what a command asks for, how read-back proves it, when to
retry, and which command makes which obsolete. Pure: no database, no sockets, no clock reads.
Validating a command's parameters is :mod:`~meterdesk.devices.commands.params`.

Invariants:
- A command is a *desired state* of one meter with a deadline, not a message. It is confirmed
  only when the meter's read-back shows that state (relay open/closed, protect on/off, valve
  open/closed, purchase count = N); where the meter cannot show it (prices, limits, clock, the
  "close allowed" arm, a field the meter does not report), the meter's acknowledgement is the
  proof, and the log says so.
- Statuses move only forward: pending → sent → confirmed | failed | cancelled (pending may go
  straight to confirmed, failed or cancelled). A finished command never changes again.
- Every failure has a reason that starts with one of: "refused by meter", "no answer",
  "deadline passed", "read-back disagrees".
- Every attempt carries a fresh validity window: the DL/T 645 1C deadline is
  ``min(now + window, command deadline)``; a retry never reuses an old window and no window
  reaches past the command's deadline. Retries back off exponentially; the last check is at the
  deadline itself.
- For one meter and one aspect (relay, protect, valve, prices, clock; limits when the newer
  write covers every limit of the older) the newest command wins: an older unfinished one is
  cancelled as "superseded by #id". Recharges are never superseded: each is its own purchase.
- A recharge push carries a purchase count N. N is provisional until the first send; just
  before the first send it becomes the meter's counter + 1 and from then on never changes. A
  push that may have reached the meter is only ever re-sent with the same N (the meter refuses
  a replay), and before every re-send the meter's counter is read: N already there means the
  push took effect and is confirmed, never sent again.
- A take-back (退电) follows the same rule with the meter's take-back counter (a counter of its
  own). Its amount — given, or "all": the remaining money read just before the first send — and
  its count are fixed at the first send and never change after it. Money commands of one meter
  (recharges and take-backs) are never superseded and reach the meter in creation order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from meterdesk.devices.ports import MeterAddress, RelayAction, ValveAction
from meterdesk.shared.errors import ValidationError

REASON_LIMIT = 300


class CommandKind(StrEnum):
    RELAY_TRIP = "relay_trip"  # 拉闸
    RELAY_CLOSE_ALLOWED = "relay_close_allowed"  # 允许合闸
    RELAY_CLOSE = "relay_close"  # 直接合闸
    PROTECT_ON = "protect_on"  # 保电
    PROTECT_OFF = "protect_off"
    VALVE_OPEN = "valve_open"  # 开阀
    VALVE_CLOSE = "valve_close"  # 关阀
    WRITE_PRICES = "write_prices"  # F-TAR-PUSH
    WRITE_LIMITS = "write_limits"  # alarm 1/2, overdraft, hoarding, close-allowed amount
    RECHARGE = "recharge"  # money to a meter-billing meter (F-MODE)
    TAKE_BACK = "take_back"  # 退电: money back off a meter-billing meter (F-REFUND)
    CLOCK_SYNC = "clock_sync"


class Aspect(StrEnum):
    RELAY = "relay"
    PROTECT = "protect"
    VALVE = "valve"
    PRICES = "prices"
    LIMITS = "limits"
    MONEY = "money"
    CLOCK = "clock"


class CommandStatus(StrEnum):
    PENDING = "pending"  # 待发送
    SENT = "sent"  # 已下发
    CONFIRMED = "confirmed"  # 已确认
    FAILED = "failed"  # 失败
    CANCELLED = "cancelled"


OPEN_STATUSES = (CommandStatus.PENDING.value, CommandStatus.SENT.value)

ASPECTS: Mapping[CommandKind, Aspect] = {
    CommandKind.RELAY_TRIP: Aspect.RELAY,
    CommandKind.RELAY_CLOSE_ALLOWED: Aspect.RELAY,
    CommandKind.RELAY_CLOSE: Aspect.RELAY,
    CommandKind.PROTECT_ON: Aspect.PROTECT,
    CommandKind.PROTECT_OFF: Aspect.PROTECT,
    CommandKind.VALVE_OPEN: Aspect.VALVE,
    CommandKind.VALVE_CLOSE: Aspect.VALVE,
    CommandKind.WRITE_PRICES: Aspect.PRICES,
    CommandKind.WRITE_LIMITS: Aspect.LIMITS,
    CommandKind.RECHARGE: Aspect.MONEY,
    CommandKind.TAKE_BACK: Aspect.MONEY,
    CommandKind.CLOCK_SYNC: Aspect.CLOCK,
}

RELAY_ACTIONS: Mapping[CommandKind, RelayAction] = {
    CommandKind.RELAY_TRIP: RelayAction.TRIP,
    CommandKind.RELAY_CLOSE_ALLOWED: RelayAction.CLOSE_ALLOWED,
    CommandKind.RELAY_CLOSE: RelayAction.CLOSE,
    CommandKind.PROTECT_ON: RelayAction.PROTECT_ON,
    CommandKind.PROTECT_OFF: RelayAction.PROTECT_OFF,
}
VALVE_ACTIONS: Mapping[CommandKind, ValveAction] = {
    CommandKind.VALVE_OPEN: ValveAction.OPEN,
    CommandKind.VALVE_CLOSE: ValveAction.CLOSE,
}
# What the read-back must show: (Snapshot field, value, words for the log).
WANTED: Mapping[CommandKind, tuple[str, object, str]] = {
    CommandKind.RELAY_TRIP: ("relay", "open", "relay open"),
    CommandKind.RELAY_CLOSE: ("relay", "closed", "relay closed"),
    CommandKind.RELAY_CLOSE_ALLOWED: ("relay", "closed", "relay closed or close allowed"),
    CommandKind.PROTECT_ON: ("protected", True, "protect on"),
    CommandKind.PROTECT_OFF: ("protected", False, "protect off"),
    CommandKind.VALVE_OPEN: ("valve", "open", "valve open"),
    CommandKind.VALVE_CLOSE: ("valve", "closed", "valve closed"),
}
# Kinds whose effect the port's Snapshot cannot show: the acknowledgement is the proof.
ACKNOWLEDGED_ONLY = frozenset(
    {CommandKind.WRITE_PRICES, CommandKind.WRITE_LIMITS, CommandKind.CLOCK_SYNC}
)
# Money commands carry their count: each is its own step on the meter, done in order.
MONEY_KINDS = (CommandKind.RECHARGE, CommandKind.TAKE_BACK)
DEFAULT_DEADLINE_S: Mapping[CommandKind, int] = dict.fromkeys(MONEY_KINDS, 86_400)
DEFAULT_MAX_ATTEMPTS: Mapping[CommandKind, int] = dict.fromkeys(MONEY_KINDS, 60)
FALLBACK_DEADLINE_S = 900
FALLBACK_MAX_ATTEMPTS = 8
MIN_DEADLINE_S, MAX_DEADLINE_S = 10, 7 * 86_400


def parse_kind(value: object) -> CommandKind:
    if isinstance(value, CommandKind):
        return value
    try:
        return CommandKind(str(value))
    except ValueError:
        names = ", ".join(kind.value for kind in CommandKind)
        raise ValidationError(f"kind: {value!r} is not one of {names}") from None


@dataclass(frozen=True)
class CommandSpec:
    """One command's kind and validated parameters."""

    kind: CommandKind
    prices: Mapping[str, Decimal] | None = None  # write_prices: slot → CNY per unit
    limits: Mapping[str, Decimal] | None = None  # write_limits: name → CNY
    amount: Decimal | None = None  # recharge, take-back: CNY, whole fen
    purchase_count: int | None = None  # recharge: N (assigned by the platform)
    transfer_id: int | None = None  # recharge: the ledger transfer it carries to the meter
    # take-back: "all" the meter holds (the amount is fixed from a read before the first send)
    take_all: bool = False
    take_back_count: int | None = None  # take-back: N of the meter's take-back counter
    # take-back: the open meter-billing account whose money it takes back (None: a clear on
    # closing or of a meter without one — such money is nobody's to refund again)
    account_id: int | None = None

    @property
    def aspect(self) -> Aspect:
        return ASPECTS[self.kind]

    def to_params(self) -> dict[str, object]:
        """The JSON form stored in ``commands.params`` (decimals as strings)."""
        params: dict[str, object] = {}
        if self.prices is not None:
            params["prices"] = {k: f"{v:f}" for k, v in self.prices.items()}
        if self.limits is not None:
            params["limits"] = {k: f"{v:f}" for k, v in self.limits.items()}
        if self.amount is not None:
            params["amount"] = f"{self.amount:f}"
        if self.purchase_count is not None:
            params["purchase_count"] = self.purchase_count
        if self.transfer_id is not None:
            params["transfer_id"] = self.transfer_id
        if self.take_all:
            params["all"] = True
        if self.take_back_count is not None:
            params["take_back_count"] = self.take_back_count
        if self.account_id is not None:
            params["account_id"] = self.account_id
        return params

    def request_hash(self, meter_id: int) -> str:
        """What makes two requests "the same" for idempotency: meter, kind and what the caller
        asked for (not the counts, the account or an "all" amount, which the platform fills
        in: a replay after they changed is still the same request)."""
        assigned = {"purchase_count", "take_back_count", "account_id"}
        if self.take_all:
            assigned.add("amount")
        asked = {k: v for k, v in self.to_params().items() if k not in assigned}
        text = json.dumps([meter_id, self.kind.value, asked], sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def describe(self) -> str:
        """The desired state in words, for the log and the screens."""
        if self.kind in WANTED:
            return WANTED[self.kind][2]
        if self.kind is CommandKind.RECHARGE:
            return f"purchase {self.purchase_count} of {self.amount} accepted"
        if self.kind is CommandKind.TAKE_BACK:
            what = "all the remaining money" if self.amount is None else f"{self.amount}"
            return f"take-back {self.take_back_count or '?'} of {what} accepted"
        if self.kind is CommandKind.WRITE_PRICES:
            return "prices " + _pairs(self.prices or {})
        if self.kind is CommandKind.WRITE_LIMITS:
            return "limits " + _pairs(self.limits or {})
        return "clock set to platform time"


def _pairs(values: Mapping[str, Decimal]) -> str:
    return ", ".join(f"{k}={v:f}" for k, v in values.items())


# --- retries, deadlines, supersede -------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    first_backoff_s: float = 5.0
    max_backoff_s: float = 300.0

    def backoff(self, attempt: int) -> timedelta:
        """Wait after failed attempt ``attempt`` (1-based): first, 2×first, 4×first, … capped."""
        seconds = self.first_backoff_s * 2 ** max(0, attempt - 1)
        return timedelta(seconds=min(seconds, self.max_backoff_s))


def next_attempt_at(
    *, attempts: int, max_attempts: int, now: datetime, deadline: datetime, policy: RetryPolicy
) -> datetime | None:
    """When to try again, or None when the attempts are used up. A retry that would fall after
    the deadline becomes one last read-back at the deadline."""
    if attempts >= max_attempts:
        return None
    return min(now + policy.backoff(attempts), deadline)


def validity_deadline(now: datetime, window: timedelta, deadline: datetime) -> datetime:
    """The 1C validity deadline of one attempt: fresh, and never past the command's deadline."""
    return min(now + window, deadline)


def supersedes(newer: CommandSpec, older: CommandSpec) -> bool:
    """Money commands (recharges, take-backs) never: each is its own step on the meter."""
    if Aspect.MONEY in (newer.aspect, older.aspect) or newer.aspect is not older.aspect:
        return False
    if newer.aspect is Aspect.LIMITS:
        return set(older.limits or {}) <= set(newer.limits or {})
    return True


REFUSED = "refused by meter: "


def refused(text: str) -> str:
    return clip(f"{REFUSED}{text}")


def was_refused(command: Command) -> bool:
    """Failed because the meter said no (a push refused so is not on the meter: before it
    failed, the counter showed the purchase was not there)."""
    return command.status is CommandStatus.FAILED and (command.reason or "").startswith(REFUSED)


def no_answer(attempts: int) -> str:
    return f"no answer after {attempts} attempt{'s' if attempts != 1 else ''}"


def deadline_passed(last: str | None) -> str:
    return clip("deadline passed" + (f" (last: {last})" if last else ""))


def disagrees(detail: str) -> str:
    return clip(
        detail if detail.startswith("read-back disagrees") else f"read-back disagrees: {detail}"
    )


def clip(text: str) -> str:
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"


@dataclass(frozen=True)
class Command:
    """A stored command as the executor and the service see it."""

    id: int
    organisation_id: int
    meter_id: int
    spec: CommandSpec
    status: CommandStatus
    reason: str | None
    attempts: int
    max_attempts: int
    next_attempt_at: datetime
    deadline_at: datetime
    idempotency_key: str
    created_by: str
    created_at: datetime
    request_hash: str = ""
    sent_at: datetime | None = None
    finished_at: datetime | None = None
    context: Mapping[str, object] = field(default_factory=dict)

    @property
    def is_open(self) -> bool:
        return self.status.value in OPEN_STATUSES


def superseded_by(command: Command, others: Iterable[Command]) -> int | None:
    """The newest open command of the same meter that replaces this one, if any. Also applied
    by the executor, for rows written without :func:`service.send_command` (the control loop)."""
    newer = [
        other.id
        for other in others
        if other.meter_id == command.meter_id
        and other.id > command.id
        and other.is_open
        and supersedes(other.spec, command.spec)
    ]
    return max(newer, default=None)


@dataclass(frozen=True)
class CommandTarget:
    """Where a command goes: what ``driver_for`` receives to pick the meter's driver."""

    meter: MeterAddress
    bus_id: int | None
    number: str  # the operator's meter number, for messages
    transport: str | None = None  # the bus's: tcp | serial | mqtt (None: on no bus)
