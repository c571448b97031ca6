"""App push through a generic HTTP endpoint (a push gateway in front of APNs / FCM / vendor
channels): ``POST <url>`` with ``Authorization: Bearer <token>`` and
``Idempotency-Key: md<outbox id>``, the same on every retry, so a gateway that honours the header
sends once. The body names the target as the customer id (the app registers its devices under
it)::

    {"id": "md42", "to": "17", "title": "…", "body": "…", "event": "alarm_level_1", "data": {…}}

A 2xx answer may carry ``{"id": "…"}``, kept as the provider message id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meterdesk.notifications.channels.base import (
    DeliveryResult,
    HttpOptions,
    OutgoingMessage,
    PermanentDeliveryError,
    request,
)


@dataclass
class HttpPush:
    url: str
    token: str
    http: HttpOptions = field(default_factory=HttpOptions)

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        body = {
            "id": message.idempotency_key,
            "to": message.address,
            "title": message.subject,
            "body": message.text,
            "event": message.event_kind,
            "data": dict(message.values),
        }
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Idempotency-Key": message.idempotency_key,
        }
        response = await request(self.http, "POST", self.url, json=body, headers=headers)
        if response.status_code >= 300:
            raise PermanentDeliveryError(
                f"push: HTTP {response.status_code}: {response.text[:200]}"
            )
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        found = answer.get("id") if isinstance(answer, dict) else None
        return DeliveryResult(provider_message_id=None if found is None else str(found))
