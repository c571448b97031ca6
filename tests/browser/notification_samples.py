"""Notification channels and a day of messages for the screenshots (and for looking at the
pages by hand): channels set up the way an operator would, one of them missing its secret;
messages of every kind queued for the demo's accounts through the real outbox, then delivered
by the real dispatcher with stand-in adapters — some sent, some refused, some left waiting."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from meterdesk.db.database import Database
from meterdesk.notifications import configuration, queueing
from meterdesk.notifications.channels.base import (
    DeliveryResult,
    OutgoingMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from meterdesk.notifications.channels.log import LogChannel
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.dispatcher import Dispatcher
from meterdesk.notifications.model import Channel

ACTOR = "screenshots"
SMS_TEMPLATES = {"balance_alarm": {"code": "SMS_4001", "params": ["place", "balance"]}}


class Accepting:
    """A provider that takes every message (an e-mail server, an SMS gateway)."""

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        return DeliveryResult(provider_message_id=f"{message.channel}-{message.outbox_id:06d}")


class Picky:
    """An SMS provider that refuses one number and is busy for another."""

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        if message.outbox_id % 5 == 0:
            raise PermanentDeliveryError("isv.MOBILE_NUMBER_ILLEGAL: invalid mobile number")
        if message.outbox_id % 7 == 0:
            raise TransientDeliveryError("HTTP 503 from dysmsapi.aliyuncs.com")
        return DeliveryResult(provider_message_id=f"aliyun-{message.outbox_id:06d}")


def _channels(db: Database, organisation_id: int) -> None:
    settings: list[dict[str, Any]] = [
        {"channel": "log", "provider": "log"},
        {
            "channel": "sms",
            "provider": "aliyun",
            "config": {
                "access_key_id": "LTAI5tDemoKeyId",
                "sign_name": "示例物业",
                "templates": SMS_TEMPLATES,
                "operator_addresses": ["13800000000"],
            },
            "secret_refs": {"access_key_secret": "METERDESK_ALIYUN_SECRET"},
        },
        {
            "channel": "email",
            "provider": "smtp",
            "config": {
                "host": "smtp.example.com",
                "port": 587,
                "sender": "notice@example.com",
                "operator_addresses": ["ops@example.com"],
            },
            "secret_refs": {"password": "METERDESK_SMTP_PASSWORD"},
            "events": ["command_failed", "meter_offline", "gateway_offline"],
        },
        {
            "channel": "webhook",
            "provider": "webhook",
            "enabled": False,
            "config": {"url": "https://erp.example.com/meterdesk"},
            "secret_refs": {"secret": "METERDESK_WEBHOOK_SECRET"},
        },
    ]
    for setting in settings:
        configuration.configure_channel(db, organisation_id=organisation_id, actor=ACTOR, **setting)
    configuration.set_quiet_hours(
        db, organisation_id=organisation_id, start="22:00", end="07:00", actor=ACTOR
    )


EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("alarm_level_1", {"balance": "18.40", "threshold": "20.00", "level": 1}),
    ("recharge_credited", {"amount": "200.00", "balance": "212.60"}),
    ("alarm_level_3", {"balance": "0.80", "threshold": "1.00", "level": 3}),
    ("supply_cut", {"balance": "-0.35"}),
    ("supply_restored", {"balance": "99.65"}),
    ("refund", {"amount": "50.00", "balance": "12.00"}),
    ("emergency_credit_taken", {"amount": "20.00", "balance": "19.20"}),
]


def _queue(db: Database, organisation_id: int) -> None:
    for account_id in range(1, 15):
        event, params = EVENTS[account_id % len(EVENTS)]
        queueing.enqueue(
            db,
            organisation_id=organisation_id,
            event=event,
            key=f"screenshots:{account_id}",
            params=params,
            account_id=account_id,
        )
    for number, (event, params) in enumerate(
        [
            (
                "command_failed",
                {"command": "relay_trip", "meter": "E-017", "error": "no answer after 8 attempts"},
            ),
            ("meter_offline", {"meter": "E-101"}),
        ]
    ):
        queueing.enqueue(
            db,
            organisation_id=organisation_id,
            event=event,
            key=f"screenshots:ops:{number}",
            params=params,
        )


def add_notification_samples(db: Database, *, organisation_id: int) -> None:
    _channels(db, organisation_id)
    _queue(db, organisation_id)
    overrides: dict[Channel, Any] = {
        Channel.LOG: LogChannel(io.StringIO()),
        Channel.SMS: Picky(),
        Channel.EMAIL: Accepting(),
    }
    asyncio.run(Dispatcher(db, ChannelRegistry(overrides=overrides)).drain(rounds=3))
