"""Tariffs and their versions, of one organisation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import Connection, RowMapping, func, select

from meterdesk.api.queries.common import Window, page
from meterdesk.shared.errors import NotFoundError
from meterdesk.tariffs.tables import tariff_versions, tariffs


def list_tariffs(
    conn: Connection, organisation_id: int, utility: str | None, today: date, window: Window
) -> tuple[Sequence[RowMapping], str | None]:
    """Tariffs with the start of the version in force today (None before the first one)."""
    current = (
        select(func.max(tariff_versions.c.effective_from))
        .where(
            tariff_versions.c.tariff_id == tariffs.c.id, tariff_versions.c.effective_from <= today
        )
        .scalar_subquery()
    )
    query = select(tariffs, current.label("current_from")).where(
        tariffs.c.organisation_id == organisation_id
    )
    if utility is not None:
        query = query.where(tariffs.c.utility == utility)
    return page(conn, query, tariffs.c.id, after=window.after, limit=window.limit)


def require_tariff(conn: Connection, organisation_id: int, tariff_id: int) -> None:
    found = conn.execute(
        select(tariffs.c.id).where(
            tariffs.c.id == tariff_id, tariffs.c.organisation_id == organisation_id
        )
    ).first()
    if found is None:
        raise NotFoundError(f"tariff {tariff_id} not found")


def list_versions(conn: Connection, organisation_id: int, tariff_id: int) -> list[dict[str, Any]]:
    require_tariff(conn, organisation_id, tariff_id)
    rows = conn.execute(
        select(tariff_versions)
        .where(tariff_versions.c.tariff_id == tariff_id)
        .order_by(tariff_versions.c.effective_from)
    ).mappings()
    return [{**dict(row), "definition": json.loads(row["definition"])} for row in rows]
