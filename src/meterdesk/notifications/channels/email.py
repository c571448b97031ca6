"""E-mail over SMTP (stdlib ``smtplib`` in a worker thread, so the event loop never blocks).

Each message is ``multipart/alternative`` (plain text and the autoescaped HTML) with a
``Message-ID`` derived from the outbox id (``<md42.notify@domain>``), the same on every retry,
so mail systems and people can spot a repeat. SMTP has no idempotency of its own: a connection
lost after the server accepted the message but before we heard so can send twice.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate

from meterdesk.notifications.channels.base import (
    DeliveryError,
    DeliveryResult,
    OutgoingMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
)


@dataclass
class SmtpEmail:
    host: str
    port: int
    sender: str
    username: str | None = None
    password: str | None = None
    security: str = "starttls"  # "starttls", "tls" (implicit, port 465) or "none"
    timeout_s: float = 15.0

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        email = self.build(message)
        try:
            await asyncio.to_thread(self._deliver, email)
        except smtplib.SMTPRecipientsRefused as error:
            raise _refused(error.recipients) from None
        except smtplib.SMTPResponseException as error:
            text = f"smtp: {error.smtp_code} {error.smtp_error!r}"
            if 500 <= error.smtp_code < 600:
                raise PermanentDeliveryError(text) from None
            raise TransientDeliveryError(text) from None
        except (smtplib.SMTPException, OSError) as error:
            raise TransientDeliveryError(f"smtp: {type(error).__name__}: {error}") from None
        return DeliveryResult(provider_message_id=email["Message-ID"])

    def build(self, message: OutgoingMessage) -> EmailMessage:
        email = EmailMessage()
        domain = self.sender.rpartition("@")[2] or "meterdesk.local"
        email["Subject"] = message.subject
        email["From"] = self.sender
        email["To"] = message.address
        email["Date"] = formatdate(message.created_at.timestamp(), usegmt=True)
        email["Message-ID"] = f"<{message.idempotency_key}.notify@{domain}>"
        email.set_content(message.text)
        email.add_alternative(message.html, subtype="html")
        return email

    def _deliver(self, email: EmailMessage) -> None:
        context = ssl.create_default_context()
        if self.security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout_s, context=context
            )
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        with client:
            if self.security == "starttls":
                client.starttls(context=context)
            if self.username:
                client.login(self.username, self.password or "")
            client.send_message(email)


def _refused(recipients: dict[str, tuple[int, bytes]]) -> DeliveryError:
    """A refused recipient is permanent only on a 5xx: a 4xx (greylisting, a full mailbox, a
    server busy) says "try again later", and failing it at once lost the message."""
    text = f"smtp: recipient refused: {recipients}"
    if all(500 <= code < 600 for code, _ in recipients.values()):
        return PermanentDeliveryError(text)
    return TransientDeliveryError(text)
