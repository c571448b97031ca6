"""Notifications, pure: which events exist, how urgent each is, who hears about it, when a
message may go (quiet hours), when a failed one is tried again (backoff), and which messages
count as "the same" (dedupe keys).

Invariants:
- An event kind has exactly one audience and one default urgency. A caller may raise a message's
  urgency (the last alarm level of a plan with fewer than three levels), never lower it: an
  urgent event stays urgent. Urgent messages go at once; normal ones wait for the end of the
  organisation's quiet hours.
- Quiet hours are wall-clock times in the site's IANA zone. Whether an instant is quiet, and when
  the window ends, is computed in that zone on that local date (:func:`local_to_utc`), so a
  window that spans a daylight-saving change lasts one hour less or more in real time but still
  ends at the wall time the organisation chose. A window with ``start == end`` is empty.
- The dedupe key is a function of (organisation, event kind, the caller's event key, recipient,
  channel) only: the same event for the same recipient and channel is queued once, whatever
  the caller retries. Anything else (params, language, time) never changes the key.
- The base retry delay grows with the attempt number and is capped; a ±10 % jitter derived from
  the message id keeps it reproducible in tests and still spreads a burst of failures.
- Money in messages is shown with two places; nothing here does arithmetic on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from meterdesk.shared.errors import ValidationError
from meterdesk.shared.time import local_to_utc


class Channel(StrEnum):
    SMS = "sms"
    VOICE = "voice"
    EMAIL = "email"
    WECHAT = "wechat"  # 公众号模板消息: the official account
    WECHAT_MINI = "wechat_mini"  # 小程序订阅消息: the mini program, its own openid
    PUSH = "push"
    WEBHOOK = "webhook"
    LOG = "log"


#: Channels that reach a person; a caller's ``channels`` choice restricts these only.
PERSON_CHANNELS = frozenset(
    {Channel.SMS, Channel.VOICE, Channel.EMAIL, Channel.WECHAT, Channel.WECHAT_MINI, Channel.PUSH}
)
#: Channels that feed systems (an integration, the demo's log): every subscribed event goes there.
SYSTEM_CHANNELS = frozenset({Channel.WEBHOOK, Channel.LOG})

#: Which customer column holds the address for a person channel (push targets the customer id).
ADDRESS_FIELD = {
    Channel.SMS: "phone",
    Channel.VOICE: "phone",
    Channel.EMAIL: "email",
    Channel.WECHAT: "wechat_openid",
    # WeChat gives each app its own openid for one person: the official account's cannot reach
    # the tenant through the mini program.
    Channel.WECHAT_MINI: "wechat_mini_openid",
    Channel.PUSH: "id",
}


class Urgency(StrEnum):
    URGENT = "urgent"
    NORMAL = "normal"


class Audience(StrEnum):
    CUSTOMER = "customer"
    OPERATORS = "operators"


class Status(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"  # its system notice was cancelled before it went out (final)


class EventKind(StrEnum):
    ALARM_LEVEL_1 = "alarm_level_1"  # 余额告警 一级 (an amount, or "days of credit left")
    ALARM_LEVEL_2 = "alarm_level_2"
    ALARM_LEVEL_3 = "alarm_level_3"
    SUPPLY_CUT = "supply_cut"  # 拉闸 / 关阀
    SUPPLY_RESTORED = "supply_restored"  # 合闸 / 开阀
    RECHARGE_CREDITED = "recharge_credited"  # 充值
    REFUND = "refund"  # 退费
    EMERGENCY_CREDIT_TAKEN = "emergency_credit_taken"  # 应急用电
    COMMAND_FAILED = "command_failed"
    METER_OFFLINE = "meter_offline"
    GATEWAY_OFFLINE = "gateway_offline"
    METER_MONEY_DIFFERS = "meter_money_differs"  # 表端计费: the meter's money ≠ the platform's
    CHANNEL_TEST = "channel_test"  # 测试消息: an operator checks that a channel delivers
    SYSTEM_NOTICE = "system_notice"  # 系统通知 / 公告: an operator tells the tenants of a scope
    DEDUCTION_SUMMARY = "deduction_summary"  # 扣费通知: a day's or month's use, cost, balance


@dataclass(frozen=True)
class EventSpec:
    template: str
    urgency: Urgency
    audience: Audience


_U, _N = Urgency.URGENT, Urgency.NORMAL
_C, _O = Audience.CUSTOMER, Audience.OPERATORS

# Why these urgencies: level 1/2 alarms and a refund receipt can wait until morning; a level 3
# alarm means the supply is about to go, a cut or restore changes the tenant's evening, and a
# recharge or emergency credit answers something the tenant just did, so they go at once. For
# operators, a failed relay command or a whole gateway lost needs someone now; one meter lost
# does not.
EVENTS: dict[EventKind, EventSpec] = {
    EventKind.ALARM_LEVEL_1: EventSpec("balance_alarm", _N, _C),
    EventKind.ALARM_LEVEL_2: EventSpec("balance_alarm", _N, _C),
    EventKind.ALARM_LEVEL_3: EventSpec("balance_alarm", _U, _C),
    EventKind.SUPPLY_CUT: EventSpec("supply_cut", _U, _C),
    EventKind.SUPPLY_RESTORED: EventSpec("supply_restored", _U, _C),
    EventKind.RECHARGE_CREDITED: EventSpec("recharge_credited", _U, _C),
    EventKind.REFUND: EventSpec("refund", _N, _C),
    EventKind.EMERGENCY_CREDIT_TAKEN: EventSpec("emergency_credit_taken", _U, _C),
    EventKind.COMMAND_FAILED: EventSpec("command_failed", _U, _O),
    EventKind.METER_OFFLINE: EventSpec("meter_offline", _N, _O),
    EventKind.GATEWAY_OFFLINE: EventSpec("gateway_offline", _U, _O),
    # A meter that bills itself disagrees with the ledger: someone must look, not this minute.
    EventKind.METER_MONEY_DIFFERS: EventSpec("meter_money_differs", _N, _O),
    # Sent at once, quiet hours or not: the operator is waiting for it.
    EventKind.CHANNEL_TEST: EventSpec("channel_test", _U, _O),
    # "电价调整通知" can wait for the morning; the operator marks "停水 now" urgent (urgency_for).
    EventKind.SYSTEM_NOTICE: EventSpec("system_notice", _N, _C),
    # A receipt for yesterday or last month: it can wait for the morning.
    EventKind.DEDUCTION_SUMMARY: EventSpec("deduction_summary", _N, _C),
}

#: The events a channel can subscribe to: a test message goes to the one address it is sent to.
SUBSCRIBABLE_EVENTS = tuple(kind for kind in EventKind if kind is not EventKind.CHANNEL_TEST)

#: Languages with a full template set; the first is the default.
LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGE = LANGUAGES[0]


def event_kind(value: str) -> EventKind:
    try:
        return EventKind(value)
    except ValueError:
        known = ", ".join(kind.value for kind in EventKind)
        raise ValidationError(f"unknown notification event {value!r} (known: {known})") from None


def channel(value: str) -> Channel:
    try:
        return Channel(value)
    except ValueError:
        known = ", ".join(item.value for item in Channel)
        raise ValidationError(f"unknown channel {value!r} (known: {known})") from None


def status(value: str) -> Status:
    try:
        return Status(value)
    except ValueError:
        known = ", ".join(item.value for item in Status)
        raise ValidationError(f"unknown status {value!r} (known: {known})") from None


def language(value: str | None) -> str:
    if value is None:
        return DEFAULT_LANGUAGE
    if value not in LANGUAGES:
        raise ValidationError(f"unsupported language {value!r} (use one of {', '.join(LANGUAGES)})")
    return value


def urgency_of(kind: EventKind) -> Urgency:
    """The event's default urgency."""
    return EVENTS[kind].urgency


def urgency_for(kind: EventKind, at_least: Urgency | str | None = None) -> Urgency:
    """A message's urgency: its event's, raised to ``at_least`` when that is more urgent. A
    caller can hurry a normal event (the last warning of a short alarm plan, which a cut follows)
    but never make an urgent one wait for the morning."""
    if at_least is not None and Urgency(at_least) is Urgency.URGENT:
        return Urgency.URGENT
    return urgency_of(kind)


def audience_of(kind: EventKind) -> Audience:
    return EVENTS[kind].audience


def template_key(kind: EventKind) -> str:
    return EVENTS[kind].template


def alarm_level(kind: EventKind) -> int | None:
    prefix = "alarm_level_"
    return int(kind.value.removeprefix(prefix)) if kind.value.startswith(prefix) else None


# --- dedupe keys -------------------------------------------------------------------------------


def recipient_key(*, customer_id: int | None, address: str) -> str:
    """A person is identified by the customer id (so a changed phone number does not re-send);
    an address without a customer (operators, a webhook URL) by the address itself."""
    return f"customer:{customer_id}" if customer_id is not None else f"address:{address}"


def dedupe_key(
    *, organisation_id: int, event: EventKind, event_key: str, recipient: str, channel: Channel
) -> str:
    """64 hex characters, stable across processes and versions (SHA-256 of the parts)."""
    if not event_key.strip():
        raise ValidationError("event key: must not be empty (it makes repeats harmless)")
    parts = (str(organisation_id), event.value, event_key, recipient, channel.value)
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


# --- quiet hours -------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuietHours:
    """A daily window of local wall time, e.g. 22:00–07:00 (crossing midnight) or 12:00–14:00."""

    start: time
    end: time

    def ends_at(self, instant: datetime, tz: ZoneInfo) -> datetime | None:
        """When the window that contains ``instant`` ends (UTC), or None if it is not quiet."""
        if self.start == self.end:
            return None
        local = instant.astimezone(tz)
        wall, day = local.time().replace(tzinfo=None, fold=0), local.date()
        if self.start < self.end:
            end_day = day if self.start <= wall < self.end else None
        elif wall >= self.start:
            end_day = day + timedelta(days=1)
        else:
            end_day = day if wall < self.end else None
        if end_day is None:
            return None
        ends = local_to_utc(end_day, self.end, tz)
        # In a repeated hour (clocks went back) the end may already lie behind us.
        return ends if ends > instant else None


def parse_wall_time(value: str, *, field: str) -> time:
    try:
        parsed = time.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(f"{field}: {value!r} is not a time like 22:00") from None
    if parsed.tzinfo is not None or parsed.second or parsed.microsecond:
        raise ValidationError(f"{field}: give hours and minutes only, like 22:00")
    return parsed


def quiet_hours(start: str, end: str) -> QuietHours:
    return QuietHours(parse_wall_time(start, field="start"), parse_wall_time(end, field="end"))


def release_at(
    urgency: Urgency, quiet: QuietHours | None, instant: datetime, tz: ZoneInfo
) -> datetime:
    """The earliest instant a message of this urgency may be delivered."""
    if urgency is Urgency.URGENT or quiet is None:
        return instant
    return quiet.ends_at(instant, tz) or instant


# --- retries -----------------------------------------------------------------------------------

#: Delay before attempt n+1 after attempt n failed (n = 1, 2, ...); the last one repeats.
RETRY_DELAYS = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=2),
    timedelta(hours=4),
)
MAX_ATTEMPTS = 8
JITTER = 0.1  # ± 10 %


def retry_delay(attempt: int, *, seed: int = 0) -> timedelta:
    """Delay after the ``attempt``-th failed attempt (1-based), with a reproducible jitter."""
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    base = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS)) - 1]
    spread = (seed * 2_654_435_761 + attempt * 40_503) % 2001 / 1000 - 1  # in [-1, 1]
    return base * (1 + JITTER * spread)


def gives_up(attempts: int, max_attempts: int = MAX_ATTEMPTS) -> bool:
    """After this many attempts failed, does the message fail for good?"""
    return attempts >= max_attempts
