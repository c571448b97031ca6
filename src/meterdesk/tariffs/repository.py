"""Loading tariffs for pricing, with a per-process cache.

Versions are immutable once written, so a cached tariff stays right until a version is added;
each batch asks the database for the version count of the tariffs it needs (one cheap query)
and reloads only those that changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, func, select

from meterdesk.shared.errors import NotFoundError
from meterdesk.tariffs.definition import tariff_from_dict
from meterdesk.tariffs.model import Tariff
from meterdesk.tariffs.tables import tariff_versions, tariffs


def load_tariff(conn: Connection, tariff_id: int) -> Tariff:
    header = conn.execute(
        select(tariffs.c.utility).where(tariffs.c.id == tariff_id)
    ).scalar_one_or_none()
    if header is None:
        raise NotFoundError(f"tariff {tariff_id} not found")
    rows = conn.execute(
        select(tariff_versions.c.definition)
        .where(tariff_versions.c.tariff_id == tariff_id)
        .order_by(tariff_versions.c.effective_from)
    ).scalars()
    versions: list[dict[str, Any]] = [json.loads(text) for text in rows]
    return tariff_from_dict({"utility": header, "versions": versions})


class TariffCache:
    def __init__(self) -> None:
        self._tariffs: dict[int, tuple[int, Tariff]] = {}

    def refresh(
        self, conn: Connection, tariff_ids: Iterable[int], *, unchanged: bool = False
    ) -> None:
        """Load the tariffs not cached yet, and reload those whose versions changed —
        unless the caller knows nothing changed (``unchanged``: the ingestor's kept state proves
        that nobody wrote since its last batch)."""
        ids = sorted(set(tariff_ids))
        if unchanged:
            ids = [tariff_id for tariff_id in ids if tariff_id not in self._tariffs]
        if not ids:
            return
        query = (
            select(tariff_versions.c.tariff_id, func.count())
            .where(tariff_versions.c.tariff_id.in_(ids))
            .group_by(tariff_versions.c.tariff_id)
        )
        counts = {int(row[0]): int(row[1]) for row in conn.execute(query)}
        for tariff_id in ids:
            cached = self._tariffs.get(tariff_id)
            if cached is None or cached[0] != counts.get(tariff_id, 0):
                self._tariffs[tariff_id] = (counts.get(tariff_id, 0), load_tariff(conn, tariff_id))

    def get(self, tariff_id: int) -> Tariff:
        return self._tariffs[tariff_id][1]
