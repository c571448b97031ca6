"""A quantity-credit account's (购量) messages through SMS, voice and WeChat provider templates.

Its messages carry ``quantity_left`` and ``unit`` where a money account's carry ``balance`` and
``threshold``. Before, a provider template approved with ``balance`` went out with an empty
value ("余额为  元"); now the channel's ``<key>.quantity`` template is used, and without one a
template naming a money value fails the message with the reason instead of sending a blank.
Against the same signature-checking local servers as the provider tests, on both databases."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from test_notifications_channels import (
    SECRETS,
    Server,
    WeChatServer,
    configure,
    deliver,
    http_server,
    rows,
)
from test_notifications_outbox import Place, alarm, make_place
from test_notifications_providers import aliyun_server, tencent_server

from meterdesk.db.database import Database
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.dispatcher import Dispatcher
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration
__all__ = ["http_server"]  # the fixture, imported for pytest

MONEY_TEMPLATE = {
    "code": "SMS_MONEY",
    "params": ["customer", "place", "balance", "threshold", "level_name"],
}
QUANTITY_TEMPLATE = {
    "code": "SMS_QUANTITY",
    "params": ["customer", "place", "left_name", "quantity_left", "unit", "level_name"],
}


def quantity_alarm(db: Database, place: Place, at: datetime) -> None:
    """What the control loop queues for a water account bought as m³ (control_send._held)."""
    params = {"quantity_left": "3.00", "unit": "m³", "quantity_threshold": "5.00", "level": 1}
    with db.transaction() as conn:
        alarm(conn, place, at, key="control:1:1:alarm:1:0:q", params=params)


def money_alarm(db: Database, place: Place, at: datetime) -> None:
    with db.transaction() as conn:
        alarm(conn, place, at)


def aliyun_sms(db: Database, place: Place, server: Server, templates: dict[str, Any]) -> None:
    configure(
        db,
        place,
        "sms",
        "aliyun",
        access_key_id="LTAI-test",
        sign_name="示例物业",
        base_url=server.url,
        secret_refs={"access_key_secret": "TEST_ALIYUN_SECRET"},
        templates=templates,
    )


def test_a_quantity_message_goes_out_with_the_quantity_template_and_a_money_one_with_the_plain(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    server = http_server(aliyun_server("SendSms", {"BizId": "b-1"}))
    templates = {"balance_alarm": MONEY_TEMPLATE, "balance_alarm.quantity": QUANTITY_TEMPLATE}
    aliyun_sms(db, place, server, templates)
    quantity_alarm(db, place, clock())
    money_alarm(db, place, clock())
    deliver(db)

    assert [row["status"] for row in rows(db)] == ["sent", "sent"]
    sent = {request.query["TemplateCode"]: request for request in server.requests}
    assert json.loads(sent["SMS_QUANTITY"].query["TemplateParam"]) == {
        "customer": "张伟",
        "place": "房间A-105",
        "left_name": "剩余电量",
        "quantity_left": "3.00",
        "unit": "m³",
        "level_name": "一级",
    }
    assert json.loads(sent["SMS_MONEY"].query["TemplateParam"])["balance"] == "12.30"


def test_a_plain_template_naming_money_fails_a_quantity_message_with_the_reason_unsent(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    server = http_server(aliyun_server("SendSms", {"BizId": "b-1"}))
    aliyun_sms(db, place, server, {"balance_alarm": MONEY_TEMPLATE})
    quantity_alarm(db, place, clock())
    deliver(db)

    [row] = rows(db)
    assert row["status"] == "failed" and row["attempts"] == 1
    assert row["last_error"] == (
        "sms: provider template 'balance_alarm' fills balance, threshold, which a "
        "quantity-credit account's message does not have; register 'balance_alarm.quantity' "
        "with quantity_left and unit"
    )
    assert server.requests == []


@pytest.mark.parametrize("params", [["place", "level_name"], None])
def test_a_plain_template_without_money_values_serves_a_quantity_message(
    db: Database, clock: FakeClock, http_server: Callable[..., Server], params: list[str] | None
) -> None:
    """One template per key serves both kinds when its wording fits both (``None``: every value
    goes, so the quantity's too)."""
    place = make_place(db)
    server = http_server(aliyun_server("SendSms", {"BizId": "b-1"}))
    aliyun_sms(db, place, server, {"balance_alarm": {"code": "SMS_BOTH", "params": params}})
    quantity_alarm(db, place, clock())
    deliver(db)

    assert rows(db)[0]["status"] == "sent"
    sent = json.loads(server.requests[0].query["TemplateParam"])
    assert sent["place"] == "房间A-105" and "balance" not in sent
    assert params is not None or sent["quantity_left"] == "3.00"


def test_tencent_fills_the_quantity_templates_ordered_params(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    status = {"SerialNo": "5000:1", "PhoneNumber": "+8613900000000", "Code": "Ok"}
    server = http_server(tencent_server("SendSms", "sms", {"SendStatusSet": [status]}))
    configure(
        db,
        place,
        "sms",
        "tencent",
        secret_id="AKID-test",  # noqa: S106 - a key id
        sdk_app_id="1400006666",
        sign_name="示例物业",
        base_url=server.url,
        secret_refs={"secret_key": "TEST_TENCENT_SECRET"},
        templates={
            "balance_alarm": {"code": "1234567", "params": ["place", "balance"]},
            "balance_alarm.quantity": {
                "code": "7654321",
                "params": ["place", "quantity_left", "unit"],
            },
        },
    )
    quantity_alarm(db, place, clock())
    deliver(db)

    assert rows(db)[0]["status"] == "sent"
    body = json.loads(server.requests[0].body)
    assert body["TemplateId"] == "7654321"
    assert body["TemplateParamSet"] == ["房间A-105", "3.00", "m³"]


def test_wechat_picks_the_quantity_template_and_refuses_a_money_field_without_one(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    wechat = WeChatServer()
    server = http_server(wechat.handle)
    money = {"template_id": "tmpl-money", "fields": {"amount2": "{balance}元"}}
    configure(
        db,
        place,
        "wechat",
        "wechat",
        app_id="wx-test",
        base_url=server.url,
        secret_refs={"app_secret": "TEST_WECHAT_SECRET"},
        templates={"balance_alarm": money},
    )
    quantity_alarm(db, place, clock())
    registry = ChannelRegistry(secrets=SECRETS.get, clock=clock)
    asyncio.run(Dispatcher(db, registry).drain())
    [refused] = rows(db)
    assert refused["status"] == "failed" and "'balance_alarm.quantity'" in refused["last_error"]
    assert wechat.sent == []

    quantity = {"template_id": "tmpl-q", "fields": {"thing2": "{quantity_left} {unit}"}}
    configure(
        db,
        place,
        "wechat",
        "wechat",
        app_id="wx-test",
        base_url=server.url,
        secret_refs={"app_secret": "TEST_WECHAT_SECRET"},
        templates={"balance_alarm": money, "balance_alarm.quantity": quantity},
    )
    with db.transaction() as conn:
        params = {"quantity_left": "1.50", "unit": "m³", "level": 2}
        alarm(conn, place, clock(), event="alarm_level_2", key="q:2", params=params)
    asyncio.run(Dispatcher(db, ChannelRegistry(secrets=SECRETS.get, clock=clock)).drain())
    assert [sent["template_id"] for sent in wechat.sent] == ["tmpl-q"]
    assert wechat.sent[0]["data"] == {"thing2": {"value": "1.50 m³"}}
