"""Meters, accepted readings, quarantined readings, and each meter's ingest cursor.

``readings`` holds only accepted readings: the billable sequence. Anything suspicious lives in
``quarantine`` with its reason until an operator releases or discards it. A meter's physical
device can be replaced; ``generation`` counts devices, and consumption is never computed across
two generations.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from meterdesk.db.metadata import UPDATED_IN_PLACE, metadata
from meterdesk.db.types import ExactDecimal, Instant, Scaled

REGISTER_PLACES = 4
LINE_PLACES = 6  # a priced line's quantity and unit price (billing.tables.QUANTITY_PLACES)

meters = Table(
    "meters",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False, index=True),
    Column("site_id", ForeignKey("sites.id"), nullable=False, index=True),
    Column("room_id", ForeignKey("rooms.id"), nullable=True, index=True),
    Column("number", String(64), nullable=False),
    Column("utility", String(20), nullable=False),
    Column("kind", String(30), nullable=False),
    Column("protocol", String(20), nullable=False),
    Column("address", String(40), nullable=False),
    Column("bus_id", ForeignKey("buses.id"), nullable=True, index=True),
    Column("device_options", Text, nullable=True),  # JSON: modbus map, CJ/T 188 DI order, …
    Column("ct_ratio", Scaled(2), nullable=False),
    Column("pt_ratio", Scaled(2), nullable=False),
    Column("register_modulus", Scaled(REGISTER_PLACES), nullable=False),
    Column("has_band_registers", Boolean, nullable=False),
    Column("max_rate_per_hour", Scaled(REGISTER_PLACES), nullable=False),
    Column("installed_on", Date, nullable=True),
    Column("generation", Integer, nullable=False),
    Column("created_at", Instant, nullable=False),
    UniqueConstraint("organisation_id", "number"),
    CheckConstraint("ct_ratio > 0 AND pt_ratio > 0", name="positive_ratios"),
    CheckConstraint("register_modulus > 0", name="positive_modulus"),
)

meter_replacements = Table(
    "meter_replacements",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("meter_id", ForeignKey("meters.id"), nullable=False, index=True),
    Column("replaced_at", Instant, nullable=False),
    Column("generation_after", Integer, nullable=False),
    Column("old_address", String(40), nullable=False),
    Column("new_address", String(40), nullable=False),
    Column("actor", String(100), nullable=False),
    UniqueConstraint("meter_id", "generation_after"),
)

_band_columns: list[Column[object]] = [
    Column(f"register_{band}", Scaled(REGISTER_PLACES), nullable=True)
    for band in ("sharp", "peak", "flat", "valley", "deep_valley")
]

readings = Table(
    "readings",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    # meters.id, without a foreign key: written for every reading, and the ingest only writes
    # meters it read in the same transaction; meters are never deleted (docs/decisions/0005-hot-table-references.md)
    Column("meter_id", Integer, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("measured_at", Instant, nullable=False),
    Column("received_at", Instant, nullable=False),
    Column("register_total", Scaled(REGISTER_PLACES), nullable=False),
    *_band_columns,
    Column("source", String(20), nullable=False),
    # The priced line of the interval this reading ends, when billing's fast lane priced it as
    # one line while storing the reading (most readings): a charge line without a row and an
    # index entry of its own. Null when the interval went to ``charge_lines`` (several lines, or
    # priced by the general path) or billed nothing. ``line_active`` turns false when a late
    # reading splits the interval; its new lines then go to ``charge_lines``. Read through
    # ``billing.lines``, never alone. ``line_account_id`` is an accounts.id without a foreign key
    # (docs/decisions/0005-hot-table-references.md).
    Column("line_account_id", Integer, nullable=True),
    Column("line_start", Instant, nullable=True),
    Column("line_band", String(12), nullable=True),
    Column("line_tier_block", Integer, nullable=True),
    Column("line_tier_key", String(7), nullable=True),
    Column("line_period_key", String(7), nullable=True),
    Column("line_quantity", Scaled(LINE_PLACES), nullable=True),
    Column("line_unit_price", Scaled(LINE_PLACES), nullable=True),
    Column("line_cost", ExactDecimal, nullable=True),
    Column("line_version_from", String(10), nullable=True),
    Column("line_active", Boolean, nullable=True),
    # (meter, time, generation): unique, and the index for "readings of a meter around a time"
    UniqueConstraint("meter_id", "measured_at", "generation"),
)

# The last accepted reading of each meter, kept beside the readings so the common case (a new
# reading after the last one) needs one primary-key lookup instead of a scan of the readings.
meter_cursors = Table(
    "meter_cursors",
    metadata,
    Column("meter_id", ForeignKey("meters.id"), primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("measured_at", Instant, nullable=False),
    Column("register_total", Scaled(REGISTER_PLACES), nullable=False),
    *[Column(c.name, Scaled(REGISTER_PLACES), nullable=True) for c in _band_columns],
    postgresql_with=UPDATED_IN_PLACE,
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=True, index=True),
    Column("meter_id", ForeignKey("meters.id"), nullable=True, index=True),
    Column("source_ref", String(200), nullable=False),
    Column("measured_at", Instant, nullable=True),
    Column("received_at", Instant, nullable=False),
    Column("payload", Text, nullable=False),
    Column("reason_code", String(40), nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("fingerprint", String(64), nullable=False, unique=True),
    Column("resolved_by", String(100), nullable=True),
    Column("resolved_at", Instant, nullable=True),
    Column("resolution", String(20), nullable=True),
)

Index("ix_quarantine_status", quarantine.c.organisation_id, quarantine.c.status)
