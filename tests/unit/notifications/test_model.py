"""Quiet hours (across midnight, on daylight-saving days), retry backoff, dedupe keys, urgency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from meterdesk.notifications import model
from meterdesk.notifications.model import Channel, EventKind, QuietHours, Urgency
from meterdesk.shared.errors import ValidationError

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
NIGHT = model.quiet_hours("22:00", "07:00")


def local(text: str, tz: ZoneInfo) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz).astimezone(UTC)


# --- quiet hours -------------------------------------------------------------------------------


def test_quiet_hours_across_midnight_end_the_next_morning() -> None:
    assert NIGHT.ends_at(local("2026-11-02 23:30", SHANGHAI), SHANGHAI) == local(
        "2026-11-03 07:00", SHANGHAI
    )


def test_quiet_hours_after_midnight_end_the_same_morning() -> None:
    assert NIGHT.ends_at(local("2026-11-03 03:00", SHANGHAI), SHANGHAI) == local(
        "2026-11-03 07:00", SHANGHAI
    )


@pytest.mark.parametrize("wall", ["2026-11-02 07:00", "2026-11-02 12:00", "2026-11-02 21:59"])
def test_daytime_is_not_quiet_and_the_end_is_exclusive(wall: str) -> None:
    assert NIGHT.ends_at(local(wall, SHANGHAI), SHANGHAI) is None


def test_window_start_is_inclusive() -> None:
    assert NIGHT.ends_at(local("2026-11-02 22:00", SHANGHAI), SHANGHAI) is not None


def test_a_window_within_one_day_works_too() -> None:
    lunch = model.quiet_hours("12:00", "14:00")
    noon = local("2026-11-02 12:30", SHANGHAI)
    assert lunch.ends_at(noon, SHANGHAI) == local("2026-11-02 14:00", SHANGHAI)
    assert lunch.ends_at(local("2026-11-02 14:00", SHANGHAI), SHANGHAI) is None
    assert lunch.ends_at(local("2026-11-02 23:00", SHANGHAI), SHANGHAI) is None


def test_an_empty_window_is_never_quiet() -> None:
    empty = model.quiet_hours("07:00", "07:00")
    assert empty.ends_at(local("2026-11-02 07:00", SHANGHAI), SHANGHAI) is None


def test_spring_forward_night_is_one_hour_shorter_but_ends_at_seven_local() -> None:
    start = local("2026-03-07 23:00", NEW_YORK)  # EST, UTC-5
    ends = NIGHT.ends_at(start, NEW_YORK)
    assert ends == datetime(2026, 3, 8, 11, 0, tzinfo=UTC)  # 07:00 EDT, UTC-4
    assert ends - start == timedelta(hours=7)  # not 8: the clock skipped 02:00-03:00


def test_fall_back_night_is_one_hour_longer_but_ends_at_seven_local() -> None:
    start = local("2026-10-31 23:00", NEW_YORK)  # EDT
    ends = NIGHT.ends_at(start, NEW_YORK)
    assert ends == datetime(2026, 11, 1, 12, 0, tzinfo=UTC)  # 07:00 EST
    assert ends - start == timedelta(hours=9)


def test_a_window_ending_inside_the_skipped_hour_ends_when_the_clock_jumps() -> None:
    window = model.quiet_hours("22:00", "02:30")
    ends = window.ends_at(local("2026-03-08 01:00", NEW_YORK), NEW_YORK)
    assert ends == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT, the first instant after


def test_in_the_repeated_hour_the_window_uses_local_wall_time() -> None:
    window = model.quiet_hours("22:00", "01:30")
    first_0115 = datetime(2026, 11, 1, 5, 15, tzinfo=UTC)  # 01:15 EDT
    second_0115 = datetime(2026, 11, 1, 6, 15, tzinfo=UTC)  # 01:15 EST
    assert window.ends_at(first_0115, NEW_YORK) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    # The second 01:15 comes after the window's end (the first 01:30): not quiet any more.
    assert window.ends_at(second_0115, NEW_YORK) is None


def test_urgent_messages_ignore_quiet_hours_and_normal_ones_wait() -> None:
    night = local("2026-11-02 23:30", SHANGHAI)
    assert model.release_at(Urgency.URGENT, NIGHT, night, SHANGHAI) == night
    assert model.release_at(Urgency.NORMAL, NIGHT, night, SHANGHAI) == local(
        "2026-11-03 07:00", SHANGHAI
    )
    assert model.release_at(Urgency.NORMAL, None, night, SHANGHAI) == night


@pytest.mark.parametrize("bad", ["25:00", "7pm", "07:00:30", ""])
def test_quiet_hours_refuse_what_is_not_a_wall_time(bad: str) -> None:
    with pytest.raises(ValidationError):
        model.quiet_hours(bad, "07:00")


def test_quiet_hours_are_a_value() -> None:
    assert model.quiet_hours("22:00", "7:00".zfill(5)) == QuietHours(NIGHT.start, NIGHT.end)


# --- backoff -----------------------------------------------------------------------------------


def test_backoff_grows_then_stays_at_the_cap_within_the_jitter() -> None:
    bases = [*model.RETRY_DELAYS, model.RETRY_DELAYS[-1], model.RETRY_DELAYS[-1]]
    for attempt, base in enumerate(bases, start=1):
        for seed in range(50):
            delay = model.retry_delay(attempt, seed=seed)
            assert base * 0.9 <= delay <= base * 1.1
    assert list(model.RETRY_DELAYS) == sorted(model.RETRY_DELAYS)
    assert model.RETRY_DELAYS[0] * 1.1 < model.RETRY_DELAYS[1] * 0.9


def test_backoff_is_reproducible_and_spreads_messages() -> None:
    assert model.retry_delay(3, seed=42) == model.retry_delay(3, seed=42)
    assert len({model.retry_delay(3, seed=seed) for seed in range(20)}) > 10


def test_attempts_are_counted_from_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        model.retry_delay(0)


def test_gives_up_after_the_last_attempt() -> None:
    assert not model.gives_up(model.MAX_ATTEMPTS - 1)
    assert model.gives_up(model.MAX_ATTEMPTS)
    assert model.gives_up(3, max_attempts=3)


# --- dedupe keys -------------------------------------------------------------------------------


def _key(**changes: object) -> str:
    parts: dict[str, object] = {
        "organisation_id": 1,
        "event": EventKind.ALARM_LEVEL_1,
        "event_key": "control:7:3:alarm:1:0",
        "recipient": model.recipient_key(customer_id=5, address="13900000000"),
        "channel": Channel.SMS,
    }
    parts.update(changes)
    return model.dedupe_key(**parts)  # type: ignore[arg-type]


def test_the_same_event_recipient_and_channel_give_the_same_key() -> None:
    assert _key() == _key()
    assert len(_key()) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"organisation_id": 2},
        {"event": EventKind.ALARM_LEVEL_2},
        {"event_key": "control:7:3:alarm:1:1"},
        {"recipient": "customer:6"},
        {"channel": Channel.EMAIL},
    ],
)
def test_any_part_of_the_identity_changes_the_key(change: dict[str, object]) -> None:
    assert _key(**change) != _key()


def test_a_customer_is_identified_by_id_not_by_phone_number() -> None:
    first = model.recipient_key(customer_id=5, address="13900000000")
    assert first == model.recipient_key(customer_id=5, address="13800000000")
    assert model.recipient_key(customer_id=None, address="ops@example.com") == (
        "address:ops@example.com"
    )


def test_an_empty_event_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="event key"):
        _key(event_key=" ")


# --- events ------------------------------------------------------------------------------------


def test_level_three_alarms_and_cuts_are_urgent_while_level_one_waits() -> None:
    assert model.urgency_of(EventKind.ALARM_LEVEL_1) is Urgency.NORMAL
    assert model.urgency_of(EventKind.ALARM_LEVEL_2) is Urgency.NORMAL
    assert model.urgency_of(EventKind.ALARM_LEVEL_3) is Urgency.URGENT
    assert model.urgency_of(EventKind.SUPPLY_CUT) is Urgency.URGENT
    assert model.urgency_of(EventKind.REFUND) is Urgency.NORMAL


def test_a_caller_may_raise_an_events_urgency_but_never_lower_it() -> None:
    assert model.urgency_for(EventKind.ALARM_LEVEL_2) is Urgency.NORMAL
    assert model.urgency_for(EventKind.ALARM_LEVEL_2, Urgency.URGENT) is Urgency.URGENT
    assert model.urgency_for(EventKind.ALARM_LEVEL_1, "urgent") is Urgency.URGENT
    assert model.urgency_for(EventKind.ALARM_LEVEL_3, Urgency.NORMAL) is Urgency.URGENT
    assert model.urgency_for(EventKind.SUPPLY_CUT, Urgency.NORMAL) is Urgency.URGENT


def test_every_event_has_a_spec_and_alarm_levels_share_a_template() -> None:
    assert set(model.EVENTS) == set(EventKind)
    assert {model.template_key(EventKind(f"alarm_level_{n}")) for n in (1, 2, 3)} == {
        "balance_alarm"
    }
    assert model.alarm_level(EventKind.ALARM_LEVEL_2) == 2
    assert model.alarm_level(EventKind.SUPPLY_CUT) is None


def test_unknown_names_are_refused_with_the_known_ones_listed() -> None:
    with pytest.raises(ValidationError, match="alarm_level_1"):
        model.event_kind("alarm_level_4")
    with pytest.raises(ValidationError, match="sms"):
        model.channel("fax")
    with pytest.raises(ValidationError, match="zh-CN"):
        model.language("fr")
