"""Audit log: who did what to money or supply, when, from where."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, Text

from meterdesk.db.metadata import metadata
from meterdesk.db.types import Instant

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False),
    Column("at", Instant, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("action", String(60), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("detail", Text, nullable=False),
    Column("source", String(100), nullable=True),
)

# The log bounded in time (``since``/``until``), newest first by (at, id), and its CSV export,
# oldest first: read from one end of the range, a page stops after its rows. Through
# (organisation, at) and in id order every page sorted the whole range (``until`` alone: the
# whole history before it); on PostgreSQL the id orders equal times without a sort too.
Index("ix_audit_org_at_id", audit_log.c.organisation_id, audit_log.c.at, audit_log.c.id)
# The log's pages without a time bound (newest first, by id) and filters by action, actor or
# subject: through (organisation, at) they sorted the organisation's whole history for every
# page.
Index("ix_audit_org_id", audit_log.c.organisation_id, audit_log.c.id)
