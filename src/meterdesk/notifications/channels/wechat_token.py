"""WeChat's access token, shared by the official account (公众号) and the mini program (小程序).

Both apps get their token the same way, each with its own appid and secret:
``GET /cgi-bin/token?grant_type=client_credential&appid=…&secret=…`` answers ``access_token``
and ``expires_in`` (seconds). A token is cached per adapter (one per organisation and channel)
and renewed five minutes early; when WeChat says it is invalid or expired (40001, 40014, 42001
— it was renewed elsewhere, or revoked), :meth:`WeChatToken.call` forgets it and tries the call
once more with a fresh one. A second refusal is transient: the message is tried again later.

Also here: WeChat's answer codes as delivery errors (``-1`` busy and the rate limits are
transient; everything else a send answers is permanent unless the adapter knows better).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn

from meterdesk.notifications.channels.base import (
    DeliveryResult,
    HttpOptions,
    PermanentDeliveryError,
    TransientDeliveryError,
    json_body,
    request,
)
from meterdesk.shared.time import Clock, system_clock

BASE_URL = "https://api.weixin.qq.com"
TOKEN_INVALID = frozenset({40001, 40014, 42001})
#: -1 system busy; 45009 / 45011 API rate limits: worth another attempt later.
TRANSIENT_CODES = frozenset({-1, 45009, 45011})


class TokenRejectedError(Exception):
    """WeChat refused the access token a call carried: fetch a new one and try again."""


@dataclass
class WeChatToken:
    """One app's access token, fetched when first needed and kept until shortly before it
    expires. ``channel`` names the adapter in the errors ("wechat", "wechat_mini")."""

    app_id: str
    app_secret: str
    channel: str = "wechat"
    base_url: str = BASE_URL
    http: HttpOptions = field(default_factory=HttpOptions)
    clock: Clock = system_clock
    _token: str | None = None
    _expires_at: datetime | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def url(self, path: str) -> str:
        return f"{self.base_url.rstrip('/')}{path}"

    async def call(self, send: Callable[[str], Awaitable[DeliveryResult]]) -> DeliveryResult:
        """``send(token)``, once more with a fresh token if WeChat rejects the first."""
        try:
            return await send(await self.token())
        except TokenRejectedError:
            self._token = None
            try:
                return await send(await self.token())
            except TokenRejectedError as error:
                raise TransientDeliveryError(
                    f"{self.channel}: access token rejected twice: {error}"
                ) from None

    async def token(self) -> str:
        async with self._lock:
            now = self.clock()
            if self._token and self._expires_at and now < self._expires_at:
                return self._token
            response = await request(
                self.http,
                "GET",
                self.url("/cgi-bin/token"),
                params={
                    "grant_type": "client_credential",
                    "appid": self.app_id,
                    "secret": self.app_secret,
                },
            )
            answer = json_body(response, f"{self.channel} token")
            if "access_token" not in answer:
                code, text = int(answer.get("errcode", -1)), str(answer.get("errmsg", ""))
                raise_for(code, f"{self.channel} token: errcode {code}: {text}")
            lifetime = int(answer.get("expires_in", 7200))
            self._token = str(answer["access_token"])
            self._expires_at = now + timedelta(seconds=max(lifetime - 300, 60))
            return self._token


def answer_code(answer: dict[str, Any]) -> int:
    """The ``errcode`` of a send's answer; a token WeChat refused raises
    :class:`TokenRejectedError` so that :meth:`WeChatToken.call` renews it."""
    code = int(answer.get("errcode", 0))
    if code in TOKEN_INVALID:
        raise TokenRejectedError(f"{code}: {answer.get('errmsg', '')}")
    return code


def raise_for(code: int, error: str) -> NoReturn:
    if code in TRANSIENT_CODES:
        raise TransientDeliveryError(error)
    raise PermanentDeliveryError(error)
