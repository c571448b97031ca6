"""WeChat official-account template messages (公众号模板消息).

- ``GET /cgi-bin/token?grant_type=client_credential&appid=…&secret=…`` gives an access token
  valid for ``expires_in`` seconds; it is cached per adapter (one per organisation) and renewed
  five minutes early, or at once when WeChat says it is invalid or expired (40001, 40014, 42001
  — then the send is tried once more with a fresh token).
- ``POST /cgi-bin/message/template/send?access_token=…`` with ``touser`` (the openid),
  ``template_id``, ``data`` (``{"field": {"value": "…"}}``), an optional ``url``, and
  ``client_msg_id`` — WeChat sends one message per openid + client_msg_id within ten minutes,
  so passing the outbox id there makes a quick repeat harmless.

Each template's fields are configured as patterns over the message's display values, e.g.
``{"thing1": "{room}", "amount2": "{balance}元"}``; ``{subject}`` and ``{text}`` are the rendered
subject and body. Only plain ``{name}`` placeholders are substituted.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from meterdesk.notifications.channels import provider_templates
from meterdesk.notifications.channels.base import (
    DeliveryResult,
    HttpOptions,
    OutgoingMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
    json_body,
    request,
)
from meterdesk.shared.time import Clock, system_clock

BASE_URL = "https://api.weixin.qq.com"
TOKEN_INVALID = frozenset({40001, 40014, 42001})
TRANSIENT_CODES = frozenset({-1, 45009, 45011})
DEFAULT_FIELDS = {"first": "{subject}", "remark": "{text}"}
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class WeChatTemplateRef:
    template_id: str
    fields: dict[str, str]
    url: str | None = None


def template_refs(raw: Mapping[str, Any]) -> dict[str, WeChatTemplateRef]:
    refs = {}
    for key, value in raw.items():
        if isinstance(value, str):
            refs[key] = WeChatTemplateRef(value, dict(DEFAULT_FIELDS))
        else:
            fields = dict(value.get("fields") or DEFAULT_FIELDS)
            refs[key] = WeChatTemplateRef(str(value["template_id"]), fields, value.get("url"))
    return refs


def placeholders(ref: WeChatTemplateRef) -> set[str]:
    """The display values a template's fields and link name."""
    patterns = [*ref.fields.values(), ref.url or ""]
    return {name for pattern in patterns for name in _PLACEHOLDER.findall(pattern)}


def fill(pattern: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda match: values.get(match.group(1), ""), pattern)


class _TokenRejectedError(Exception):
    pass


@dataclass
class WeChatTemplate:
    app_id: str
    app_secret: str
    templates: dict[str, WeChatTemplateRef]
    base_url: str = BASE_URL
    http: HttpOptions = field(default_factory=HttpOptions)
    clock: Clock = system_clock
    _token: str | None = None
    _expires_at: datetime | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        ref = provider_templates.choose(self.templates, message, placeholders)
        body = self._body(message, ref)
        try:
            return await self._post(await self.token(), body)
        except _TokenRejectedError:
            self._token = None
            try:
                return await self._post(await self.token(), body)
            except _TokenRejectedError as error:
                raise TransientDeliveryError(
                    f"wechat: access token rejected twice: {error}"
                ) from None

    def _body(self, message: OutgoingMessage, ref: WeChatTemplateRef) -> dict[str, Any]:
        values = {**message.values, "subject": message.subject, "text": message.text}
        body: dict[str, Any] = {
            "touser": message.address,
            "template_id": ref.template_id,
            "data": {
                name: {"value": fill(pattern, values)} for name, pattern in ref.fields.items()
            },
            "client_msg_id": message.idempotency_key,
        }
        if ref.url:
            body["url"] = fill(ref.url, values)
        return body

    async def token(self) -> str:
        async with self._lock:
            now = self.clock()
            if self._token and self._expires_at and now < self._expires_at:
                return self._token
            response = await request(
                self.http,
                "GET",
                f"{self.base_url.rstrip('/')}/cgi-bin/token",
                params={
                    "grant_type": "client_credential",
                    "appid": self.app_id,
                    "secret": self.app_secret,
                },
            )
            answer = json_body(response, "wechat token")
            if "access_token" not in answer:
                _raise(int(answer.get("errcode", -1)), str(answer.get("errmsg", "")), "token")
            lifetime = int(answer.get("expires_in", 7200))
            self._token = str(answer["access_token"])
            self._expires_at = now + timedelta(seconds=max(lifetime - 300, 60))
            return self._token

    async def _post(self, token: str, body: dict[str, Any]) -> DeliveryResult:
        response = await request(
            self.http,
            "POST",
            f"{self.base_url.rstrip('/')}/cgi-bin/message/template/send",
            params={"access_token": token},
            json=body,
        )
        answer = json_body(response, "wechat template send")
        code = int(answer.get("errcode", 0))
        if code in TOKEN_INVALID:
            raise _TokenRejectedError(f"{code}: {answer.get('errmsg', '')}")
        if code != 0:
            _raise(code, str(answer.get("errmsg", "")), "template send")
        return DeliveryResult(provider_message_id=str(answer.get("msgid", "")) or None)


def _raise(code: int, text: str, what: str) -> None:
    error = f"wechat {what}: errcode {code}: {text}"
    if code in TRANSIENT_CODES:
        raise TransientDeliveryError(error)
    raise PermanentDeliveryError(error)
