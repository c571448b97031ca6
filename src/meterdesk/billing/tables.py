"""Customer accounts (电户), meter assignments, presets, priced charge lines, and the running
totals per meter, account and billing month that make running-total rounding exact."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
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
from meterdesk.metering.tables import LINE_PLACES

QUANTITY_PLACES = LINE_PLACES  # lines on reading rows (billing.lines) keep the same places

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False, index=True),
    Column("number", String(64), nullable=False),
    Column("customer_id", ForeignKey("customers.id"), nullable=False, index=True),
    Column("room_id", ForeignKey("rooms.id"), nullable=True, index=True),
    Column("status", String(20), nullable=False),
    Column("billing_mode", String(20), nullable=False),
    # What the tenant buys (F-MODE): 'money', or 'quantity' (购量: kWh or m³ at the price in
    # force when bought, kept in quantity_lots; the wallet still holds the money).
    Column("credit_unit", String(10), nullable=False, server_default="money"),
    Column("wallet_id", ForeignKey("ledger_accounts.id"), nullable=False),
    Column("arrears_id", ForeignKey("ledger_accounts.id"), nullable=False),
    Column("opened_at", Instant, nullable=False),
    Column("closed_at", Instant, nullable=True),
    Column("opened_by", String(100), nullable=False),
    # The idempotency key of the close (销户) that closed it: one close per key in an
    # organisation, whether or not it refunded anything (its result is in the audit entry).
    Column("close_key", String(150), nullable=True),
    UniqueConstraint("organisation_id", "number"),
    UniqueConstraint("organisation_id", "close_key"),
)

# The quantity a quantity-credit account bought, as the blocks of a tier plan that never resets
# (docs/decisions/0006-quantity-credit.md): rows in id order, a purchase adds blocks (quantity >
# 0 at its unit price), a refund or close takes quantity back off the end (quantity < 0, no
# price). ``remainder`` is the money the purchase or refund left unconverted (less than one
# resolution step), carried into the next purchase; the newest row's is the current one.
# ``bought_by``: on a block, the recharge that bought it (kept when a refund reversed puts it
# back); on a row without a price, the recharge whose blocks it takes out (that recharge
# reversed) instead of taking quantity off the end.
quantity_lots = Table(
    "quantity_lots",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", ForeignKey("accounts.id"), nullable=False, index=True),
    Column("transfer_id", Integer, nullable=True),  # the recharge or refund; None: opening
    Column("quantity", Scaled(QUANTITY_PLACES), nullable=False),
    Column("unit_price", Scaled(QUANTITY_PLACES), nullable=True),
    Column("remainder", ExactDecimal, nullable=False),
    Column("created_at", Instant, nullable=False),
    Column("bought_by", Integer, nullable=True),
)

meter_assignments = Table(
    "meter_assignments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("meter_id", ForeignKey("meters.id"), nullable=False, index=True),
    Column("account_id", ForeignKey("accounts.id"), nullable=False, index=True),
    Column("tariff_id", ForeignKey("tariffs.id"), nullable=False),
    Column("start_at", Instant, nullable=False),
    Column("end_at", Instant, nullable=True),
)

Index(
    "uq_meter_assignments_open",
    meter_assignments.c.meter_id,
    unique=True,
    sqlite_where=meter_assignments.c.end_at.is_(None),
    postgresql_where=meter_assignments.c.end_at.is_(None),
)

# One row per change of a meter's tariff within an open account (改电价): the old assignment ends
# and the new one starts at ``effective_at`` (the meter's latest accepted reading). The key makes
# the change idempotent per organisation; the row is also the change's history.
tariff_changes = Table(
    "tariff_changes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False),
    Column("idempotency_key", String(150), nullable=False),
    Column("account_id", ForeignKey("accounts.id"), nullable=False, index=True),
    Column("meter_id", ForeignKey("meters.id"), nullable=False, index=True),
    Column("from_tariff_id", ForeignKey("tariffs.id"), nullable=False),
    Column("to_tariff_id", ForeignKey("tariffs.id"), nullable=False),
    Column("effective_at", Instant, nullable=False),
    Column("changed_at", Instant, nullable=False),
    Column("changed_by", String(100), nullable=False),
    UniqueConstraint("organisation_id", "idempotency_key"),
)

account_presets = Table(
    "account_presets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False, index=True),
    Column("account_number", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", Instant, nullable=False),
    Column("opened_account_id", ForeignKey("accounts.id"), nullable=True),
    UniqueConstraint("organisation_id", "account_number"),
)

charge_lines = Table(
    "charge_lines",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    # meters.id and accounts.id, without foreign keys: a line is written for every reading, from
    # the assignments the ingest read; neither is ever deleted (docs/decisions/0005-hot-table-references.md)
    Column("meter_id", Integer, nullable=False),
    Column("account_id", Integer, nullable=False),
    Column("interval_start", Instant, nullable=False),
    Column("interval_end", Instant, nullable=False),
    Column("segment_start", Instant, nullable=False),
    Column("segment_end", Instant, nullable=False),
    Column("band", String(12), nullable=False),
    Column("tier_block", Integer, nullable=True),
    Column("tier_key", String(7), nullable=True),
    Column("period_key", String(7), nullable=False),
    Column("quantity", Scaled(QUANTITY_PLACES), nullable=False),
    Column("unit_price", Scaled(QUANTITY_PLACES), nullable=False),
    Column("cost", ExactDecimal, nullable=False),
    Column("version_from", String(10), nullable=False),
    Column("active", Boolean, nullable=False),
)

Index("ix_charge_lines_meter_end", charge_lines.c.meter_id, charge_lines.c.interval_end)

period_totals = Table(
    "period_totals",
    metadata,
    Column("meter_id", ForeignKey("meters.id"), primary_key=True),
    Column("account_id", ForeignKey("accounts.id"), primary_key=True),
    Column("period_key", String(7), primary_key=True),
    Column("quantity", Scaled(QUANTITY_PLACES), nullable=False),
    Column("exact_cost", ExactDecimal, nullable=False),
    Column("posted_fen", BigInteger, nullable=False),
    Column("postings", Integer, nullable=False),
    postgresql_with=UPDATED_IN_PLACE,
)

# -- prepaid control (issue 4) ---------------------------------------------------------------

alarm_plans = Table(
    "alarm_plans",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False),
    Column("name", String(100), nullable=False),
    Column(
        "levels", Text, nullable=False
    ),  # JSON list of alarm levels (see billing.control_config)
    Column("created_at", Instant, nullable=False),
    UniqueConstraint("organisation_id", "name"),
)

friendly_profiles = Table(
    "friendly_profiles",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("windows", Text, nullable=False),  # JSON: [{"start": "20:00", "end": "08:00"}]
    Column("weekends", Boolean, nullable=False),
    Column("holidays", Boolean, nullable=False),
    UniqueConstraint("organisation_id", "name"),
)

site_holidays = Table(
    "site_holidays",
    metadata,
    Column("site_id", ForeignKey("sites.id"), primary_key=True),
    Column("day", String(10), primary_key=True),  # local date, ISO
    Column("name", String(100), nullable=False),
)

# One row per account: its supply policy and the control loop's state. ``version`` grows with
# every change, so decisions and their outbox keys are unique and never made twice.
account_controls = Table(
    "account_controls",
    metadata,
    Column("account_id", ForeignKey("accounts.id"), primary_key=True),
    Column("alarm_plan_id", ForeignKey("alarm_plans.id"), nullable=True),
    Column("alarm_overrides", Text, nullable=True),  # JSON {level: threshold} per account
    Column("friendly_profile_id", ForeignKey("friendly_profiles.id"), nullable=True),
    Column("cut_at", String(10), nullable=False),
    Column("protect", Boolean, nullable=False),
    Column("restore_threshold_fen", BigInteger, nullable=False),
    Column("restore_mode", String(15), nullable=False),
    Column("emergency_credit_fen", BigInteger, nullable=False),
    Column("state", Text, nullable=False),  # JSON ControlState
    # Filters for the hot path: a batch evaluates an account only when its balance is at or below
    # ``watch_fen`` (highest alarm/cut threshold) or its state is ``active`` (off, pending, alarmed).
    Column("watch_fen", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False),
    # What the room-monitoring grid shows and counts (``reports.room_grid``), kept beside the
    # JSON state so the database can filter and count 10,000 rooms without parsing it:
    # on | off | pending (a cut waiting for friendly hours), and the most urgent alarm level sent.
    # No server default: a writer that forgets them fails instead of showing "normal".
    Column("supply", String(10), nullable=False),
    Column("alarm_level", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", Instant, nullable=False),
)
