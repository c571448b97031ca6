"""Templates: every event renders in both languages; the words operators expect; money with two
places; times in the site's local time; HTML escaped; the sandbox holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from meterdesk.notifications import model
from meterdesk.notifications.model import EventKind
from meterdesk.notifications.rendering import Renderer, RenderError, template_values

SHANGHAI = ZoneInfo("Asia/Shanghai")
AT = "2026-11-02T00:00:00+00:00"  # 08:00 in Shanghai
BASE = {"organisation": "示例物业", "customer": "张伟", "room": "A-105", "account": "A-1", "at": AT}
SAMPLES: dict[EventKind, dict[str, Any]] = {
    EventKind.ALARM_LEVEL_1: {"level": 1, "balance": "12.3", "threshold": "20"},
    EventKind.ALARM_LEVEL_2: {"level": 2, "balance": "8.00", "threshold": "10.00"},
    EventKind.ALARM_LEVEL_3: {"level": 3, "balance": "4.5", "days_left": 1.5, "threshold": None},
    EventKind.SUPPLY_CUT: {"balance": "-0.5"},
    EventKind.SUPPLY_RESTORED: {"balance": "50"},
    EventKind.RECHARGE_CREDITED: {"amount": "100", "balance": "112.3"},
    EventKind.REFUND: {"amount": "50", "balance": "0"},
    EventKind.EMERGENCY_CREDIT_TAKEN: {"amount": "20", "balance": "-0.2"},
    EventKind.COMMAND_FAILED: {"command": "relay_trip", "meter": "M1", "error": "timeout"},
    EventKind.METER_OFFLINE: {"meter": "M1", "since": "2026-11-01T16:00:00Z"},
    EventKind.GATEWAY_OFFLINE: {"gateway": "GW-01"},
    EventKind.METER_MONEY_DIFFERS: {"meter": "M1", "meter_money": "80.00", "expected": "93.46"},
    EventKind.CHANNEL_TEST: {"channel": "email", "actor": "admin@demo"},
    EventKind.SYSTEM_NOTICE: {"subject": "B 栋停水检修", "text": "12 月 9 日 9:00–12:00 停水。"},
    EventKind.DEDUCTION_SUMMARY: {
        "period": "2026-12-06",
        "year": "2026",
        "month": "12",
        "day": "6",
        "electricity_quantity": "12.30",
        "electricity_amount": "8.40",
        "electricity_unit": "kWh",
        "balance": "95.10",
    },
}
RENDERER = Renderer()


def render(kind: EventKind, language: str, **extra: Any) -> Any:
    params = {**BASE, "utility": "electricity", **SAMPLES[kind], **extra}
    return RENDERER.render(
        template=model.template_key(kind), language=language, params=params, tz=SHANGHAI
    )


@pytest.mark.parametrize("language", model.LANGUAGES)
@pytest.mark.parametrize("kind", list(EventKind))
def test_every_event_renders_in_every_language(kind: EventKind, language: str) -> None:
    rendered = render(kind, language)
    assert rendered.subject and rendered.text and rendered.voice
    assert "示例物业" in rendered.text
    assert "None" not in rendered.text
    assert rendered.html.startswith("<!DOCTYPE html>")


def test_level_one_alarm_reads_like_the_products_operators_know() -> None:
    rendered = render(EventKind.ALARM_LEVEL_1, "zh-CN")
    assert rendered.text == (
        "【示例物业】尊敬的张伟，您的房间A-105电费余额为 12.30 元，"
        "已低于一级告警金额 20.00 元，请及时充值。"
    )
    assert rendered.subject == "电费余额一级告警"


def test_english_alarm_shows_cny_with_two_places() -> None:
    rendered = render(EventKind.ALARM_LEVEL_1, "en")
    assert "CNY 12.30" in rendered.text
    assert "level 1 alarm amount of CNY 20.00" in rendered.text


def test_days_of_credit_left_alarm_says_days_not_an_amount() -> None:
    zh = render(EventKind.ALARM_LEVEL_3, "zh-CN")
    assert "预计仅可使用 1.5 天" in zh.text and "三级告警" in zh.text
    assert "about 1.5 more days" in render(EventKind.ALARM_LEVEL_3, "en").text


def test_water_accounts_hear_about_water_and_valves() -> None:
    alarm = render(EventKind.ALARM_LEVEL_2, "zh-CN", utility="water")
    assert "水费余额为 8.00 元" in alarm.text and "二级告警金额 10.00 元" in alarm.text
    cut = render(EventKind.SUPPLY_CUT, "zh-CN", utility="water")
    assert "关阀停水" in cut.text and "开阀供水" in cut.text


def test_cut_and_restore_use_the_glossary_words_and_local_time() -> None:
    cut = render(EventKind.SUPPLY_CUT, "zh-CN")
    assert "已于 2026-11-02 08:00 拉闸断电" in cut.text
    assert "-0.50 元" in cut.text
    restored = render(EventKind.SUPPLY_RESTORED, "zh-CN")
    assert "合闸送电" in restored.text
    allowed = render(EventKind.SUPPLY_RESTORED, "zh-CN", restore_mode="close_allowed")
    assert "允许合闸" in allowed.text


def test_times_follow_the_site_zone() -> None:
    params = {**BASE, **SAMPLES[EventKind.RECHARGE_CREDITED]}
    berlin = RENDERER.render(
        template="recharge_credited", language="en", params=params, tz=ZoneInfo("Europe/Berlin")
    )
    assert "credited at 2026-11-02 01:00" in berlin.text  # UTC+1 in November


def test_operator_messages_name_the_command_in_chinese() -> None:
    rendered = render(EventKind.COMMAND_FAILED, "zh-CN")
    assert "表计 M1 的拉闸指令未能确认（timeout）" in rendered.text
    assert "2026-11-02 00:00 起失连" in render(EventKind.METER_OFFLINE, "zh-CN").text


def test_display_values_are_what_sms_providers_receive() -> None:
    params = {**BASE, "level": 1, "balance": "12.3", "threshold": "20", "utility": "water"}
    values = template_values(params, "zh-CN", SHANGHAI)
    assert values["balance"] == "12.30" and values["threshold"] == "20.00"
    assert values["level_name"] == "一级" and values["utility_name"] == "水费"
    assert values["at"] == "2026-11-02 08:00"
    assert values["place"] == "房间A-105"


def test_html_email_escapes_what_customers_typed() -> None:
    rendered = render(EventKind.RECHARGE_CREDITED, "en", customer="<script>alert(1)</script>")
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;" in rendered.html
    assert "<script>" in rendered.text  # plain text is not HTML


def test_a_missing_param_fails_loudly_instead_of_sending_half_a_text() -> None:
    with pytest.raises(RenderError, match="balance"):
        RENDERER.render(template="supply_cut", language="zh-CN", params=BASE, tz=SHANGHAI)


def test_an_override_directory_wins_and_stays_in_the_sandbox(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "refund.txt.j2").write_text(
        "{% block subject %}Refund{% endblock %}{% block body %}Refunded {{ amount }}{% endblock %}",
        encoding="utf-8",
    )
    (tmp_path / "en" / "supply_cut.txt.j2").write_text(
        "{% block subject %}x{% endblock %}{% block body %}{{ ''.__class__.__mro__ }}{% endblock %}",
        encoding="utf-8",
    )
    renderer = Renderer(override_dir=tmp_path)
    params = {**BASE, **SAMPLES[EventKind.REFUND]}
    assert renderer.render(template="refund", language="en", params=params, tz=SHANGHAI).text == (
        "Refunded 50.00"
    )
    with pytest.raises(RenderError):
        renderer.render(template="supply_cut", language="en", params=params, tz=SHANGHAI)


def test_a_system_notice_says_its_subject_and_text_after_the_organisation() -> None:
    chinese, english = (
        render(EventKind.SYSTEM_NOTICE, "zh-CN"),
        render(EventKind.SYSTEM_NOTICE, "en"),
    )
    assert chinese.subject == "【示例物业】B 栋停水检修"
    assert chinese.text == "【示例物业】B 栋停水检修：12 月 9 日 9:00–12:00 停水。"
    assert english.subject == "[示例物业] B 栋停水检修"
    assert "12 月 9 日 9:00–12:00 停水。" in english.voice and "B 栋停水检修" in chinese.voice
    assert model.urgency_of(EventKind.SYSTEM_NOTICE) is model.Urgency.NORMAL
    assert model.audience_of(EventKind.SYSTEM_NOTICE) is model.Audience.CUSTOMER
    assert EventKind.SYSTEM_NOTICE in model.SUBSCRIBABLE_EVENTS
