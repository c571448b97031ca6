"""What a mini program subscription message puts in each field: a ``thing`` fits WeChat's 20
characters, other field types go as they are (cutting an amount or a date would change it)."""

from __future__ import annotations

import pytest

from meterdesk.notifications.channels.wechat_mini import field_value, state, template_refs


def test_a_long_thing_is_cut_to_twenty_characters_with_an_ellipsis() -> None:
    text = "您的房间A-105电费余额已低于告警值，请及时充值"
    cut = field_value("thing3", text)
    assert len(cut) == 20 and cut == text[:19] + "…"
    assert field_value("thing1", "房间A-105") == "房间A-105"
    assert field_value("thing2", "x" * 20) == "x" * 20


@pytest.mark.parametrize("name", ["amount2", "date4", "phrase5", "character_string6", "name7"])
def test_other_field_types_are_never_cut(name: str) -> None:
    assert field_value(name, "1" * 40) == "1" * 40


def test_a_template_without_fields_or_a_wrong_state_is_a_settings_error() -> None:
    with pytest.raises(ValueError, match="needs template_id and fields"):
        template_refs({"supply_cut": "template-id-only"})
    with pytest.raises(ValueError, match="is not one of formal, trial, developer"):
        state("release")
    refs = template_refs({"refund": {"template_id": "t", "fields": {"thing1": "{place}"}}})
    assert refs["refund"].page is None
