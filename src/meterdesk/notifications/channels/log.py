"""The demo's channel: writes each message as one line to a stream (stdout by default); the
dispatcher keeps the rendered text in the notification log's ``detail``."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO

from meterdesk.notifications.channels.base import DeliveryResult, OutgoingMessage


@dataclass
class LogChannel:
    stream: TextIO = field(default_factory=lambda: sys.stdout)

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        line = f"[notify {message.event_kind} → {message.address}] {message.text}"
        print(line, file=self.stream, flush=True)
        return DeliveryResult(provider_message_id=f"log-{message.outbox_id}", detail=message.text)
