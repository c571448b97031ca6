"""Notification outbox, delivery log, channel settings and quiet hours.

- ``notification_outbox``: one row per (event, recipient, channel), written in the transaction
  that caused the event; ``dedupe_key`` is unique, so the same event for the same recipient and
  channel is queued once. Params are a JSON snapshot; the text is rendered at delivery, so a
  fixed template also fixes messages still waiting. ``next_attempt_at`` is when the row is due
  (``pending``) or when a worker's claim expires (``sending``): a worker that dies mid-send
  leaves the row to be claimed again (at-least-once).
- ``notification_log``: every delivery attempt and its result, append-only.
- ``notification_channel_settings``: per organisation and channel, whether it is enabled, which
  provider, non-secret settings (JSON), and ``secret_refs`` — the *names* of the environment
  variables that hold the secrets. Secret values never go into the database.
- ``notification_quiet_hours``: per organisation, a daily window of local wall time.
- ``notices``: the system notices (系统通知) operators sent to the tenants of a scope; their
  messages are outbox rows with event ``system_notice`` and event key
  ``notice:<id>:customer:<customer id>``, due at once or at the notice's ``send_at``; a
  cancelled notice's messages that had not gone out are ``cancelled`` (a final status).
- ``notification_summaries``: per organisation, how often its tenants get a deduction summary
  (扣费通知); no row: never (the default, since every summary is an SMS someone pays for).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from meterdesk.db.metadata import metadata
from meterdesk.db.types import Instant

_ID = BigInteger().with_variant(Integer, "sqlite")

notification_outbox = Table(
    "notification_outbox",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False),
    Column("event_kind", String(40), nullable=False),
    Column("event_key", String(200), nullable=False),
    Column("customer_id", ForeignKey("customers.id"), nullable=True, index=True),
    Column("account_id", ForeignKey("accounts.id"), nullable=True, index=True),
    Column("channel", String(20), nullable=False),
    Column("address", String(500), nullable=False),
    Column("language", String(10), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("template_key", String(60), nullable=False),
    Column("params", Text, nullable=False),
    Column("dedupe_key", String(64), nullable=False, unique=True),
    Column("urgency", String(10), nullable=False),
    Column("status", String(12), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Instant, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("provider_message_id", String(200), nullable=True),
    Column("created_at", Instant, nullable=False),
    Column("sent_at", Instant, nullable=True),
    CheckConstraint(
        "status IN ('pending', 'sending', 'sent', 'failed', 'suppressed', 'cancelled')",
        name="status",
    ),
    CheckConstraint("urgency IN ('urgent', 'normal')", name="urgency"),
    CheckConstraint("attempts >= 0", name="attempts"),
)

# The worker's claim query: due rows in order.
Index(
    "ix_notification_outbox_due",
    notification_outbox.c.status,
    notification_outbox.c.next_attempt_at,
)
# The operators' list with a time bound (``since``/``until``), newest first by (created at,
# id): read down from the end of the range, a page stops after its rows. Without the id (and
# ordered by id) every page sorted the whole range; on PostgreSQL the id orders equal times.
Index(
    "ix_notification_outbox_org_created_id",
    notification_outbox.c.organisation_id,
    notification_outbox.c.created_at,
    notification_outbox.c.id,
)
# The operators' list without a time bound (newest first, by id) and its status, channel and
# event filters: through (organisation, created at) every page sorted the organisation's whole
# outbox.
Index(
    "ix_notification_outbox_org_id",
    notification_outbox.c.organisation_id,
    notification_outbox.c.id,
)

# A notice's delivery counts (and any one event's messages): by (event kind, event key), not by
# walking the organisation's whole outbox.
Index(
    "ix_notification_outbox_event",
    notification_outbox.c.event_kind,
    notification_outbox.c.event_key,
)

notification_log = Table(
    "notification_log",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("outbox_id", ForeignKey("notification_outbox.id"), nullable=False, index=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", Instant, nullable=False),
    Column("channel", String(20), nullable=False),
    Column("result", String(12), nullable=False),
    Column("error", Text, nullable=True),
    Column("provider_message_id", String(200), nullable=True),
    Column("detail", Text, nullable=True),
    CheckConstraint(
        "result IN ('sent', 'retry', 'failed', 'deferred', 'suppressed')", name="result"
    ),
)

notification_channel_settings = Table(
    "notification_channel_settings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("provider", String(20), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("events", Text, nullable=True),  # JSON list of event kinds; NULL: every event
    Column("config", Text, nullable=False),  # JSON, non-secret settings
    Column("secret_refs", Text, nullable=False),  # JSON {secret name: environment variable}
    Column("updated_at", Instant, nullable=False),
    Column("updated_by", String(100), nullable=False),
    UniqueConstraint("organisation_id", "channel"),
)

notification_quiet_hours = Table(
    "notification_quiet_hours",
    metadata,
    Column("organisation_id", ForeignKey("organisations.id"), primary_key=True),
    Column("start_local", String(5), nullable=False),  # "22:00", in the site's zone
    Column("end_local", String(5), nullable=False),  # "07:00"
    Column("updated_at", Instant, nullable=False),
    Column("updated_by", String(100), nullable=False),
)

notices = Table(
    "notices",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False),
    Column("scope_kind", String(12), nullable=False),
    Column("scope_ids", Text, nullable=False),  # JSON list of site/building/floor/room ids
    Column("subject", String(60), nullable=False),
    Column("text", Text, nullable=False),  # at most 500 characters (notice_model)
    Column("urgent", Boolean, nullable=False),
    Column("channels", Text, nullable=True),  # JSON list of person channels; NULL: subscribed ones
    Column("idempotency_key", String(100), nullable=False),
    # What makes a repeat "the same notice" (notice_model.NoticeRequest.request_hash).
    Column("request_hash", String(64), nullable=False),
    Column("recipient_count", Integer, nullable=False),  # customers of the open accounts in scope
    Column("created_by", String(100), nullable=False),
    Column("created_at", Instant, nullable=False),
    # A scheduled notice: its messages are due at this instant (NULL: sent at once).
    Column("send_at", Instant, nullable=True),
    # Cancelled: every message of it still waiting became 'cancelled' in the same transaction.
    Column("cancelled_at", Instant, nullable=True),
    Column("cancelled_by", String(100), nullable=True),
    # A double click must not text 300 tenants twice: one notice per key in an organisation.
    UniqueConstraint("organisation_id", "idempotency_key"),
    CheckConstraint(
        "scope_kind IN ('organisation', 'site', 'building', 'floor', 'rooms')", name="scope_kind"
    ),
    CheckConstraint("recipient_count >= 0", name="recipient_count"),
)
# The list, newest first.
Index("ix_notices_org_id", notices.c.organisation_id, notices.c.id)
notification_summaries = Table(
    "notification_summaries",
    metadata,
    Column("organisation_id", ForeignKey("organisations.id"), primary_key=True),
    Column("cadence", String(10), nullable=False),  # daily | monthly ("off" is no row)
    Column("updated_at", Instant, nullable=False),
    Column("updated_by", String(100), nullable=False),
    CheckConstraint("cadence IN ('daily', 'monthly')", name="cadence"),
)
