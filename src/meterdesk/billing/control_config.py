"""Reading and writing the control loop's configuration and state as JSON, with clear errors;
and the friendly-hours rule (no cut at night, on weekends or site holidays) in local time."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from meterdesk.billing.policy import AlarmLevel, AlarmState, ControlState, Supply
from meterdesk.notifications.model import EventKind, alarm_level
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.money import format_money, from_fen, parse_unsigned_money, to_fen

#: The deepest level notifications have an alarm event (and wording, and urgency) for.
MAX_ALARM_LEVEL = max(filter(None, (alarm_level(kind) for kind in EventKind)))
CHANNELS = ("sms", "email", "voice", "wechat", "wechat_mini", "push", "webhook", "log")


# The API's bounds (api/schemas/control.py), kept here for the CLI's JSON file too: a plan file
# with NaN (which json.loads takes) or 1e308 hours raised in timedelta (a traceback) or stored
# a level that could never fire as meant.
MAX_DAYS_LEFT = 3650
MAX_REPEATS = 100
MAX_REPEAT_HOURS = 24 * 365


def _number_in(value: object, most: float) -> bool:
    """A JSON number above 0 and at most ``most`` (NaN and infinities fail both tests)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= most


def parse_levels(raw: object) -> tuple[AlarmLevel, ...]:
    """``[{"level": 1, "amount": "20.00" | "days_left": 3, "repeat_count": 2,
    "repeat_interval_hours": 24, "channels": ["sms", "email"]}, …]``"""
    if not isinstance(raw, list) or not raw:
        raise ValidationError("levels: give a non-empty list of alarm levels")
    levels = [_level(item, f"levels[{i}]") for i, item in enumerate(raw)]
    numbers = [level.level for level in levels]
    if len(set(numbers)) != len(numbers):
        raise ValidationError("levels: each level number may appear once")
    return tuple(sorted(levels, key=lambda level: level.level))


def _level(item: object, where: str) -> AlarmLevel:
    if not isinstance(item, dict):
        raise ValidationError(f"{where}: expected an object")
    unknown = set(item) - {
        "level",
        "amount",
        "days_left",
        "repeat_count",
        "repeat_interval_hours",
        "channels",
    }
    if unknown:
        raise ValidationError(f"{where}: unknown field(s) {sorted(unknown)}")
    number = item.get("level")
    # Notifications know alarm levels 1 to 3 (level 3, the last warning before a cut, is
    # urgent): a level 4 crossing raised in the ingest batch and refused its readings.
    if not isinstance(number, int) or not 1 <= number <= MAX_ALARM_LEVEL:
        raise ValidationError(f"{where}.level: a number from 1 to {MAX_ALARM_LEVEL}")
    if ("amount" in item) == ("days_left" in item):
        raise ValidationError(f"{where}: give either amount or days_left")
    days = item.get("days_left")
    if days is not None and not _number_in(days, MAX_DAYS_LEFT):
        raise ValidationError(f"{where}.days_left: a number of days above 0, at most 3650")
    channels = item.get("channels", ["sms"])
    if not isinstance(channels, list) or not channels or any(c not in CHANNELS for c in channels):
        raise ValidationError(f"{where}.channels: a list from {', '.join(CHANNELS)}")
    repeat = item.get("repeat_count", 0)
    hours = item.get("repeat_interval_hours", 24)
    if (
        not isinstance(repeat, int)
        or isinstance(repeat, bool)
        or not 0 <= repeat <= MAX_REPEATS
        or not _number_in(hours, MAX_REPEAT_HOURS)
    ):
        raise ValidationError(
            f"{where}: repeat_count from 0 to {MAX_REPEATS} and repeat_interval_hours above 0, "
            f"at most {MAX_REPEAT_HOURS}"
        )
    return AlarmLevel(
        level=number,
        threshold_fen=to_fen(parse_unsigned_money(item["amount"], field=f"{where}.amount"))
        if "amount" in item
        else None,
        days_left=float(days) if days is not None else None,
        repeat_count=repeat,
        repeat_interval=timedelta(hours=hours),
        channels=tuple(channels),
    )


def levels_to_json(levels: Iterable[AlarmLevel]) -> str:
    items: list[dict[str, Any]] = []
    for level in levels:
        item: dict[str, Any] = {
            "level": level.level,
            "repeat_count": level.repeat_count,
            "repeat_interval_hours": level.repeat_interval.total_seconds() / 3600,
            "channels": list(level.channels),
        }
        if level.threshold_fen is not None:
            item["amount"] = format_money(from_fen(level.threshold_fen))
        if level.days_left is not None:
            item["days_left"] = level.days_left
        items.append(item)
    return json.dumps(items, sort_keys=True)


def state_to_json(state: ControlState) -> str:
    return json.dumps(
        {
            "supply": state.supply.value,
            "alarms": {
                str(k): [v.sent, v.last_sent_at.isoformat() if v.last_sent_at else None]
                for k, v in state.alarms.items()
            },
            "emergency_outstanding_fen": state.emergency_outstanding_fen,
            "protect_sent": state.protect_sent,
        },
        sort_keys=True,
    )


GRID_SUPPLY = {Supply.ON: "on", Supply.OFF: "off", Supply.CUT_PENDING: "pending"}


def grid_columns(state: ControlState, active: bool) -> dict[str, object]:
    """The ``supply`` and ``alarm_level`` columns stored beside the JSON state, by which the
    room grid filters and counts in SQL: an inactive state is "on, no alarm" by definition."""
    if not active:
        return {"supply": "on", "alarm_level": 0}
    level = max((level for level, alarm in state.alarms.items() if alarm.sent), default=0)
    return {"supply": GRID_SUPPLY[state.supply], "alarm_level": level}


def state_from_json(text: str) -> ControlState:
    raw = json.loads(text)
    return ControlState(
        supply=Supply(raw["supply"]),
        alarms={
            int(k): AlarmState(v[0], datetime.fromisoformat(v[1]) if v[1] else None)
            for k, v in raw["alarms"].items()
        },
        emergency_outstanding_fen=int(raw["emergency_outstanding_fen"]),
        protect_sent=bool(raw["protect_sent"]),
    )


@dataclass(frozen=True)
class Window:
    start: time
    end: time  # earlier than start: the window runs over midnight; equal to start: all day

    def contains(self, wall: time) -> bool:
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= wall < self.end
        return wall >= self.start or wall < self.end


def parse_windows(raw: object) -> tuple[Window, ...]:
    if not isinstance(raw, list):
        raise ValidationError("windows: a list of {start, end} local times")
    windows = []
    for i, item in enumerate(raw):
        try:
            windows.append(
                Window(time.fromisoformat(item["start"]), time.fromisoformat(item["end"]))
            )
        except (KeyError, TypeError, ValueError):
            raise ValidationError(f"windows[{i}]: give start and end as HH:MM") from None
    return tuple(windows)


def window_spans(spans: Iterable[str]) -> list[dict[str, str]]:
    """ "HH:MM-HH:MM" spans as typed (the CLI's ``--window``, the console's field) as the
    windows :func:`parse_windows` takes."""
    windows = []
    for span in spans:
        start, dash, end = span.strip().partition("-")
        if not dash:
            raise ValidationError(f"windows: {span!r} is not HH:MM-HH:MM")
        windows.append({"start": start.strip(), "end": end.strip()})
    return windows


def windows_to_json(windows: Iterable[Window]) -> str:
    return json.dumps(
        [
            {"start": w.start.isoformat("minutes"), "end": w.end.isoformat("minutes")}
            for w in windows
        ]
    )


@dataclass(frozen=True)
class FriendlyHours:
    windows: tuple[Window, ...] = ()
    weekends: bool = False
    holidays: bool = False

    def contains(self, at: datetime, zone: ZoneInfo, site_holidays: frozenset[date]) -> bool:
        local = at.astimezone(zone)
        if self.weekends and local.weekday() >= 5:
            return True
        if self.holidays and local.date() in site_holidays:
            return True
        return any(window.contains(local.time()) for window in self.windows)
