"""Organisations, sites, buildings, floors, rooms and customers."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Integer,
    String,
    Table,
    UniqueConstraint,
    text,
)

from meterdesk.db.metadata import metadata
from meterdesk.db.types import Instant, Scaled

organisations = Table(
    "organisations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("timezone", String(64), nullable=False),
    Column("created_at", Instant, nullable=False),
)

sites = Table(
    "sites",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("created_at", Instant, nullable=False),
    UniqueConstraint("organisation_id", "name"),
)

buildings = Table(
    "buildings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False),
    Column("site_id", ForeignKey("sites.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    UniqueConstraint("site_id", "name"),
)

floors = Table(
    "floors",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False),
    Column("building_id", ForeignKey("buildings.id"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("level", Integer, nullable=False),
    UniqueConstraint("building_id", "name"),
)

rooms = Table(
    "rooms",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False, index=True),
    Column("floor_id", ForeignKey("floors.id"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("area_m2", Scaled(2), nullable=True),
    UniqueConstraint("floor_id", "name"),
)

customers = Table(
    "customers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("phone", String(40), nullable=True),
    Column("email", String(200), nullable=True),
    Column("wechat_openid", String(100), nullable=True),
    # WeChat gives one person a different openid in each app: the mini program's is its own
    Column("wechat_mini_openid", String(100), nullable=True),
    # the language the tenant's messages are written in (notification templates exist for these)
    Column("language", String(10), nullable=False, server_default="zh-CN"),
    # the tenant asked for no deduction summaries (扣费通知): billing/summaries.py passes them by;
    # their alarms and other messages still go out. ``false``: the one default both databases read
    Column("summaries_opt_out", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", Instant, nullable=False),
    CheckConstraint("language IN ('zh-CN', 'en')", name="known_language"),
)
