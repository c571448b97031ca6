"""Settings, read once at start by :mod:`meterdesk.bootstrap` (never at import).

Every setting can come from the environment with the ``METERDESK_`` prefix, e.g.
``METERDESK_DATABASE_URL=postgresql+psycopg://127.0.0.1:5432/test``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="METERDESK_", extra="ignore")

    data_dir: Path = Field(default=Path("meterdesk-data"), description="where SQLite lives")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file in data_dir"
    )
    default_timezone: str = "Asia/Shanghai"
    ingest_batch_size: int = Field(default=2000, ge=1, le=100_000)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'meterdesk.sqlite3').resolve()}"
