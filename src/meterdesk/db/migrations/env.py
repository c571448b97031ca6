"""Alembic environment for meterdesk. Run migrations through :mod:`meterdesk.db.migrate`, which
passes the database URL and explains the choices made here."""

from meterdesk.db.migrate import run_migrations

run_migrations()
