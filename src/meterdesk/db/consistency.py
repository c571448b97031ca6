"""Whole-database consistency checks: what the schema does not enforce by itself.

- **References without foreign keys.** The tables written for every reading keep their
  references as plain ids (docs/decisions/0005-hot-table-references.md): a foreign key check per
  row cost the PostgreSQL ingest about a third of its database time. The writers read every
  referenced row in the same transaction, and none of the referenced rows is ever deleted; this
  check proves it held.
- **The books.** The ledger's entries sum to zero and every balance is its transfers' net.

``meterdesk check`` runs both; the benchmarks and the tests run them after every run.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

# (table, column, referenced table): each non-null value must be an id of the referenced table.
UNCHECKED_REFERENCES = (
    ("readings", "meter_id", "meters"),
    ("readings", "line_account_id", "accounts"),
    ("charge_lines", "meter_id", "meters"),
    ("charge_lines", "account_id", "accounts"),
    ("transfers", "organisation_id", "organisations"),
    ("transfers", "debit_account_id", "ledger_accounts"),
    ("transfers", "credit_account_id", "ledger_accounts"),
    ("transfers", "account_id", "accounts"),
    ("transfers", "meter_id", "meters"),
)


def dangling_references(conn: Connection) -> dict[str, int]:
    """For each reference, how many rows point at nothing (all zero when the data is sound)."""
    found = {}
    for table, column, parent in UNCHECKED_REFERENCES:
        # Names come from the constant above, never from input.
        count = conn.execute(
            text(
                f"SELECT COUNT(*) FROM {table} t WHERE t.{column} IS NOT NULL AND NOT EXISTS "  # noqa: S608
                f"(SELECT 1 FROM {parent} p WHERE p.id = t.{column})"
            )
        ).scalar_one()
        found[f"{table}.{column}"] = int(count)
    return found


def ledger_differences(conn: Connection) -> dict[str, int]:
    """``entries_sum``: the sum of all balances (zero); ``balances_off``: how many ledger
    accounts' balance differs from their transfers' net (zero)."""
    total = conn.execute(text("SELECT COALESCE(SUM(balance_fen), 0) FROM ledger_accounts"))
    off = conn.execute(
        text(
            "SELECT COUNT(*) FROM ledger_accounts a WHERE a.balance_fen <> "
            "(SELECT COALESCE(SUM(amount_fen), 0) FROM transfers t "
            "WHERE t.credit_account_id = a.id) - "
            "(SELECT COALESCE(SUM(amount_fen), 0) FROM transfers t "
            "WHERE t.debit_account_id = a.id)"
        )
    )
    return {"entries_sum": int(total.scalar_one()), "balances_off": int(off.scalar_one())}
