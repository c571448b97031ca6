"""Notifications that must not get lost, stuck or hidden, on SQLite and PostgreSQL: an SMTP
server's "try again later" on a recipient is retried."""

from __future__ import annotations

from typing import Any

import pytest
from aiosmtpd.controller import Controller
from test_notifications_channels import Inbox, configure, deliver, free_port, rows
from test_notifications_outbox import alarm, make_place

from meterdesk.db.database import Database
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration


# --- SMTP answers per recipient ----------------------------------------------------------------


class RefusingInbox(Inbox):
    """An SMTP server that answers every RCPT with ``answer`` (greylisting, an unknown user)."""

    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer

    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        return self.answer


def _mail_to_refusing_server(db: Database, clock: FakeClock, answer: str) -> dict[str, Any]:
    place = make_place(db)
    port = free_port()
    controller = Controller(RefusingInbox(answer), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        configure(
            db, place, "email", "smtp", host="127.0.0.1", port=port, sender="n@x.example",
            security="none",
        )  # fmt: skip
        with db.transaction() as conn:
            alarm(conn, place, clock())
        deliver(db)
    finally:
        controller.stop()
    return rows(db)[0]


def test_a_greylisted_recipient_smtp_4xx_is_retried_not_failed(
    db: Database, clock: FakeClock
) -> None:
    row = _mail_to_refusing_server(db, clock, "450 4.7.1 Greylisted, please try again later")
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert "450" in row["last_error"] and row["next_attempt_at"] > clock()


def test_a_recipient_the_smtp_server_does_not_know_5xx_fails_with_the_reason(
    db: Database, clock: FakeClock
) -> None:
    row = _mail_to_refusing_server(db, clock, "550 5.1.1 No such user")
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "550" in row["last_error"] and "No such user" in row["last_error"]
