"""System notices (系统通知 / 公告), pure: what an operator may send to the tenants of a scope.

Invariants:
- A scope is the whole organisation, one site, one building, one floor, or a list of rooms; the
  organisation takes no ids, a site, building or floor exactly one, rooms at least one (each
  once, at most :data:`MAX_ROOMS`). Whose the ids are is checked against the database, not here.
- A subject is one line of at most :data:`MAX_SUBJECT` characters, a text at most
  :data:`MAX_TEXT` (line breaks allowed: a notice has paragraphs); both are trimmed, required,
  and hold no control character (a tenant's phone shows them as they are).
- Channels, when chosen, are person channels (SMS, voice, e-mail, WeChat, push), each once; None
  means every channel the organisation subscribed to the event. The system channels (webhook,
  log) get every notice anyway, as they get every event.
- A notice's messages have event keys ``notice:<id>:customer:<customer>`` (:func:`event_key`),
  which sort together: its delivery counts are one index range (:func:`event_key_range`).
- Two sends are "the same notice" (an idempotent repeat) when scope, subject, text, urgency,
  channels and the scheduled time are equal: :func:`request_hash` of those, never of who sent
  it or when.
- A scheduled notice (``send_at``) goes out at an instant after the moment it is written and at
  most :data:`MAX_AHEAD` later (:func:`check_send_at`); a time without an offset is the wall
  time of the place's zone (:func:`local_send_at`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from meterdesk.notifications.model import PERSON_CHANNELS, Channel
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.text import control_character, control_character_in_one_line
from meterdesk.shared.time import local_to_utc, require_utc

MAX_SUBJECT = 60
MAX_TEXT = 500
MAX_ROOMS = 500
MAX_KEY = 100
MAX_AHEAD = timedelta(days=90)  # a notice scheduled further ahead is more likely a typo


class ScopeKind(StrEnum):
    ORGANISATION = "organisation"
    SITE = "site"
    BUILDING = "building"
    FLOOR = "floor"
    ROOMS = "rooms"


@dataclass(frozen=True)
class Scope:
    kind: ScopeKind
    ids: tuple[int, ...]


@dataclass(frozen=True)
class NoticeRequest:
    """A checked notice: what is stored and what decides whether a repeat is the same one."""

    scope: Scope
    subject: str
    text: str
    urgent: bool
    channels: tuple[Channel, ...] | None
    send_at: datetime | None = None  # UTC; None: at once

    def request_hash(self) -> str:
        described: dict[str, object] = {
            "scope": self.scope.kind.value,
            "ids": list(self.scope.ids),
            "subject": self.subject,
            "text": self.text,
            "urgent": self.urgent,
            "channels": None if self.channels is None else [c.value for c in self.channels],
        }
        if self.send_at is not None:  # absent for one sent at once: earlier hashes still match
            described["send_at"] = self.send_at.isoformat()
        encoded = json.dumps(described, ensure_ascii=False, sort_keys=True).encode("utf-8")
        return hashlib.sha256(encoded).hexdigest()


def scope(kind: str, ids: Sequence[int] = ()) -> Scope:
    try:
        found = ScopeKind(kind)
    except ValueError:
        known = ", ".join(item.value for item in ScopeKind)
        raise ValidationError(f"scope: {kind!r} is not one of {known}") from None
    unique = tuple(dict.fromkeys(int(i) for i in ids))
    if any(i < 1 for i in unique):
        raise ValidationError("scope: ids are positive whole numbers")
    if found is ScopeKind.ORGANISATION and unique:
        raise ValidationError("scope: the whole organisation takes no ids")
    if found in (ScopeKind.SITE, ScopeKind.BUILDING, ScopeKind.FLOOR) and len(unique) != 1:
        raise ValidationError(f"scope: a {found.value} scope names exactly one {found.value}")
    if found is ScopeKind.ROOMS and not unique:
        raise ValidationError("scope: name at least one room")
    if len(unique) > MAX_ROOMS:
        raise ValidationError(f"scope: at most {MAX_ROOMS} rooms in one notice")
    return Scope(found, unique)


def subject(value: str) -> str:
    cleaned = value.strip()
    if not cleaned:
        raise ValidationError("subject: required")
    if len(cleaned) > MAX_SUBJECT:
        raise ValidationError(f"subject: at most {MAX_SUBJECT} characters ({len(cleaned)} given)")
    found = control_character_in_one_line(cleaned)
    if found:
        raise ValidationError(f"subject: one line without control characters ({found})")
    return cleaned


def text(value: str) -> str:
    cleaned = value.strip()
    if not cleaned:
        raise ValidationError("text: required")
    if len(cleaned) > MAX_TEXT:
        raise ValidationError(f"text: at most {MAX_TEXT} characters ({len(cleaned)} given)")
    found = control_character(cleaned)
    if found:
        raise ValidationError(f"text: a control character ({found}) is not allowed")
    return cleaned


def channels(values: Sequence[str] | None) -> tuple[Channel, ...] | None:
    """The person channels chosen, in the order of :class:`Channel`; None (or none given):
    every subscribed channel."""
    if not values:
        return None
    chosen = set()
    for value in values:
        try:
            found = Channel(value.strip())
        except ValueError:
            known = ", ".join(sorted(c.value for c in PERSON_CHANNELS))
            raise ValidationError(f"channels: {value!r} is not one of {known}") from None
        if found not in PERSON_CHANNELS:
            raise ValidationError(f"channels: {found.value} is not a channel that reaches a person")
        chosen.add(found)
    return tuple(c for c in Channel if c in chosen)


def idempotency_key(value: str) -> str:
    cleaned = value.strip()
    if not cleaned or len(cleaned) > MAX_KEY:
        raise ValidationError(f"idempotency key: 1 to {MAX_KEY} characters")
    if control_character_in_one_line(cleaned):
        raise ValidationError("idempotency key: no control characters")
    return cleaned


def local_send_at(value: str, tz: ZoneInfo) -> datetime:
    """``2026-12-09 08:00`` (or ``2026-12-09T08:00``) as the wall time of ``tz``; a value with an
    offset (``…+08:00``, ``…Z``) is that instant. A wall time the clocks skip (a
    daylight-saving gap) is the instant they jump past it."""
    raw = value.strip()
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(
            f"send at: {value!r} is not a date and time like 2026-12-09 08:00"
        ) from None
    if parsed.tzinfo is not None:
        return require_utc(parsed, field="send at")
    return local_to_utc(parsed.date(), parsed.time(), tz)


def check_send_at(value: datetime, now: datetime) -> datetime:
    """``value`` (UTC) when it is after ``now`` and at most :data:`MAX_AHEAD` later."""
    at = require_utc(value, field="send at")
    if at <= now:
        raise ValidationError(
            f"send at: {at:%Y-%m-%d %H:%M} UTC is not in the future (now {now:%Y-%m-%d %H:%M} UTC)"
        )
    if at > now + MAX_AHEAD:
        raise ValidationError(
            f"send at: at most {MAX_AHEAD.days} days ahead ({at:%Y-%m-%d %H:%M} UTC given)"
        )
    return at


def notice_request(
    *,
    scope_kind: str,
    scope_ids: Sequence[int],
    subject_text: str,
    body: str,
    urgent: bool = False,
    channel_names: Sequence[str] | None = None,
    send_at: datetime | None = None,
) -> NoticeRequest:
    """Every rule at once, the scope first (as a form reads top to bottom). Whether ``send_at``
    lies ahead is checked when the notice is written (:func:`check_send_at`): a repeat of a
    scheduled notice after its time is still the same notice."""
    return NoticeRequest(
        scope(scope_kind, scope_ids),
        subject(subject_text),
        text(body),
        urgent,
        channels(channel_names),
        None if send_at is None else require_utc(send_at, field="send at"),
    )


def event_key(notice_id: int, customer_id: int) -> str:
    """The outbox's event key of a notice's messages to one customer. Per customer, not per
    notice: the dedupe key then still makes a customer with several rooms hear once per channel,
    and the system channels (webhook, log), addressed by URL rather than by customer, get one
    message per tenant as they do for every other customer event (an integrator forwards what
    each tenant read), not one message for the whole notice."""
    return f"{event_key_prefix(notice_id)}customer:{customer_id}"


def event_key_prefix(notice_id: int) -> str:
    return f"notice:{notice_id}:"


def event_key_range(notice_id: int) -> tuple[str, str]:
    """[low, high): every event key of the notice's messages, as an index range (";" follows
    ":"), which a LIKE 'notice:12:%' is not on SQLite."""
    prefix = event_key_prefix(notice_id)
    return prefix, prefix[:-1] + ";"


def cancelled_reason(notice_id: int) -> str:
    """The ``last_error`` of a message its notice's cancel stopped (the notification log)."""
    return f"notice #{notice_id} was cancelled before this message went out"


def notice_of(key: str) -> int:
    """The notice id of one of its messages' event keys."""
    return int(key.split(":")[1])
