"""The console's system notices page: every role sees the notices sent with their delivery
counts; operators and admins get the form, whose errors are shown in it and write nothing; a
notice sent shows in the list with its messages; zh-CN."""

from __future__ import annotations

from typing import Any

import pytest
from apikit import ROLES, World
from consolekit import Console
from sqlalchemy import func, select

from meterdesk.notifications.tables import notices


def form(world: World, **given: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "idempotency_key": "console-notice-1",
        "scope": "building",
        "building_id": str(world.alpha.building_id),
        "subject": "B1 停水检修",
        "text": "12 月 9 日 9:00–12:00 停水检修。",
    }
    found.update(given)
    return found


def stored(world: World) -> int:
    with world.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(notices)).scalar_one())


@pytest.mark.parametrize("role", ROLES)
def test_every_role_sees_the_notices_and_only_senders_the_form(world: World, role: str) -> None:
    console = Console(world.client, world.alpha, role)
    shown = console.get("/notices")
    assert shown.status_code == 200, shown.text
    assert f'data-notice="{world.alpha.notice_id}"' in shown.text and "停水通知" in shown.text
    assert 'href="/notices"' in shown.text and "Bravo" not in shown.text
    may_send = role in ("admin", "operator")
    assert ('data-form="notice"' in shown.text) is may_send
    assert "Alpha Park / Alpha B1 / Alpha F1" in shown.text or not may_send
    if not may_send:
        before = stored(world)
        assert console.post("/notices", form(world)).status_code == 403
        assert stored(world) == before


def test_an_operator_sends_a_notice_and_sees_its_messages(world: World) -> None:
    console = Console(world.client, world.alpha, "operator")
    before = stored(world)
    sent = console.post("/notices", form(world, urgent="on"))
    assert sent.status_code == 200, sent.text
    assert 'data-result="notice"' in sent.text and "sent to 1 recipients" in sent.text
    assert '<b data-count="pending">1</b>' in sent.text and "Urgent" in sent.text
    assert 'value="console-notice-1"' not in sent.text  # a fresh key for the next notice
    again = console.post("/notices", form(world, urgent="on"))  # a double click
    assert again.status_code == 200 and stored(world) == before + 1

    by_room = console.post(
        "/notices",
        form(world, idempotency_key="console-notice-2", scope="rooms", room_names="Alpha 101"),
    )
    assert by_room.status_code == 200 and stored(world) == before + 2


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"subject": "停" * 61}, "subject: at most 60"),
        ({"text": "  "}, "text: required"),
        ({"scope": "rooms", "room_names": "Nope"}, "no room &#39;Nope&#39;"),
        ({"scope": "rooms", "room_names": ""}, "give one or more room numbers"),
        ({"scope": "floor", "floor_id": ""}, "floor: choose one"),
        ({"scope": "rooms", "room_names": "Alpha 102"}, "no open account"),
        ({"building_id": "999999"}, "building 999999 not found"),
        ({"channels": ["webhook"]}, "channels"),
    ],
)
def test_errors_are_shown_in_the_form_and_write_nothing(
    world: World, given: dict[str, Any], said: str
) -> None:
    console = Console(world.client, world.alpha, "operator")
    before = stored(world)
    refused = console.post("/notices", form(world, **given))
    assert refused.status_code in (404, 409, 422), refused.text
    assert 'class="alert error"' in refused.text and said in refused.text
    assert stored(world) == before


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"subject": "停" * 61}, "标题：最多 60 个字符（填了 61 个）"),
        ({"text": "  "}, "正文：必填"),
        ({"scope": "rooms", "room_names": "Nope"}, "指定房间：没有房间 &#39;Nope&#39;"),
        ({"scope": "floor", "floor_id": ""}, "楼层：请选择一个"),
        ({"building_id": "999999"}, "楼栋 999999 不存在"),
    ],
)
def test_errors_are_shown_in_the_viewers_language(
    world: World, given: dict[str, Any], said: str
) -> None:
    console = Console(world.client, world.alpha, "operator", locale="zh-CN")
    before = stored(world)
    refused = console.post("/notices", form(world, **given))
    assert 'class="alert error"' in refused.text and said in refused.text, refused.text
    assert stored(world) == before


def test_the_page_in_chinese(world: World) -> None:
    console = Console(world.client, world.alpha, "admin", locale="zh-CN")
    shown = console.get("/notices").text
    assert "系统通知" in shown and "发送通知" in shown and "全部租户" in shown
