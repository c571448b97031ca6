"""Tariffs and their immutable, dated versions (the definition is stored as JSON text)."""

from __future__ import annotations

from sqlalchemy import Column, Date, ForeignKey, Integer, String, Table, Text, UniqueConstraint

from meterdesk.db.metadata import metadata
from meterdesk.db.types import Instant

tariffs = Table(
    "tariffs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("utility", String(20), nullable=False),
    Column("created_at", Instant, nullable=False),
    UniqueConstraint("organisation_id", "name"),
)

tariff_versions = Table(
    "tariff_versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tariff_id", ForeignKey("tariffs.id"), nullable=False, index=True),
    Column("effective_from", Date, nullable=False),
    Column("definition", Text, nullable=False),
    Column("created_at", Instant, nullable=False),
    Column("created_by", String(100), nullable=False),
    UniqueConstraint("tariff_id", "effective_from"),
)
