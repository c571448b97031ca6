"""The port every channel adapter implements, and the two ways a delivery can fail.

An adapter gets one :class:`OutgoingMessage` (already rendered) and either returns a
:class:`DeliveryResult` or raises :class:`TransientDeliveryError` (try again later: network,
timeouts, 5xx, provider throttling) or :class:`PermanentDeliveryError` (retrying cannot help: an
invalid number, a rejected template, a 4xx). Library exceptions never leave an adapter.

``OutgoingMessage.idempotency_key`` is derived from the outbox id and is the same on every
attempt; adapters pass it to providers that deduplicate (WeChat ``client_msg_id``, the push
endpoint's ``Idempotency-Key``, the webhook's ``X-Meterdesk-Delivery``) or that echo it back
for matching receipts (Aliyun ``OutId``, Tencent ``SessionContext``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import httpx

from meterdesk.shared import contacts
from meterdesk.shared.errors import MeterdeskError, ValidationError

#: Looks up a secret by the environment-variable name stored in ``secret_refs``.
SecretSource = Callable[[str], str | None]


class DeliveryError(MeterdeskError):
    """A message could not be delivered."""


class TransientDeliveryError(DeliveryError):
    """Worth another attempt later."""


class PermanentDeliveryError(DeliveryError):
    """Another attempt would fail the same way."""


@dataclass(frozen=True)
class OutgoingMessage:
    outbox_id: int
    organisation_id: int
    event_kind: str
    template_key: str
    channel: str
    address: str
    language: str
    subject: str
    text: str
    voice_text: str
    html: str
    values: Mapping[str, str]
    params: Mapping[str, Any]
    created_at: datetime
    attempt: int = 1

    @property
    def idempotency_key(self) -> str:
        return f"md{self.outbox_id}"


@dataclass(frozen=True)
class DeliveryResult:
    provider_message_id: str | None = None
    detail: str | None = None


class ChannelAdapter(Protocol):
    async def send(self, message: OutgoingMessage) -> DeliveryResult: ...


@dataclass(frozen=True)
class HttpOptions:
    """How adapters reach providers: tests point ``base_url`` at local servers."""

    timeout_s: float = 10.0
    transport: httpx.AsyncBaseTransport | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self.timeout_s, transport=self.transport, headers=self.extra_headers
        )


async def request(options: HttpOptions, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One HTTP call with network errors and 5xx / 429 / 408 turned into transient failures."""
    try:
        async with options.client() as client:
            response = await client.request(method, url, **kwargs)
    except httpx.TimeoutException as error:
        raise TransientDeliveryError(f"{method} {url}: timed out ({error})") from None
    except httpx.HTTPError as error:
        raise TransientDeliveryError(f"{method} {url}: {type(error).__name__}: {error}") from None
    # 408: the server gave up waiting for our request; 429: slow down; 5xx: its trouble.
    if response.status_code in (408, 429) or response.status_code >= 500:
        raise TransientDeliveryError(f"{method} {url}: HTTP {response.status_code}")
    return response


def json_body(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise TransientDeliveryError(
            f"{what}: HTTP {response.status_code}, not JSON: {response.text[:200]!r}"
        ) from None
    if not isinstance(body, dict):
        raise TransientDeliveryError(f"{what}: unexpected JSON {body!r:.200}")
    return body


def require(config: Mapping[str, Any], name: str, channel: str) -> Any:
    value = config.get(name)
    if value in (None, ""):
        raise PermanentDeliveryError(f"{channel}: setting {name!r} is missing")
    return value


def secret(secrets: SecretSource, refs: Mapping[str, str], name: str, channel: str) -> str:
    """A secret's value from the environment variable ``refs[name]`` names. Missing is
    transient: the operator sets the variable and restarts, and waiting messages still go."""
    variable = refs.get(name)
    if not variable:
        raise PermanentDeliveryError(f"{channel}: secret_refs has no {name!r}")
    value = secrets(variable)
    if not value:
        raise TransientDeliveryError(f"{channel}: environment variable {variable} is not set")
    return value


def phone_number(address: str, channel: str) -> contacts.E164:
    """The stored number ``address`` read for a provider. Numbers are stored as E.164 since they
    are checked on entry; one stored before (``139 0000 0000``) is read as it would be entered
    now. One that cannot be read is refused with the reason, never sent somewhere else."""
    try:
        return contacts.E164.of(address)
    except ValidationError as error:
        raise PermanentDeliveryError(
            f"{channel}: cannot send to the stored number ({error}); correct it"
        ) from None


def sms_number(address: str, channel: str) -> contacts.E164:
    """As :func:`phone_number`, for an SMS: a landline is refused here, before the provider is
    asked. The provider would refuse it too, but with its own words (or after a retry), so the
    log would not say why the tenant's alarm never came; a voice call reaches the same number,
    and the voice channel is not affected. Only a number libphonenumber knows to be a fixed line
    is refused: one that may be a mobile (``FIXED_LINE_OR_MOBILE``) is sent as before."""
    number = phone_number(address, channel)
    if contacts.is_landline(str(number)):
        raise PermanentDeliveryError(
            f"{channel}: landline: SMS cannot reach {contacts.readable(str(number))}; "
            f"use voice or add a mobile number"
        )
    return number
