"""WeChat mini program subscription messages (小程序订阅消息).

A tenant who uses the property's mini program subscribes to a message template there
(``wx.requestSubscribeMessage``); the server may then send them that template:

- the access token comes from the mini program's own appid and secret, the same way as the
  official account's (:class:`~meterdesk.notifications.channels.wechat_token.WeChatToken`);
- ``POST /cgi-bin/message/subscribe/send?access_token=…`` with ``touser`` (the **mini
  program's** openid — WeChat gives the same person another openid in each app, so it is the
  customer's ``wechat_mini_openid``, never ``wechat_openid``), ``template_id``, ``data``
  (``{"thing1": {"value": "…"}}``), an optional ``page`` (where tapping the card opens the mini
  program), ``miniprogram_state`` (``formal`` | ``trial`` | ``developer``) and ``lang``
  (``zh_CN`` | ``en_US``, from the message's language).

Answers: 0 sent; 40001 / 40014 / 42001 the token, renewed once; -1 busy (tried again later);
43101 the tenant refused the template or has no subscription left — a one-time subscription
is used up by one message — which no retry can change: the message fails with a reason that
says the tenant must subscribe again in the mini program; 40003 invalid openid, 40037 invalid
template and 47003 invalid field values fail at once with the reason too.

Field values: each field's type is the prefix of its name (``thing1`` is a ``thing``). A
``thing`` takes at most 20 characters; a room name or a notice's subject can be longer, and a
cut text still tells the tenant what it is about, so ``thing`` values are shortened to 19
characters and "…". Other types (``amount``, ``date``, ``phrase``, ``number``…) have formats,
not just lengths: cutting them would change what they say, so they go as they are and WeChat's
47003 says which one does not fit the template.

There is no idempotency key in this API (no ``client_msg_id``): a message whose answer was lost
and is tried again can arrive twice and use up a second subscription.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meterdesk.notifications.channels import provider_templates
from meterdesk.notifications.channels.base import (
    DeliveryResult,
    OutgoingMessage,
    PermanentDeliveryError,
    json_body,
    request,
)
from meterdesk.notifications.channels.wechat import fill, names_in
from meterdesk.notifications.channels.wechat_token import WeChatToken, answer_code, raise_for

STATES = ("formal", "trial", "developer")  # 正式版, 体验版, 开发版
LANG = {"zh-CN": "zh_CN", "en": "en_US"}
THING_LIMIT = 20
_FIELD_TYPE = re.compile(r"([a-z_]+?)\d*$")

#: What an operator has to know about WeChat's permanent refusals, after WeChat's own words.
REASONS = {
    43101: "the tenant refused this message or has no subscription left for it (a one-time "
    "subscription allows one message); they must subscribe again in the mini program",
    40003: "WeChat does not know this openid in the mini program: check the customer's "
    "wechat_mini_openid (the mini program's openid, not the official account's)",
    40037: "the template_id is not one of the mini program's subscription templates",
    47003: "a field's value does not fit its type in the template (amount, date, phrase…)",
}


@dataclass(frozen=True)
class MiniTemplateRef:
    template_id: str
    fields: dict[str, str]  # the template's field → a pattern over display values
    page: str | None = None


def template_refs(raw: Mapping[str, Any]) -> dict[str, MiniTemplateRef]:
    """Subscription templates have only their own fields (no ``first`` / ``remark``), so each
    entry needs ``template_id`` and ``fields``."""
    refs = {}
    for key, value in raw.items():
        if not isinstance(value, Mapping) or not value.get("fields"):
            raise ValueError(f"templates[{key!r}] needs template_id and fields")
        page = value.get("page")
        refs[key] = MiniTemplateRef(str(value["template_id"]), dict(value["fields"]), page)
    return refs


def placeholders(ref: MiniTemplateRef) -> set[str]:
    return names_in([*ref.fields.values(), ref.page or ""])


def state(value: str) -> str:
    if value not in STATES:
        raise ValueError(f"miniprogram_state {value!r} is not one of {', '.join(STATES)}")
    return value


def field_value(name: str, value: str) -> str:
    """``value`` as WeChat accepts it in field ``name``: a ``thing`` cut to its 20 characters."""
    found = _FIELD_TYPE.match(name)
    if found and found.group(1) == "thing" and len(value) > THING_LIMIT:
        return value[: THING_LIMIT - 1] + "…"
    return value


@dataclass
class WeChatMiniSubscribe:
    token: WeChatToken
    templates: dict[str, MiniTemplateRef]
    miniprogram_state: str = "formal"

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        ref = provider_templates.choose(self.templates, message, placeholders)
        body = self.body(message, ref)
        return await self.token.call(lambda token: self._post(token, body))

    def body(self, message: OutgoingMessage, ref: MiniTemplateRef) -> dict[str, Any]:
        values = {**message.values, "subject": message.subject, "text": message.text}
        body: dict[str, Any] = {
            "touser": message.address,
            "template_id": ref.template_id,
            "data": {
                name: {"value": field_value(name, fill(pattern, values))}
                for name, pattern in ref.fields.items()
            },
            "miniprogram_state": self.miniprogram_state,
            "lang": LANG.get(message.language, "zh_CN"),
        }
        if ref.page:
            body["page"] = fill(ref.page, values)
        return body

    async def _post(self, token: str, body: dict[str, Any]) -> DeliveryResult:
        response = await request(
            self.token.http,
            "POST",
            self.token.url("/cgi-bin/message/subscribe/send"),
            params={"access_token": token},
            json=body,
        )
        answer = json_body(response, "wechat_mini subscribe send")
        code = answer_code(answer)
        if code == 0:
            return DeliveryResult(provider_message_id=str(answer.get("msgid", "")) or None)
        said = f"wechat_mini subscribe send: errcode {code}: {answer.get('errmsg', '')}"
        if code in REASONS:
            raise PermanentDeliveryError(f"{said} — {REASONS[code]}")
        raise_for(code, said)
