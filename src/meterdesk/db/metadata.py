"""The one MetaData every area's tables.py registers on, with a naming convention so Alembic
migrations name constraints the same way on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


# Table options for rows every ingest batch updates in place (cursors, running totals, ledger
# balances): on PostgreSQL, pages kept half empty, so an update can put the new row version
# beside the old one without touching any index (a "HOT" update) and the next visit to the page
# reclaims the old version. Full pages (the default) send each update to another page with a new
# entry in every index, and the table grows by a dead row per update until autovacuum.
UPDATED_IN_PLACE = {"fillfactor": "50"}  # PostgreSQL storage parameters (postgresql_with)


def load_all_tables() -> MetaData:
    """Import every area's tables so the metadata is complete (for Alembic and tests)."""
    from meterdesk.access import tables as _access  # noqa: F401
    from meterdesk.audit import tables as _audit  # noqa: F401
    from meterdesk.billing import tables as _billing  # noqa: F401
    from meterdesk.db import counters as _counters  # noqa: F401
    from meterdesk.devices import tables as _devices  # noqa: F401
    from meterdesk.ledger import tables as _ledger  # noqa: F401
    from meterdesk.metering import tables as _metering  # noqa: F401
    from meterdesk.notifications import tables as _notifications  # noqa: F401
    from meterdesk.sites import tables as _sites  # noqa: F401
    from meterdesk.tariffs import tables as _tariffs  # noqa: F401

    return metadata
