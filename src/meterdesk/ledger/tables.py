"""Double-entry ledger: accounts with balances kept in the same transaction, and append-only
transfers. A transfer moves a positive whole-fen amount from its debit account to its credit
account, so entries always sum to zero. ``balance_fen`` is credits minus debits; a wallet's
floor (its allowed overdraft, ≤ 0) is enforced by a CHECK in the database itself."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    literal_column,
)

from meterdesk.db.metadata import UPDATED_IN_PLACE, metadata
from meterdesk.db.types import Instant

ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False),
    Column("code", String(120), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("balance_fen", BigInteger, nullable=False),
    Column("floor_fen", BigInteger, nullable=True),
    Column("created_at", Instant, nullable=False),
    UniqueConstraint("organisation_id", "code"),
    CheckConstraint("floor_fen IS NULL OR balance_fen >= floor_fen", name="above_floor"),
    CheckConstraint("floor_fen IS NULL OR floor_fen <= 0", name="floor_not_positive"),
    postgresql_with=UPDATED_IN_PLACE,
)

transfers = Table(
    "transfers",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    # organisations.id and ledger_accounts.id, without foreign keys: a transfer is written for
    # every posting, and apply_transfers moves both balances, which it read (and on PostgreSQL
    # locked) in the same transaction, so a missing account fails the transfer; neither is ever
    # deleted (docs/decisions/0005-hot-table-references.md)
    Column("organisation_id", Integer, nullable=False),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("request_hash", String(64), nullable=False),
    Column("debit_account_id", Integer, nullable=False),
    Column("credit_account_id", Integer, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("reason", String(40), nullable=False),
    Column("account_id", Integer, nullable=True),
    Column("meter_id", Integer, nullable=True),
    Column("period_key", String(7), nullable=True),
    Column("method", String(20), nullable=True),
    Column("reference", String(200), nullable=True),
    Column("reverses_id", BigInteger, ForeignKey("transfers.id"), nullable=True),
    Column("actor", String(100), nullable=False),
    Column("memo", String(500), nullable=True),
    Column("created_at", Instant, nullable=False),
    CheckConstraint("amount_fen > 0", name="positive_amount"),
    CheckConstraint("debit_account_id <> credit_account_id", name="two_accounts"),
)

# By time within a ledger account: a statement's period (and the entries since its start, from
# which its opening balance is worked back) and the week of deductions behind the days-of-credit
# forecast read only that stretch, not the account's whole history.
Index("ix_transfers_debit", transfers.c.debit_account_id, transfers.c.created_at, transfers.c.id)
Index("ix_transfers_credit", transfers.c.credit_account_id, transfers.c.created_at, transfers.c.id)

# Every transfer but a deduction, by account: the desk's money (orders on the room page, the
# first recharge, the meter-billing reconciliation), repayments, settlements. Deductions — one
# per reading — are left out, so the ingest writes no entry here and a lookup skips them; their
# queries go by wallet through the indexes above. A query must repeat NOT_A_DEDUCTION word for
# word (a literal, not a parameter) for either database to use this partial index.
NOT_A_DEDUCTION = transfers.c.reason != literal_column("'deduction'")
Index(
    "ix_transfers_account",
    transfers.c.account_id,
    transfers.c.id,
    sqlite_where=NOT_A_DEDUCTION,
    postgresql_where=NOT_A_DEDUCTION,
)
# A transfer is reversed at most once. Partial, because almost every transfer reverses nothing:
# a full unique index would take an entry per transfer (NULLs included) on the ingest's hot
# insert, for nothing.
Index(
    "uq_transfers_reverses_id",
    transfers.c.reverses_id,
    unique=True,
    sqlite_where=transfers.c.reverses_id.is_not(None),
    postgresql_where=transfers.c.reverses_id.is_not(None),
)
