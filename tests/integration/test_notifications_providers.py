"""Aliyun and Tencent Cloud SMS and voice adapters against local HTTP servers that check each
request's signature the way the provider does — computed here independently from the received
request and the test secret (Aliyun: the documented form-encode-then-replace recipe; Tencent:
the canonical request rebuilt from the received headers and body) — and refuse a mismatch with
the provider's own error. Driven by the dispatcher from the outbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import pytest
from sqlalchemy import select, update
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
from test_notifications_outbox import Place, alarm, make_place

from meterdesk.db.database import Database
from meterdesk.notifications.tables import notification_log
from meterdesk.shared.time import FakeClock
from meterdesk.sites.tables import customers

pytestmark = pytest.mark.integration
__all__ = ["http_server"]  # the fixture, imported for pytest


# --- Aliyun ----------------------------------------------------------------------------------


def aliyun_percent(value: str) -> str:
    """The documented recipe: form-encode, then + → %20, * → %2A, %7E → ~."""
    return quote_plus(value, safe="*").replace("+", "%20").replace("*", "%2A").replace("%7E", "~")


def aliyun_expected_signature(query: dict[str, str], secret: str) -> str:
    params = {k: v for k, v in query.items() if k != "Signature"}
    canonical = "&".join(f"{aliyun_percent(k)}={aliyun_percent(params[k])}" for k in sorted(params))
    to_sign = f"GET&{aliyun_percent('/')}&{aliyun_percent(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def aliyun_server(action: str, answer: dict[str, Any]) -> Callable[[Request], Answer]:
    nonces: set[str] = set()

    def handle(request: Request) -> Answer:
        query = request.query
        if query.get("AccessKeyId") != "LTAI-test" or query.get("SignatureMethod") != "HMAC-SHA1":
            return 404, {
                "Code": "InvalidAccessKeyId.NotFound",
                "Message": "Specified access key is not found.",
            }
        if query["Signature"] != aliyun_expected_signature(query, SECRETS["TEST_ALIYUN_SECRET"]):
            return 400, {
                "Code": "SignatureDoesNotMatch",
                "Message": "Specified signature is not matched",
            }
        if query["SignatureNonce"] in nonces:
            return 400, {
                "Code": "SignatureNonceUsed",
                "Message": "Specified signature nonce was used already.",
            }
        nonces.add(query["SignatureNonce"])
        assert query["Action"] == action and query["Version"] == "2017-05-25"
        assert query["Timestamp"] == "2026-11-02T00:00:00Z"
        return 200, {"Code": "OK", "Message": "OK", "RequestId": "req-1", **answer}

    return handle


def test_aliyun_sms_request_is_signed_the_way_aliyun_checks_it(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    server = http_server(aliyun_server("SendSms", {"BizId": "900619746936498440^0"}))
    configure(
        db,
        place,
        "sms",
        "aliyun",
        access_key_id="LTAI-test",
        sign_name="示例物业",
        base_url=server.url,
        secret_refs={"access_key_secret": "TEST_ALIYUN_SECRET"},
        templates={
            "balance_alarm": {
                "code": "SMS_465391234",
                "params": ["customer", "place", "balance", "threshold", "level_name"],
            }
        },
    )
    with db.transaction() as conn:
        alarm(conn, place, clock())
    deliver(db)

    row = rows(db)[0]
    assert (row["status"], row["provider_message_id"]) == ("sent", "900619746936498440^0")
    [request] = server.requests
    assert request.query["PhoneNumbers"] == "13900000000"
    assert (
        request.query["SignName"] == "示例物业" and request.query["TemplateCode"] == "SMS_465391234"
    )
    assert request.query["OutId"] == f"md{row['id']}"
    assert json.loads(request.query["TemplateParam"]) == {
        "customer": "张伟",
        "place": "房间A-105",
        "balance": "12.30",
        "threshold": "20.00",
        "level_name": "一级",
    }


def test_aliyun_voice_call_by_tts_is_signed_and_sent(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    server = http_server(aliyun_server("SingleCallByTts", {"CallId": "116012354148^10281378****"}))
    configure(
        db,
        place,
        "voice",
        "aliyun",
        access_key_id="LTAI-test",
        base_url=server.url,
        called_show_number="057112345678",
        play_times=3,
        secret_refs={"access_key_secret": "TEST_ALIYUN_SECRET"},
        templates={"supply_cut": {"code": "TTS_100001", "params": ["place", "balance"]}},
    )
    cut(db, place, clock)
    deliver(db)

    row = rows(db)[0]
    assert (row["status"], row["provider_message_id"]) == ("sent", "116012354148^10281378****")
    query = server.requests[0].query
    assert (query["CalledNumber"], query["CalledShowNumber"], query["PlayTimes"]) == (
        "13900000000",
        "057112345678",
        "3",
    )
    assert json.loads(query["TtsParam"]) == {"place": "房间A-105", "balance": "-0.20"}


def test_aliyun_refuses_a_request_signed_with_the_wrong_secret(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    server = http_server(aliyun_server("SendSms", {}))
    configure(
        db,
        place,
        "sms",
        "aliyun",
        access_key_id="LTAI-test",
        sign_name="s",
        base_url=server.url,
        secret_refs={"access_key_secret": "TEST_WRONG_SECRET"},
        templates={"balance_alarm": "SMS_1"},
    )
    with db.transaction() as conn:
        alarm(conn, place, clock())
    deliver(db)
    row = rows(db)[0]
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert (
        row["last_error"]
        == "aliyun SendSms: SignatureDoesNotMatch: Specified signature is not matched"
    )


# --- Tencent ---------------------------------------------------------------------------------


def tencent_expected_authorization(request: Request, secret_key: str) -> tuple[str, str]:
    """(signature the server computes, signature the client sent)."""
    algorithm, _, rest = request.headers["authorization"].partition(" ")
    assert algorithm == "TC3-HMAC-SHA256"
    fields = dict(part.strip().split("=", 1) for part in rest.split(","))
    _secret_id, day, service_name, terminator = fields["Credential"].split("/")
    assert terminator == "tc3_request"
    timestamp = int(request.headers["x-tc-timestamp"])
    assert day == datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    names = fields["SignedHeaders"].split(";")
    canonical_headers = "".join(f"{n}:{request.headers[n].strip().lower()}\n" for n in names)
    canonical = "\n".join(
        [
            "POST",
            "/",
            "",
            canonical_headers,
            fields["SignedHeaders"],
            hashlib.sha256(request.body).hexdigest(),
        ]
    )
    to_sign = "\n".join(
        [
            "TC3-HMAC-SHA256",
            str(timestamp),
            f"{day}/{service_name}/tc3_request",
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )

    def mac(key: bytes, text: str) -> bytes:
        return hmac.new(key, text.encode(), hashlib.sha256).digest()

    key = mac(mac(mac(f"TC3{secret_key}".encode(), day), service_name), "tc3_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), fields["Signature"]


def tencent_server(
    action: str, service_name: str, answer: dict[str, Any]
) -> Callable[[Request], Answer]:
    def handle(request: Request) -> Answer:
        expected, sent = tencent_expected_authorization(request, SECRETS["TEST_TENCENT_SECRET"])
        if f"/{service_name}/" not in request.headers["authorization"] or expected != sent:
            error = {
                "Code": "AuthFailure.SignatureFailure",
                "Message": "The provided credentials could not be validated.",
            }
            return 200, {"Response": {"Error": error, "RequestId": "r-1"}}
        assert request.headers["x-tc-action"] == action
        assert request.headers["content-type"] == "application/json; charset=utf-8"
        return 200, {"Response": {**answer, "RequestId": "r-2"}}

    return handle


def test_tencent_sms_request_is_signed_the_way_tencent_checks_it(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    status = {
        "SerialNo": "5000:1045710669157053657849499619",
        "PhoneNumber": "+8613900000000",
        "Code": "Ok",
        "Message": "send success",
    }
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
            "balance_alarm": {
                "code": "1234567",
                "params": ["customer", "place", "balance", "threshold"],
            }
        },
    )
    with db.transaction() as conn:
        alarm(conn, place, clock())
    deliver(db)

    row = rows(db)[0]
    assert (row["status"], row["provider_message_id"]) == ("sent", status["SerialNo"])
    [request] = server.requests
    assert (
        request.headers["x-tc-version"] == "2021-01-11"
        and request.headers["x-tc-region"] == "ap-guangzhou"
    )
    assert request.headers["x-tc-timestamp"] == str(int(clock().timestamp()))
    assert json.loads(request.body) == {
        "PhoneNumberSet": ["+8613900000000"],
        "SmsSdkAppId": "1400006666",
        "SignName": "示例物业",
        "TemplateId": "1234567",
        "TemplateParamSet": ["张伟", "房间A-105", "12.30", "20.00"],
        "SessionContext": f"md{row['id']}",
    }


def test_tencent_voice_tts_is_signed_and_sent(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    answer = {
        "SendStatus": {"CallId": "12582bce-4b66-11ea-b7ff-5254000a4d7c", "SessionContext": "x"}
    }
    server = http_server(tencent_server("SendTtsVoice", "vms", answer))
    configure(
        db,
        place,
        "voice",
        "tencent",
        secret_id="AKID-test",  # noqa: S106 - a key id
        voice_sdk_app_id="1400006666",
        base_url=server.url,
        secret_refs={"secret_key": "TEST_TENCENT_SECRET"},
        templates={"supply_cut": {"code": "4356", "params": ["balance"]}},
    )
    cut(db, place, clock)
    deliver(db)

    row = rows(db)[0]
    assert (row["status"], row["provider_message_id"]) == (
        "sent",
        "12582bce-4b66-11ea-b7ff-5254000a4d7c",
    )
    body = json.loads(server.requests[0].body)
    assert body["TemplateId"] == "4356" and body["TemplateParamSet"] == ["-0.20"]
    assert body["CalledNumber"] == "+8613900000000" and body["PlayTimes"] == 2


def test_tencent_refuses_a_request_signed_with_the_wrong_secret(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    server = http_server(tencent_server("SendSms", "sms", {}))
    configure(
        db,
        place,
        "sms",
        "tencent",
        secret_id="AKID-test",  # noqa: S106 - a key id
        sdk_app_id="1",
        sign_name="s",
        base_url=server.url,
        secret_refs={"secret_key": "TEST_WRONG_SECRET"},
        templates={"balance_alarm": {"code": "1", "params": []}},
    )
    with db.transaction() as conn:
        alarm(conn, place, clock())
    deliver(db)
    row = rows(db)[0]
    assert row["status"] == "failed"
    assert row["last_error"].startswith("tencent SendSms: AuthFailure.SignatureFailure")


# --- numbers as stored --------------------------------------------------------------------------


def _store_phone(db: Database, place: Place, phone: str) -> None:
    """A number written as it was before numbers were checked on entry (no service accepts it
    now)."""
    with db.transaction() as conn:
        conn.execute(
            update(customers).where(customers.c.id == place.customer_id).values(phone=phone)
        )


def _aliyun_sms(
    db: Database, place: Place, server: Server, templates: dict[str, Any] | None = None
) -> None:
    configure(
        db,
        place,
        "sms",
        "aliyun",
        access_key_id="LTAI-test",
        sign_name="示例物业",
        base_url=server.url,
        secret_refs={"access_key_secret": "TEST_ALIYUN_SECRET"},
        templates=templates or {"balance_alarm": "SMS_465391234"},
    )


def test_a_number_stored_before_the_check_is_still_sent_in_the_providers_form(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    _store_phone(db, place, "139 0000-0000")
    server = http_server(aliyun_server("SendSms", {"BizId": "b-1"}))
    _aliyun_sms(db, place, server)
    with db.transaction() as conn:
        alarm(conn, place, clock())
    deliver(db)

    assert rows(db)[0]["status"] == "sent"
    assert [request.query["PhoneNumbers"] for request in server.requests] == ["13900000000"]


@pytest.mark.parametrize("stored", ["139", "138 0013 800", "+86 12345"])
def test_a_stored_number_the_provider_cannot_use_fails_with_the_reason_and_is_not_sent(
    db: Database, clock: FakeClock, http_server: Callable[..., Server], stored: str
) -> None:
    """Before, "138 0013 800" went to the provider as 1380013800 (and the provider's refusal came
    back, or one digit off a real number, somebody else's phone rang)."""
    place = make_place(db)
    _store_phone(db, place, stored)
    server = http_server(aliyun_server("SendSms", {"BizId": "b-1"}))
    _aliyun_sms(db, place, server)
    with db.transaction() as conn:
        alarm(conn, place, clock())
    deliver(db)

    [row] = rows(db)
    assert row["status"] == "failed" and row["address"] == stored
    assert row["last_error"].startswith(f"sms: cannot send to the stored number (phone: {stored!r}")
    assert server.requests == []


# --- landlines: SMS cannot reach them, voice can -------------------------------------------------

LANDLINE_REASON = (
    "sms: landline: SMS cannot reach +86 10 6552 9988; use voice or add a mobile number"
)


def _attempt_errors(db: Database, outbox_id: int) -> list[str | None]:
    with db.read() as conn:
        found = conn.execute(
            select(notification_log.c.error).where(notification_log.c.outbox_id == outbox_id)
        )
        return list(found.scalars())


def test_an_sms_to_a_landline_fails_at_once_with_the_reason_and_the_call_still_goes(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    """Before, the SMS went to Aliyun, which refused it in its own words, and the tenant's cut
    warning never came. The voice call of the same event reaches the landline."""
    place = make_place(db)
    _store_phone(db, place, "+861065529988")  # a Beijing fixed line, accepted on entry
    sms_server = http_server(aliyun_server("SendSms", {"BizId": "b-1"}))
    voice_server = http_server(aliyun_server("SingleCallByTts", {"CallId": "c-1"}))
    _aliyun_sms(db, place, sms_server, templates={"supply_cut": "SMS_465391235"})
    configure(
        db,
        place,
        "voice",
        "aliyun",
        access_key_id="LTAI-test",
        base_url=voice_server.url,
        secret_refs={"access_key_secret": "TEST_ALIYUN_SECRET"},
        templates={"supply_cut": "TTS_100001"},
    )
    cut(db, place, clock)
    deliver(db)

    by_channel = {row["channel"]: row for row in rows(db)}
    sms, voice = by_channel["sms"], by_channel["voice"]
    assert (sms["status"], sms["attempts"], sms["last_error"]) == ("failed", 1, LANDLINE_REASON)
    assert _attempt_errors(db, sms["id"]) == [LANDLINE_REASON]
    assert sms_server.requests == []  # the provider was never asked
    assert voice["status"] == "sent"
    assert [request.query["CalledNumber"] for request in voice_server.requests] == ["1065529988"]


def test_a_tencent_sms_to_a_landline_fails_the_same_way_without_a_request(
    db: Database, clock: FakeClock, http_server: Callable[..., Server]
) -> None:
    place = make_place(db)
    _store_phone(db, place, "+861065529988")
    server = http_server(tencent_server("SendSms", "sms", {"SendStatusSet": [{"Code": "Ok"}]}))
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
        templates={"balance_alarm": {"code": "1234567", "params": ["customer"]}},
    )
    with db.transaction() as conn:
        alarm(conn, place, clock())
    deliver(db)

    [row] = rows(db)
    assert (row["status"], row["attempts"], row["last_error"]) == ("failed", 1, LANDLINE_REASON)
    assert server.requests == []


@pytest.mark.parametrize(
    ("stored", "sent"),
    [
        ("+8613900000000", "13900000000"),  # a mainland mobile
        ("+85261234567", "85261234567"),  # a Hong Kong mobile
        ("+12015550123", "12015550123"),  # US: fixed or mobile cannot be told, so it is sent
    ],
)
def test_an_sms_to_a_number_that_may_be_a_mobile_is_still_sent(
    db: Database, clock: FakeClock, http_server: Callable[..., Server], stored: str, sent: str
) -> None:
    place = make_place(db)
    _store_phone(db, place, stored)
    server = http_server(aliyun_server("SendSms", {"BizId": "b-1"}))
    _aliyun_sms(db, place, server)
    with db.transaction() as conn:
        alarm(conn, place, clock())
    deliver(db)

    assert rows(db)[0]["status"] == "sent"
    assert [request.query["PhoneNumbers"] for request in server.requests] == [sent]
