"""Database helpers shared by every test folder (import as ``from support.database import …``)."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, text

PG_URL = os.environ.get(
    "METERDESK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
_pg_state: dict[str, str | None] = {}


def postgres_unavailable() -> str | None:
    """None when PostgreSQL answers, else why not (checked once per run)."""
    if "reason" not in _pg_state:
        try:
            engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("select 1"))
            engine.dispose()
            _pg_state["reason"] = None
        except Exception as error:
            _pg_state["reason"] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
    return _pg_state["reason"]
