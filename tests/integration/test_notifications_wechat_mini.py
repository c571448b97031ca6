"""WeChat mini program subscription messages (小程序订阅消息) against a local server that answers
like WeChat, on SQLite and PostgreSQL: one token fetched and cached, the message sent to the
customer's mini program openid (never the official account's), a token renewed on 40001, a
refused subscription (43101) failed at once with a reason an operator can act on, a busy WeChat
(-1) tried again later, quantity accounts' ``.quantity`` templates, and a customer without the
openid reported as unreachable on this channel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from test_notifications_channels import (
    SECRETS,
    Answer,
    Request,
    Server,
    configure,
    cut,
    deliver,
    http_server,
    rows,
)
from test_notifications_outbox import ACTOR, Place, alarm, make_place
from test_provider_templates_quantity import quantity_alarm

from meterdesk.db.database import Database
from meterdesk.notifications import channel_status, channel_test
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.dispatcher import Dispatcher
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.time import FakeClock
from meterdesk.sites import service as sites

pytestmark = pytest.mark.integration
__all__ = ["http_server"]  # the fixture, imported for pytest

MINI_OPENID = "oMINIzhangwei0123456789abcd"  # 28 characters, like WeChat's
MONEY_FIELDS = {"thing1": "{place}", "amount2": "{balance}元", "thing3": "{text}"}
QUANTITY_FIELDS = {"thing1": "{place}", "character_string2": "{quantity_left} {unit}"}


@dataclass
class MiniServer:
    """WeChat's token and subscribe/send endpoints; ``answers`` are errcodes to give to the next
    sends before accepting them (the token checks come first, as WeChat's)."""

    tokens_issued: int = 0
    valid: set[str] = field(default_factory=set)
    answers: list[int] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    sends: int = 0
    rejected: int = 0

    def handle(self, request: Request) -> Answer:
        if request.path == "/cgi-bin/token":
            assert request.query["appid"] == "wx-mini"
            assert request.query["secret"] == SECRETS["TEST_WECHAT_SECRET"]
            self.tokens_issued += 1
            token = f"MINITOKEN{self.tokens_issued}"
            self.valid.add(token)
            return 200, {"access_token": token, "expires_in": 7200}
        assert request.path == "/cgi-bin/message/subscribe/send", request.path
        if request.query.get("access_token") not in self.valid:
            self.rejected += 1
            return 200, {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid"}
        self.sends += 1
        if self.answers:
            code = self.answers.pop(0)
            return 200, {"errcode": code, "errmsg": ERRMSG[code]}
        self.sent.append(json.loads(request.body))
        return 200, {"errcode": 0, "errmsg": "ok", "msgid": 3000 + len(self.sent)}


ERRMSG = {43101: "user refuse to accept the msg rid: 6571", -1: "system error"}


def mini_place(db: Database) -> Place:
    place = make_place(db)  # its customer has the official account's openid oOPENID-zhangwei
    sites.update_customer(
        db,
        organisation_id=place.org.id,
        customer_id=place.customer_id,
        change=sites.CustomerChange(wechat_mini_openid=MINI_OPENID),
        actor=ACTOR,
    )
    return place


def configure_mini(db: Database, place: Place, server: Server, **config: Any) -> None:
    templates = config.pop(
        "templates",
        {
            "balance_alarm": {
                "template_id": "mini-alarm",
                "fields": MONEY_FIELDS,
                "page": "pages/account/index?no={account}",
            },
            "supply_cut": {"template_id": "mini-cut", "fields": {"thing1": "{subject}"}},
        },
    )
    configure(
        db,
        place,
        "wechat_mini",
        "wechat_mini",
        app_id="wx-mini",
        base_url=server.url,
        secret_refs={"app_secret": "TEST_WECHAT_SECRET"},
        templates=templates,
        **config,
    )


def test_subscription_messages_go_to_the_mini_openid_with_one_cached_token(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = mini_place(db)
    mini = MiniServer()
    configure_mini(db, place, http_server(mini.handle), miniprogram_state="trial")
    with db.transaction() as conn:
        alarm(conn, place, clock())
    cut(db, place, clock)
    registry = ChannelRegistry(secrets=SECRETS.get, clock=clock)  # keeps the adapter and token
    asyncio.run(Dispatcher(db, registry).drain())

    assert [r["status"] for r in rows(db)] == ["sent", "sent"]
    assert [r["address"] for r in rows(db)] == [MINI_OPENID, MINI_OPENID]
    assert mini.tokens_issued == 1
    by_template = {sent["template_id"]: sent for sent in mini.sent}
    first = by_template["mini-alarm"]
    assert first["touser"] == MINI_OPENID  # not oOPENID-zhangwei, the official account's
    assert (first["miniprogram_state"], first["lang"]) == ("trial", "zh_CN")
    assert first["page"] == "pages/account/index?no=A-1"
    assert first["data"]["thing1"] == {"value": "房间A-105"}
    assert first["data"]["amount2"] == {"value": "12.30元"}
    # The body is longer than a thing's 20 characters: cut, not refused by WeChat.
    text = first["data"]["thing3"]["value"]
    assert len(text) == 20 and text.endswith("…")
    assert by_template["mini-cut"]["data"] == {"thing1": {"value": "拉闸断电通知"}}
    assert rows(db)[0]["provider_message_id"] in {"3001", "3002"}

    cut(db, place, clock, key="control:1:6:cut")
    asyncio.run(Dispatcher(db, registry).drain())
    assert rows(db)[-1]["status"] == "sent" and mini.tokens_issued == 1  # the cached token

    mini.valid.clear()  # renewed elsewhere: WeChat answers 40001, a new token is fetched once
    cut(db, place, clock, key="control:1:7:cut")
    asyncio.run(Dispatcher(db, registry).drain())
    assert rows(db)[-1]["status"] == "sent"
    assert (mini.rejected, mini.tokens_issued) == (1, 2)


def test_a_refused_subscription_fails_at_once_with_what_the_tenant_must_do(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = mini_place(db)
    mini = MiniServer(answers=[43101])
    configure_mini(db, place, http_server(mini.handle))
    with db.transaction() as conn:
        alarm(conn, place, clock())
    deliver(db)

    row = rows(db)[0]
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["last_error"].startswith("wechat_mini subscribe send: errcode 43101: user refuse")
    assert "they must subscribe again in the mini program" in row["last_error"]
    clock.advance(timedelta(hours=5))
    deliver(db)
    assert mini.sends == 1  # never tried again


def test_a_busy_wechat_is_tried_again_later(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = mini_place(db)
    mini = MiniServer(answers=[-1])
    configure_mini(db, place, http_server(mini.handle))
    cut(db, place, clock)
    deliver(db)
    row = rows(db)[0]
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["last_error"] == "wechat_mini subscribe send: errcode -1: system error"

    clock.advance(timedelta(minutes=5))
    deliver(db)
    assert rows(db)[0]["status"] == "sent" and mini.sends == 2


def test_a_quantity_account_goes_out_with_the_quantity_template(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = mini_place(db)
    mini = MiniServer()
    server = http_server(mini.handle)
    money = {"template_id": "mini-alarm", "fields": MONEY_FIELDS}
    configure_mini(db, place, server, templates={"balance_alarm": money})
    quantity_alarm(db, place, clock())
    deliver(db)
    assert rows(db)[0]["status"] == "failed"
    assert (
        "register 'balance_alarm.quantity' with quantity_left and unit"
        in (rows(db)[0]["last_error"])
    )

    quantity = {"template_id": "mini-alarm-m3", "fields": QUANTITY_FIELDS}
    templates = {"balance_alarm": money, "balance_alarm.quantity": quantity}
    configure_mini(db, place, server, templates=templates)
    with db.transaction() as conn:
        params = {"quantity_left": "3.00", "unit": "m³", "quantity_threshold": "5.00", "level": 1}
        alarm(conn, place, clock(), key="control:1:2:alarm:1:0:q", params=params)
    deliver(db)
    assert rows(db)[-1]["status"] == "sent"
    assert mini.sent[-1]["template_id"] == "mini-alarm-m3"
    assert mini.sent[-1]["data"]["character_string2"] == {"value": "3.00 m³"}


def test_a_customer_without_a_mini_openid_is_unreachable_on_this_channel(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)  # the official account's openid only
    mini = MiniServer()
    configure_mini(db, place, http_server(mini.handle))
    cut(db, place, clock)
    deliver(db)
    row = rows(db)[0]
    assert (row["channel"], row["status"]) == ("wechat_mini", "failed")
    assert row["last_error"] == (
        f"customer {place.customer_id} has no wechat_mini_openid for wechat_mini"
    )
    assert mini.sends == 0


def test_the_channel_says_what_its_settings_miss(db: Database) -> None:
    place = make_place(db)
    configure(db, place, "wechat_mini", "wechat_mini", templates={})
    view = next(
        v
        for v in channel_status.channel_views(db, organisation_id=place.org.id, secrets=SECRETS.get)
        if v.channel == "wechat_mini"
    )
    assert view.providers == ("wechat_mini",)
    assert view.problem == "wechat_mini: setting 'app_id' is missing"
    assert [(s.name, s.variable, s.set) for s in view.secrets] == [("app_secret", None, False)]

    configure(
        db,
        place,
        "wechat_mini",
        "wechat_mini",
        app_id="wx-mini",
        templates={"supply_cut": "only-an-id"},
        miniprogram_state="formal",
        secret_refs={"app_secret": "TEST_WECHAT_SECRET"},
    )
    views = channel_status.channel_views(db, organisation_id=place.org.id, secrets=SECRETS.get)
    problem = next(v.problem for v in views if v.channel == "wechat_mini")
    assert problem == (
        "wechat_mini: bad settings: templates['supply_cut'] needs template_id and fields"
    )


def test_a_test_message_goes_to_a_mini_openid_in_the_chosen_language(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    mini = MiniServer()
    test_template = {"template_id": "mini-test", "fields": {"thing1": "{subject}"}}
    configure_mini(db, place, http_server(mini.handle), templates={"channel_test": test_template})
    with pytest.raises(ValidationError, match="address: 'wang 138' is not a WeChat openid"):
        channel_test.send_test_message(
            db,
            organisation_id=place.org.id,
            channel="wechat_mini",
            address="wang 138",
            language="en",
            actor=ACTOR,
        )
    channel_test.send_test_message(
        db,
        organisation_id=place.org.id,
        channel="wechat_mini",
        address=f" {MINI_OPENID} ",
        language="en",
        actor=ACTOR,
    )
    deliver(db)
    assert [r["status"] for r in rows(db)] == ["sent"]
    sent = mini.sent[0]
    assert (sent["touser"], sent["template_id"], sent["lang"]) == (
        MINI_OPENID,
        "mini-test",
        "en_US",
    )
