"""System notices, pure: scopes, subject and text rules, channels, scheduled times, and what
makes a repeat the same notice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from meterdesk.notifications import notice_model
from meterdesk.notifications.model import Channel
from meterdesk.notifications.notice_model import ScopeKind
from meterdesk.shared.errors import ValidationError


def request(**given: object) -> notice_model.NoticeRequest:
    arguments: dict[str, object] = {
        "scope_kind": "building",
        "scope_ids": [3],
        "subject_text": "  B 栋停水检修 ",
        "body": "\n12 月 9 日 9:00–12:00 停水检修。\n请提前储水。  ",
    }
    arguments.update(given)
    return notice_model.notice_request(**arguments)  # type: ignore[arg-type]


def test_subject_and_text_are_trimmed_and_lines_in_the_text_kept() -> None:
    found = request()
    assert found.subject == "B 栋停水检修"
    assert found.text == "12 月 9 日 9:00–12:00 停水检修。\n请提前储水。"
    assert found.urgent is False and found.channels is None


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"subject_text": "   "}, "subject: required"),
        ({"body": ""}, "text: required"),
        ({"subject_text": "停" * 61}, "subject: at most 60"),
        ({"body": "水" * 501}, "text: at most 500"),
        ({"subject_text": "停水\n检修"}, "subject: one line"),
        ({"subject_text": "停水\x1b[2J"}, "subject: one line"),
        ({"body": "停水\x00"}, "text: a control character"),
        ({"scope_kind": "street"}, "scope: 'street' is not one of"),
        ({"scope_kind": "organisation", "scope_ids": [1]}, "takes no ids"),
        ({"scope_kind": "site", "scope_ids": []}, "exactly one site"),
        ({"scope_kind": "floor", "scope_ids": [1, 2]}, "exactly one floor"),
        ({"scope_kind": "rooms", "scope_ids": []}, "at least one room"),
        ({"scope_kind": "rooms", "scope_ids": list(range(1, 502))}, "at most 500 rooms"),
        ({"scope_ids": [0]}, "positive"),
        ({"channel_names": ["fax"]}, "'fax' is not one of"),
        ({"channel_names": ["webhook"]}, "not a channel that reaches a person"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(given: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        request(**given)


def test_the_edges_are_allowed() -> None:
    found = request(subject_text="停" * 60, body="水" * 500)
    assert len(found.subject) == 60 and len(found.text) == 500


def test_rooms_once_each_and_channels_in_a_fixed_order() -> None:
    found = request(scope_kind="rooms", scope_ids=[7, 5, 7], channel_names=["email", "sms", "sms"])
    assert found.scope == notice_model.Scope(ScopeKind.ROOMS, (7, 5))
    assert found.channels == (Channel.SMS, Channel.EMAIL)
    assert request(channel_names=[]).channels is None


def test_the_same_notice_hashes_the_same_and_any_change_differs() -> None:
    same = request().request_hash()
    assert request(subject_text="B 栋停水检修").request_hash() == same
    for changed in (
        {"subject_text": "A 栋停水检修"},
        {"body": "另一段"},
        {"urgent": True},
        {"channel_names": ["sms"]},
        {"scope_ids": [4]},
        {"scope_kind": "floor"},
    ):
        assert request(**changed).request_hash() != same, changed


def test_idempotency_keys_and_event_keys() -> None:
    assert notice_model.idempotency_key(" abc ") == "abc"
    for bad in ("", " ", "k" * 101, "a\tb"):
        with pytest.raises(ValidationError):
            notice_model.idempotency_key(bad)
    assert notice_model.event_key(12, 5) == "notice:12:customer:5"
    assert notice_model.notice_of("notice:12:customer:5") == 12
    low, high = notice_model.event_key_range(12)
    assert low <= notice_model.event_key(12, 5) < high
    assert low <= notice_model.event_key(12, 10**9) < high
    for other in (notice_model.event_key(120, 5), notice_model.event_key(1, 5), "notice:12"):
        assert not low <= other < high, other


def test_a_scheduled_time_is_part_of_the_notice_and_absent_leaves_the_hash_as_before() -> None:
    plain = request()
    at = datetime(2026, 12, 9, 0, 0, tzinfo=UTC)
    scheduled = request(send_at=at)
    assert plain.send_at is None and scheduled.send_at == at
    assert scheduled.request_hash() != plain.request_hash()
    assert request(send_at=at).request_hash() == scheduled.request_hash()
    # The hash of a notice sent at once is what it was before scheduling existed.
    assert (
        plain.request_hash()
        == notice_model.NoticeRequest(
            plain.scope, plain.subject, plain.text, plain.urgent, plain.channels
        ).request_hash()
    )
    with pytest.raises(ValidationError, match="time zone is required"):
        request(send_at=datetime(2026, 12, 9, 8, 0))  # noqa: DTZ001 - refused


def test_a_scheduled_time_lies_ahead_by_at_most_ninety_days() -> None:
    now = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
    assert notice_model.check_send_at(now + timedelta(seconds=1), now) == now + timedelta(seconds=1)
    assert notice_model.check_send_at(now + timedelta(days=90), now) == now + timedelta(days=90)
    with pytest.raises(ValidationError, match="not in the future"):
        notice_model.check_send_at(now, now)
    with pytest.raises(ValidationError, match="at most 90 days ahead"):
        notice_model.check_send_at(now + timedelta(days=90, minutes=1), now)


def test_a_local_time_is_the_wall_time_of_the_zone_and_a_gap_is_the_jump() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    assert notice_model.local_send_at(" 2026-12-09 08:00 ", shanghai) == datetime(
        2026, 12, 9, 0, 0, tzinfo=UTC
    )
    assert notice_model.local_send_at("2026-12-09T08:00Z", shanghai) == datetime(
        2026, 12, 9, 8, 0, tzinfo=UTC
    )
    berlin = ZoneInfo("Europe/Berlin")  # 2027-03-28 02:30 does not exist there
    assert notice_model.local_send_at("2027-03-28 02:30", berlin) == datetime(
        2027, 3, 28, 1, 0, tzinfo=UTC
    )
    for bad in ("", "12/09 8am", "2026-13-01 08:00"):
        with pytest.raises(ValidationError, match="send at"):
            notice_model.local_send_at(bad, shanghai)
