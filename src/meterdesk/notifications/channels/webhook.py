"""Signed webhooks: an organisation's own system hears about every event it subscribed to.

The request is ``POST <url>`` with a JSON body and these headers:

- ``X-Meterdesk-Timestamp``: seconds since the epoch when the request was signed;
- ``X-Meterdesk-Signature``: ``v1=`` + hex HMAC-SHA256, keyed with the shared secret, over
  ``timestamp + "." + body`` (the raw body bytes, exactly as received);
- ``X-Meterdesk-Delivery``: the outbox id, the same on every retry — a receiver that has seen it
  does nothing (delivery is at least once).

A receiver checks a request with :func:`verify_webhook` (it refuses a wrong signature and a
timestamp more than five minutes away from its clock, which stops replays of old requests).
``X-Meterdesk-Signature`` may carry several comma-separated ``v1=`` values while a secret is
being rotated; one match is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from meterdesk.notifications.channels.base import (
    DeliveryResult,
    HttpOptions,
    OutgoingMessage,
    PermanentDeliveryError,
    request,
)
from meterdesk.shared.time import Clock, system_clock

TIMESTAMP_HEADER = "X-Meterdesk-Timestamp"
SIGNATURE_HEADER = "X-Meterdesk-Signature"
DELIVERY_HEADER = "X-Meterdesk-Delivery"
TOLERANCE_S = 300


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode("ascii") + b"." + body
    return "v1=" + hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def verify_webhook(
    *,
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    now: datetime | None = None,
    tolerance_s: int = TOLERANCE_S,
) -> bool:
    """True when ``signature`` (the ``X-Meterdesk-Signature`` header) is a valid signature of
    ``body`` at ``timestamp`` (the ``X-Meterdesk-Timestamp`` header) and the timestamp is within
    ``tolerance_s`` of ``now``. Compares in constant time."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    current = (now or datetime.now(UTC)).timestamp()
    if abs(current - sent_at) > tolerance_s:
        return False
    expected = sign_webhook(secret, sent_at, body)
    candidates = [part.strip() for part in signature.split(",")]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def webhook_body(message: OutgoingMessage) -> bytes:
    document = {
        "id": str(message.outbox_id),
        "event": message.event_kind,
        "organisation_id": message.organisation_id,
        "created_at": message.created_at.isoformat(),
        "language": message.language,
        "data": dict(message.params),
        "text": message.text,
    }
    return json.dumps(document, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8")


@dataclass
class Webhook:
    secret: str
    http: HttpOptions = field(default_factory=HttpOptions)
    clock: Clock = system_clock

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        body = webhook_body(message)
        timestamp = int(self.clock().timestamp())
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign_webhook(self.secret, timestamp, body),
            DELIVERY_HEADER: str(message.outbox_id),
        }
        response = await request(self.http, "POST", message.address, content=body, headers=headers)
        if response.status_code >= 300:
            raise PermanentDeliveryError(
                f"webhook {message.address}: HTTP {response.status_code}: {response.text[:200]}"
            )
        return DeliveryResult(provider_message_id=response.headers.get("X-Request-Id"))
