"""WeChat official-account template messages (公众号模板消息).

- The access token (``GET /cgi-bin/token``) is fetched, cached and renewed by
  :class:`~meterdesk.notifications.channels.wechat_token.WeChatToken`, shared with the mini
  program's channel (``wechat_mini.py``).
- ``POST /cgi-bin/message/template/send?access_token=…`` with ``touser`` (the openid),
  ``template_id``, ``data`` (``{"field": {"value": "…"}}``), an optional ``url``, and
  ``client_msg_id`` — WeChat sends one message per openid + client_msg_id within ten minutes,
  so passing the outbox id there makes a quick repeat harmless.

Each template's fields are configured as patterns over the message's display values, e.g.
``{"thing1": "{room}", "amount2": "{balance}元"}``; ``{subject}`` and ``{text}`` are the rendered
subject and body. Only plain ``{name}`` placeholders are substituted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meterdesk.notifications.channels import provider_templates
from meterdesk.notifications.channels.base import (
    DeliveryResult,
    OutgoingMessage,
    json_body,
    request,
)
from meterdesk.notifications.channels.wechat_token import WeChatToken, answer_code, raise_for

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
    return names_in([*ref.fields.values(), ref.url or ""])


def names_in(patterns: Iterable[str]) -> set[str]:
    """The display values ``{name}`` patterns name."""
    return {name for pattern in patterns for name in _PLACEHOLDER.findall(pattern)}


def fill(pattern: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda match: values.get(match.group(1), ""), pattern)


@dataclass
class WeChatTemplate:
    token: WeChatToken
    templates: dict[str, WeChatTemplateRef]

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        ref = provider_templates.choose(self.templates, message, placeholders)
        body = self._body(message, ref)
        return await self.token.call(lambda token: self._post(token, body))

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

    async def _post(self, token: str, body: dict[str, Any]) -> DeliveryResult:
        response = await request(
            self.token.http,
            "POST",
            self.token.url("/cgi-bin/message/template/send"),
            params={"access_token": token},
            json=body,
        )
        answer = json_body(response, "wechat template send")
        code = answer_code(answer)
        if code != 0:
            raise_for(code, f"wechat template send: errcode {code}: {answer.get('errmsg', '')}")
        return DeliveryResult(provider_message_id=str(answer.get("msgid", "")) or None)
