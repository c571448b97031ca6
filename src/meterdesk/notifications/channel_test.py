"""A test message (测试消息): an operator checks that a channel really delivers.

Configuring SMTP, an SMS provider or a webhook is easy to get subtly wrong (a wrong port, an
unapproved SMS template, a secret variable not set where ``meterdesk run`` runs), and the first
anyone would hear of it is a tenant cut off without warning. So an operator sends one message
through the channel to an address of their choosing and watches it in the notification log: it
goes through the same outbox, dispatcher, adapter and retries as every other message, so
"sent" means the provider accepted it and "failed" shows the provider's reason.

Each press is a new message (its own event key); the webhook and log channels always send to
their configured target; person channels send to the address given, else to the channel's
first ``operator_addresses`` entry. SMS and voice providers need a template registered for
``channel_test`` like for any other event — a missing one fails with that reason, which is
itself what the test is for.
"""

from __future__ import annotations

import uuid

from meterdesk.audit import service as audit
from meterdesk.db.database import Database
from meterdesk.notifications import model, queueing, recipients
from meterdesk.notifications.configuration import ChannelSetting, channel_setting
from meterdesk.notifications.model import Channel, EventKind
from meterdesk.shared.contacts import normalise_email, normalise_openid, normalise_phone
from meterdesk.shared.errors import ValidationError

MAX_ADDRESS = 200


def send_test_message(
    db: Database,
    *,
    organisation_id: int,
    channel: str,
    address: str | None,
    language: str | None,
    actor: str,
    source: str | None = None,
) -> int:
    """Queue one test message on ``channel`` for immediate delivery; returns its outbox id."""
    which = model.channel(channel)
    chosen_language = model.language(language or model.DEFAULT_LANGUAGE)
    now = db.clock()
    with db.transaction() as conn:
        setting = channel_setting(conn, organisation_id, which)
        if setting is None:
            raise ValidationError(f"{which}: not configured yet — save its settings first")
        if not setting.enabled:
            raise ValidationError(f"{which}: disabled — enable it before sending a test")
        target = _target(setting, address)
        context = recipients.context(conn, organisation_id, None, None, None)
        params = {**context.params, "at": now.isoformat(), "channel": which.value, "actor": actor}
        row = {
            **queueing.outbox_row(EventKind.CHANNEL_TEST, f"test:{uuid.uuid4().hex}", params, now),
            "organisation_id": organisation_id,
            "account_id": None,
            "language": chosen_language,
            "timezone": context.timezone,
            "next_attempt_at": now,
        }
        found = queueing.insert_outbox_row(conn, row, which, target, None)
        if found is None:  # a fresh uuid cannot collide; refuse rather than report a ghost id
            raise ValidationError(f"{which}: the test message could not be queued")
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="notifications.test_message",
            subject=f"channel:{which.value}",
            at=now,
            detail={"address": target, "language": chosen_language, "notification_id": found},
            source=source,
        )
    return found


def _target(setting: ChannelSetting, address: str | None) -> str:
    given = (address or "").strip()
    if len(given) > MAX_ADDRESS:
        raise ValidationError(f"address: at most {MAX_ADDRESS} characters")
    if setting.channel in model.SYSTEM_CHANNELS:
        if given:
            raise ValidationError(
                f"{setting.channel}: a test goes to the configured target; leave the address empty"
            )
        found = recipients.recipients(setting, EventKind.CHANNEL_TEST, _NO_CONTEXT)
        if not found:
            raise ValidationError(f"{setting.channel}: no target configured (set its url)")
        return found[0][0]
    if not given:
        operators = recipients.operator_addresses(setting.config)
        if not operators:
            raise ValidationError(
                f"{setting.channel}: give an address to send the test to "
                f"(or set the channel's operator_addresses)"
            )
        return operators[0]
    if setting.channel is Channel.EMAIL:
        return normalise_email(given, field="address")
    if setting.channel in (Channel.SMS, Channel.VOICE):
        return normalise_phone(given, field="address")
    if setting.channel is Channel.WECHAT_MINI:
        return normalise_openid(given, field="address")
    return given


# System channels ignore the context: their target is in the channel's own settings.
_NO_CONTEXT = recipients.Context(organisation="", timezone="UTC", customer=None, params={})
