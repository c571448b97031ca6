"""Aliyun SMS (Dysmsapi ``SendSms``) and voice (Dyvmsapi ``SingleCallByTts``), RPC style.

Signature version 1.0 (HMAC-SHA1), as the provider documents it:

1. every parameter except ``Signature`` — common ones (AccessKeyId, Action, Format, RegionId,
   SignatureMethod, SignatureNonce, SignatureVersion, Timestamp, Version) and the operation's —
   is percent-encoded (UTF-8; ``A-Z a-z 0-9 - _ . ~`` stay, space is ``%20``, never ``+``),
   sorted by name and joined as ``k=v&k=v`` (the canonicalized query string);
2. ``StringToSign = METHOD + "&" + percent("/") + "&" + percent(canonicalized query)``;
3. ``Signature = Base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))``, sent as a parameter.

The functions :func:`canonical_query`, :func:`string_to_sign` and :func:`sign` are pure, so the
known-answer vector from the provider's documentation is a unit test, and the test server checks
requests with the same rules. The outbox id goes out as ``OutId``: Aliyun echoes it in delivery
receipts; it does not deduplicate, so a repeat after a lost response can send twice (at least
once).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any
from urllib.parse import quote

from meterdesk.notifications.channels import provider_templates
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
from meterdesk.shared.contacts import E164
from meterdesk.shared.time import Clock, system_clock

SMS_URL = "https://dysmsapi.aliyuncs.com"
VOICE_URL = "https://dyvmsapi.aliyuncs.com"
API_VERSION = "2017-05-25"
TRANSIENT_CODES = frozenset(
    {"isv.BUSINESS_LIMIT_CONTROL", "isp.SYSTEM_ERROR", "ServiceUnavailable", "InternalError"}
)


def percent_encode(value: str) -> str:
    return quote(value, safe="")  # RFC 3986 unreserved characters only stay as they are


def canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(
        f"{percent_encode(name)}={percent_encode(params[name])}" for name in sorted(params)
    )


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    return f"{method}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def sign(secret: str, method: str, params: Mapping[str, str]) -> str:
    digest = hmac.new(
        f"{secret}&".encode(), string_to_sign(method, params).encode("utf-8"), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def mainland_number(phone: str, channel: str = "sms") -> str:
    """Aliyun wants mainland numbers without +86, others with the country code and no '+'."""
    return _aliyun_form(phone_number(phone, channel))


def sms_mainland_number(phone: str, channel: str = "sms") -> str:
    """As :func:`mainland_number`, refusing a landline (SMS cannot reach it; voice can)."""
    return _aliyun_form(sms_number(phone, channel))


def _aliyun_form(number: E164) -> str:
    return number.national if number.country_code == 86 else str(number).removeprefix("+")


@dataclass(frozen=True)
class TemplateRef:
    code: str
    params: tuple[str, ...] | None  # which values to send; None: all


def template_refs(raw: Mapping[str, Any]) -> dict[str, TemplateRef]:
    """``{"balance_alarm": "SMS_1"}`` or ``{"balance_alarm": {"code": ..., "params": [...]}}``."""
    refs = {}
    for key, value in raw.items():
        if isinstance(value, str):
            refs[key] = TemplateRef(value, None)
        else:
            names = value.get("params")
            refs[key] = TemplateRef(str(value["code"]), None if names is None else tuple(names))
    return refs


@dataclass
class AliyunClient:
    access_key_id: str
    access_key_secret: str
    base_url: str
    region: str = "cn-hangzhou"
    http: HttpOptions = field(default_factory=HttpOptions)
    clock: Clock = system_clock
    nonce: Callable[[], str] = lambda: uuid.uuid4().hex

    def signed_params(self, action: str, params: Mapping[str, str]) -> dict[str, str]:
        common = {
            "AccessKeyId": self.access_key_id,
            "Action": action,
            "Format": "JSON",
            "RegionId": self.region,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": self.nonce(),
            "SignatureVersion": "1.0",
            "Timestamp": self.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": API_VERSION,
        }
        merged = {**common, **params}
        return {"Signature": sign(self.access_key_secret, "GET", merged), **merged}

    async def call(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        signed = self.signed_params(action, params)
        url = f"{self.base_url.rstrip('/')}/?{canonical_query(signed)}"
        response = await request(self.http, "GET", url)
        body = json_body(response, f"aliyun {action}")
        code = str(body.get("Code", ""))
        if code == "OK":
            return body
        error = f"aliyun {action}: {code or response.status_code}: {body.get('Message', '')}"
        if code in TRANSIENT_CODES or code.startswith("Throttling"):
            raise TransientDeliveryError(error)
        raise PermanentDeliveryError(error)


def _values(message: OutgoingMessage, ref: TemplateRef) -> str:
    names = ref.params if ref.params is not None else tuple(sorted(message.values))
    chosen = {name: message.values.get(name, "") for name in names}
    return json.dumps(chosen, ensure_ascii=False, separators=(",", ":"))


def template_params(ref: TemplateRef) -> tuple[str, ...]:
    """The display values a template names; one that sends them all names none in particular."""
    return ref.params or ()


def _template(refs: Mapping[str, TemplateRef], message: OutgoingMessage) -> TemplateRef:
    return provider_templates.choose(refs, message, template_params)


@dataclass
class AliyunSms:
    client: AliyunClient
    sign_name: str
    templates: dict[str, TemplateRef]

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        ref = _template(self.templates, message)
        body = await self.client.call(
            "SendSms",
            {
                "PhoneNumbers": sms_mainland_number(message.address, message.channel),
                "SignName": self.sign_name,
                "TemplateCode": ref.code,
                "TemplateParam": _values(message, ref),
                "OutId": message.idempotency_key,
            },
        )
        return DeliveryResult(provider_message_id=str(body.get("BizId") or "") or None)


@dataclass
class AliyunVoice:
    client: AliyunClient
    templates: dict[str, TemplateRef]
    called_show_number: str | None = None
    play_times: int = 2

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        ref = _template(self.templates, message)
        params = {
            "CalledNumber": mainland_number(message.address, message.channel),
            "TtsCode": ref.code,
            "TtsParam": _values(message, ref),
            "PlayTimes": str(self.play_times),
            "OutId": message.idempotency_key,
        }
        if self.called_show_number:
            params["CalledShowNumber"] = self.called_show_number
        body = await self.client.call("SingleCallByTts", params)
        return DeliveryResult(provider_message_id=str(body.get("CallId") or "") or None)
