"""Channel adapters against real local servers, driven by the dispatcher from the outbox, on
SQLite and PostgreSQL: e-mail to an SMTP server (aiosmtpd); WeChat token fetch, caching and
template send; a signed webhook checked with ``verify_webhook``; app push with a bearer token.
The SMS / voice providers are in ``test_notifications_providers.py``, which reuses the local
HTTP server defined here."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from test_notifications_outbox import ACTOR, Place, alarm, make_place

from meterdesk.db.database import Database
from meterdesk.notifications import channel_test, configuration, queueing
from meterdesk.notifications.channels.base import HttpOptions
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.channels.webhook import verify_webhook
from meterdesk.notifications.dispatcher import Dispatcher
from meterdesk.notifications.tables import notification_outbox
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration

SECRETS = {
    "TEST_ALIYUN_SECRET": "aliyun-test-secret",
    "TEST_TENCENT_SECRET": "tencent-test-secret",
    "TEST_WECHAT_SECRET": "wechat-app-secret",
    "TEST_PUSH_TOKEN": "push-token",
    "TEST_WEBHOOK_SECRET": "whsec-test",
    "TEST_WRONG_SECRET": "not-the-secret",
}


# --- a small HTTP server in a thread -------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


Answer = tuple[int, Any]


@dataclass
class Server:
    handle: Callable[[Request], Answer]
    requests: list[Request] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def http_server() -> Iterator[Callable[[Callable[[Request], Answer]], Server]]:
    started: list[ThreadingHTTPServer] = []

    def start(handle: Callable[[Request], Answer]) -> Server:
        server = Server(handle)

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                request = Request(
                    self.command,
                    parts.path,
                    dict(parse_qsl(parts.query, keep_blank_values=True)),
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                server.requests.append(request)
                status, answer = server.handle(request)
                body = json.dumps(answer, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        return server

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def configure(db: Database, place: Place, channel: str, provider: str, **config: Any) -> None:
    configuration.configure_channel(
        db,
        organisation_id=place.org.id,
        channel=channel,
        provider=provider,
        config=config,
        secret_refs=config.pop("secret_refs", {}),
        actor=ACTOR,
    )


def deliver(db: Database) -> None:
    registry = ChannelRegistry(secrets=SECRETS.get, http=HttpOptions(timeout_s=5), clock=db.clock)
    asyncio.run(Dispatcher(db, registry).drain())


def rows(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        found = conn.execute(select(notification_outbox).order_by(notification_outbox.c.id))
        return [dict(row) for row in found.mappings()]


def cut(db: Database, place: Place, clock: FakeClock, key: str = "control:1:5:cut") -> None:
    with db.transaction() as conn:
        queueing.enqueue_in(
            conn,
            organisation_id=place.org.id,
            event="supply_cut",
            key=key,
            params={"balance": "-0.20"},
            at=clock(),
            account_id=place.account_id,
        )


# --- e-mail ----------------------------------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_email_is_delivered_to_a_real_smtp_server_and_marked_sent(
    db: Database, clock: FakeClock
) -> None:
    place = make_place(db)
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        configure(
            db,
            place,
            "email",
            "smtp",
            host="127.0.0.1",
            port=port,
            sender="notify@demo.example",
            security="none",
        )
        with db.transaction() as conn:
            alarm(conn, place, clock())
        deliver(db)
    finally:
        controller.stop()

    row = rows(db)[0]
    assert (
        row["status"] == "sent"
        and row["provider_message_id"] == f"<md{row['id']}.notify@demo.example>"
    )
    [(recipients, email)] = inbox.messages
    assert recipients == ["zhang.wei@example.com"]
    assert email["Subject"] == "电费余额一级告警"
    assert email["Message-ID"] == row["provider_message_id"]
    text = email.get_body(preferencelist=("plain",))
    html = email.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert "您的房间A-105电费余额为 12.30 元，已低于一级告警金额 20.00 元" in text.get_content()
    assert "<h2>电费余额一级告警</h2>" in html.get_content()


def test_a_test_message_reaches_a_real_smtp_server(db: Database, clock: FakeClock) -> None:
    place = make_place(db)
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        configure(
            db,
            place,
            "email",
            "smtp",
            host="127.0.0.1",
            port=port,
            sender="notify@demo.example",
            security="none",
            operator_addresses=["ops@demo.example"],
        )
        made = channel_test.send_test_message(
            db,
            organisation_id=place.org.id,
            channel="email",
            address=None,
            language=None,
            actor="admin@demo",
        )
        deliver(db)
    finally:
        controller.stop()
    (row,) = [r for r in rows(db) if r["id"] == made]
    assert row["status"] == "sent" and row["event_kind"] == "channel_test"
    [(recipients, email)] = inbox.messages
    assert recipients == ["ops@demo.example"]  # no address given: the first operator address
    assert email["Subject"] == "meterdesk 测试消息"
    text = email.get_body(preferencelist=("plain",))
    assert text is not None and "通过电子邮件通道发送的测试消息（admin@demo" in text.get_content()


def test_an_unreachable_smtp_server_is_retried_later(db: Database, clock: FakeClock) -> None:
    place = make_place(db)
    configure(
        db,
        place,
        "email",
        "smtp",
        host="127.0.0.1",
        port=free_port(),
        sender="n@x.example",
        security="none",
    )
    with db.transaction() as conn:
        alarm(conn, place, clock())
    deliver(db)
    row = rows(db)[0]
    assert row["status"] == "pending" and row["attempts"] == 1
    assert row["last_error"].startswith("smtp: ConnectionRefusedError")


# --- WeChat ----------------------------------------------------------------------------------


@dataclass
class WeChatServer:
    tokens_issued: int = 0
    valid: set[str] = field(default_factory=set)
    sent: list[dict[str, Any]] = field(default_factory=list)

    def handle(self, request: Request) -> Answer:
        if request.path == "/cgi-bin/token":
            if (request.query.get("appid"), request.query.get("secret")) != (
                "wx-test",
                SECRETS["TEST_WECHAT_SECRET"],
            ):
                return 200, {"errcode": 40125, "errmsg": "invalid appsecret"}
            self.tokens_issued += 1
            token = f"TOKEN{self.tokens_issued}"
            self.valid.add(token)
            return 200, {"access_token": token, "expires_in": 7200}
        assert request.path == "/cgi-bin/message/template/send"
        if request.query.get("access_token") not in self.valid:
            return 200, {
                "errcode": 40001,
                "errmsg": "invalid credential, access_token is invalid or not latest",
            }
        self.sent.append(json.loads(request.body))
        return 200, {"errcode": 0, "errmsg": "ok", "msgid": 200228332 + len(self.sent)}


def test_wechat_fetches_a_token_once_caches_it_and_sends_template_messages(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    wechat = WeChatServer()
    server = http_server(wechat.handle)
    fields = {"thing1": "{place}", "amount2": "{balance}元", "thing3": "{level_name}告警"}
    configure(
        db,
        place,
        "wechat",
        "wechat",
        app_id="wx-test",
        base_url=server.url,
        secret_refs={"app_secret": "TEST_WECHAT_SECRET"},
        templates={
            "balance_alarm": {
                "template_id": "tmpl-alarm",
                "fields": fields,
                "url": "https://m.example/r/{account}",
            },
            "supply_cut": "tmpl-cut",
        },
    )
    with db.transaction() as conn:
        alarm(conn, place, clock())
    cut(db, place, clock)
    registry = ChannelRegistry(secrets=SECRETS.get, clock=clock)
    asyncio.run(Dispatcher(db, registry).drain())

    assert [r["status"] for r in rows(db)] == ["sent", "sent"]
    assert wechat.tokens_issued == 1
    by_template = {sent["template_id"]: sent for sent in wechat.sent}  # sent concurrently
    first = by_template["tmpl-alarm"]
    assert first["touser"] == "oOPENID-zhangwei" and first["template_id"] == "tmpl-alarm"
    assert first["url"] == "https://m.example/r/A-1"
    assert first["client_msg_id"] == f"md{rows(db)[0]['id']}"
    assert first["data"] == {
        "thing1": {"value": "房间A-105"},
        "amount2": {"value": "12.30元"},
        "thing3": {"value": "一级告警"},
    }
    assert by_template["tmpl-cut"]["data"]["first"]["value"] == "拉闸断电通知"

    # A token WeChat no longer accepts (renewed elsewhere) is fetched again and the send retried.
    wechat.valid.clear()
    cut(db, place, clock, key="control:1:6:cut")
    clock.advance(timedelta(hours=3))
    asyncio.run(Dispatcher(db, registry).drain())
    assert rows(db)[-1]["status"] == "sent" and wechat.tokens_issued == 2


def test_wechat_with_a_wrong_app_secret_fails_with_wechats_error(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    server = http_server(WeChatServer().handle)
    configure(
        db,
        place,
        "wechat",
        "wechat",
        app_id="wx-test",
        base_url=server.url,
        secret_refs={"app_secret": "TEST_WRONG_SECRET"},
        templates={"balance_alarm": "t"},
    )
    with db.transaction() as conn:
        alarm(conn, place, clock())
    deliver(db)
    row = rows(db)[0]
    assert (row["status"], row["last_error"]) == (
        "failed",
        "wechat token: errcode 40125: invalid appsecret",
    )


# --- webhook and push --------------------------------------------------------------------------


def test_webhook_is_received_and_verified_with_verify_webhook(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    verified: list[bool] = []

    def receive(request: Request) -> Answer:
        verified.append(
            verify_webhook(
                secret=SECRETS["TEST_WEBHOOK_SECRET"],
                timestamp=request.headers["x-meterdesk-timestamp"],
                body=request.body,
                signature=request.headers["x-meterdesk-signature"],
                now=clock(),
            )
        )
        return (200, {"ok": True}) if verified[-1] else (401, {"error": "bad signature"})

    server = http_server(receive)
    configure(
        db,
        place,
        "webhook",
        "webhook",
        url=f"{server.url}/hooks/meterdesk",
        secret_refs={"secret": "TEST_WEBHOOK_SECRET"},
    )
    cut(db, place, clock)
    deliver(db)

    row = rows(db)[0]
    assert row["status"] == "sent" and verified == [True]
    [request] = server.requests
    assert request.path == "/hooks/meterdesk"
    assert request.headers["x-meterdesk-delivery"] == str(row["id"])
    document = json.loads(request.body)
    assert document["event"] == "supply_cut" and document["id"] == str(row["id"])
    assert document["data"]["balance"] == "-0.20" and document["data"]["room"] == "A-105"
    assert "拉闸断电" in document["text"]


def test_a_webhook_receiver_that_keeps_failing_is_retried_then_given_up(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    server = http_server(lambda request: (503, {"error": "maintenance"}))
    configure(
        db,
        place,
        "webhook",
        "webhook",
        url=server.url,
        secret_refs={"secret": "TEST_WEBHOOK_SECRET"},
    )
    cut(db, place, clock)
    registry = ChannelRegistry(secrets=SECRETS.get, http=HttpOptions(timeout_s=5), clock=clock)
    worker = Dispatcher(db, registry, max_attempts=3)
    for _ in range(3):
        asyncio.run(worker.drain())
        clock.advance(timedelta(hours=1))
    row = rows(db)[0]
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert row["last_error"] == f"gave up after 3 attempts: POST {server.url}: HTTP 503"
    assert len(server.requests) == 3
    assert len({r.headers["x-meterdesk-delivery"] for r in server.requests}) == 1


def test_push_goes_to_the_gateway_with_a_bearer_token_and_idempotency_key(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    server = http_server(lambda request: (202, {"id": "push-42"}))
    configure(
        db,
        place,
        "push",
        "http",
        url=f"{server.url}/v1/push",
        secret_refs={"token": "TEST_PUSH_TOKEN"},
    )
    with db.transaction() as conn:
        alarm(conn, place, clock())
    deliver(db)
    row = rows(db)[0]
    assert (row["status"], row["provider_message_id"]) == ("sent", "push-42")
    [request] = server.requests
    assert request.headers["authorization"] == "Bearer push-token"
    assert request.headers["idempotency-key"] == f"md{row['id']}"
    body = json.loads(request.body)
    assert body["to"] == str(place.customer_id) and body["title"] == "电费余额一级告警"


def test_a_missing_secret_variable_is_retried_not_lost(db: Database, clock: FakeClock) -> None:
    place = make_place(db)
    configure(
        db,
        place,
        "push",
        "http",
        url="http://127.0.0.1:9/push",
        secret_refs={"token": "TEST_NOT_SET"},
    )
    with db.transaction() as conn:
        alarm(conn, place, clock())
    deliver(db)
    row = rows(db)[0]
    assert row["status"] == "pending"
    assert row["last_error"] == "push: environment variable TEST_NOT_SET is not set"
