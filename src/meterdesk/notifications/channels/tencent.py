"""Tencent Cloud SMS (``SendSms``, 2021-01-11) and voice messages (VMS ``SendTtsVoice``,
2020-09-02), API 3.0 with the TC3-HMAC-SHA256 signature, as the provider documents it:

1. ``CanonicalRequest = METHOD \\n URI("/") \\n QUERY("" for POST) \\n CanonicalHeaders \\n
   SignedHeaders \\n hex(SHA256(payload))``; canonical headers are ``name:value\\n`` with names
   and values lower-cased and trimmed, sorted by name (``content-type``, ``host``, ...);
2. ``StringToSign = "TC3-HMAC-SHA256" \\n timestamp \\n date/service/tc3_request \\n
   hex(SHA256(CanonicalRequest))`` — the date is the UTC date of the timestamp;
3. the key is derived ``HMAC("TC3" + SecretKey, date)`` → ``HMAC(·, service)`` →
   ``HMAC(·, "tc3_request")``; ``Signature = hex(HMAC(key, StringToSign))``;
4. ``Authorization: TC3-HMAC-SHA256 Credential=SecretId/scope, SignedHeaders=..., Signature=...``.

The pure functions here are checked against the documentation's known-answer vector. The outbox
id goes out as ``SessionContext``, which Tencent echoes back in receipts; Tencent does not
deduplicate on it (at least once).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from meterdesk.notifications.channels import provider_templates
from meterdesk.notifications.channels.aliyun import TemplateRef, template_params
from meterdesk.notifications.channels.base import (
    DeliveryResult,
    HttpOptions,
    OutgoingMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
    json_body,
    phone_number,
    request,
    sms_number,
)
from meterdesk.shared.time import Clock, system_clock

ALGORITHM = "TC3-HMAC-SHA256"
CONTENT_TYPE = "application/json; charset=utf-8"
SIGNED_HEADERS = ("content-type", "host", "x-tc-action")
SMS = ("https://sms.tencentcloudapi.com", "sms", "2021-01-11")
VOICE = ("https://vms.tencentcloudapi.com", "vms", "2020-09-02")
TRANSIENT_PREFIXES = (
    "InternalError",
    "RequestLimitExceeded",
    "ResourceUnavailable",
    "LimitExceeded.PhoneNumberThirtySecondLimit",
    "LimitExceeded.PhoneNumberOneHourLimit",
)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def canonical_request(
    method: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    payload: bytes,
    query: str = "",
) -> str:
    lowered = {name.lower(): value for name, value in headers.items()}
    names = sorted(name.lower() for name in signed_headers)
    canonical_headers = "".join(f"{name}:{lowered[name].strip().lower()}\n" for name in names)
    return "\n".join([method, "/", query, canonical_headers, ";".join(names), sha256_hex(payload)])


def credential_scope(timestamp: int, service: str) -> str:
    day = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    return f"{day}/{service}/tc3_request"


def string_to_sign(timestamp: int, service: str, canonical: str) -> str:
    scope = credential_scope(timestamp, service)
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{sha256_hex(canonical.encode('utf-8'))}"


def signature(secret_key: str, timestamp: int, service: str, to_sign: str) -> str:
    day = credential_scope(timestamp, service).split("/")[0]
    key = _hmac(_hmac(_hmac(f"TC3{secret_key}".encode(), day), service), "tc3_request")
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization(
    *,
    secret_id: str,
    secret_key: str,
    service: str,
    timestamp: int,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    payload: bytes,
) -> str:
    canonical = canonical_request("POST", headers, signed_headers, payload)
    value = signature(secret_key, timestamp, service, string_to_sign(timestamp, service, canonical))
    names = ";".join(sorted(name.lower() for name in signed_headers))
    return (
        f"{ALGORITHM} Credential={secret_id}/{credential_scope(timestamp, service)}, "
        f"SignedHeaders={names}, Signature={value}"
    )


def e164(phone: str, channel: str = "sms") -> str:
    """Tencent wants every number in E.164, +86 included."""
    return str(phone_number(phone, channel))


def sms_e164(phone: str, channel: str = "sms") -> str:
    """As :func:`e164`, refusing a landline (SMS cannot reach it; voice can)."""
    return str(sms_number(phone, channel))


@dataclass
class TencentClient:
    secret_id: str
    secret_key: str
    base_url: str
    service: str
    version: str
    region: str = "ap-guangzhou"
    http: HttpOptions = field(default_factory=HttpOptions)
    clock: Clock = system_clock

    def signed_headers(self, action: str, payload: bytes) -> dict[str, str]:
        url = httpx.URL(self.base_url)
        host = url.host if url.port is None else f"{url.host}:{url.port}"
        timestamp = int(self.clock().timestamp())
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Host": host,
            "X-TC-Action": action,
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Version": self.version,
            "X-TC-Region": self.region,
        }
        headers["Authorization"] = authorization(
            secret_id=self.secret_id,
            secret_key=self.secret_key,
            service=self.service,
            timestamp=timestamp,
            headers=headers,
            signed_headers=SIGNED_HEADERS,
            payload=payload,
        )
        return headers

    async def call(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = self.signed_headers(action, payload)
        response = await request(self.http, "POST", self.base_url, content=payload, headers=headers)
        found = json_body(response, f"tencent {action}").get("Response")
        if not isinstance(found, dict):
            raise TransientDeliveryError(f"tencent {action}: no Response in the answer")
        error = found.get("Error")
        if isinstance(error, dict):
            fail(action, str(error.get("Code", "")), str(error.get("Message", "")))
        return found


def fail(action: str, code: str, message: str) -> None:
    text = f"tencent {action}: {code}: {message}"
    if code.startswith(TRANSIENT_PREFIXES):
        raise TransientDeliveryError(text)
    raise PermanentDeliveryError(text)


def _param_set(message: OutgoingMessage, templates: Mapping[str, TemplateRef]) -> TemplateRef:
    return provider_templates.choose(templates, message, template_params)


def _ordered(message: OutgoingMessage, ref: TemplateRef) -> list[str]:
    return [message.values.get(name, "") for name in ref.params or ()]


@dataclass
class TencentSms:
    client: TencentClient
    sdk_app_id: str
    sign_name: str
    templates: dict[str, TemplateRef]

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        ref = _param_set(message, self.templates)
        answer = await self.client.call(
            "SendSms",
            {
                "PhoneNumberSet": [sms_e164(message.address, message.channel)],
                "SmsSdkAppId": self.sdk_app_id,
                "SignName": self.sign_name,
                "TemplateId": ref.code,
                "TemplateParamSet": _ordered(message, ref),
                "SessionContext": message.idempotency_key,
            },
        )
        statuses = answer.get("SendStatusSet") or [{}]
        status = statuses[0]
        if status.get("Code") != "Ok":
            fail("SendSms", str(status.get("Code", "")), str(status.get("Message", "")))
        return DeliveryResult(provider_message_id=str(status.get("SerialNo") or "") or None)


@dataclass
class TencentVoice:
    client: TencentClient
    voice_sdk_app_id: str
    templates: dict[str, TemplateRef]
    play_times: int = 2

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        ref = _param_set(message, self.templates)
        answer = await self.client.call(
            "SendTtsVoice",
            {
                "TemplateId": ref.code,
                "CalledNumber": e164(message.address, message.channel),
                "VoiceSdkAppid": self.voice_sdk_app_id,
                "TemplateParamSet": _ordered(message, ref),
                "PlayTimes": self.play_times,
                "SessionContext": message.idempotency_key,
            },
        )
        status = answer.get("SendStatus") or {}
        return DeliveryResult(provider_message_id=str(status.get("CallId") or "") or None)
