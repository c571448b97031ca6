"""Tariff use cases: create a tariff with its first version, add a dated version.

A price change never re-prices the past: a new version must take effect on a later local date
than today (the organisation's zone), and versions are never edited or deleted. Consumption is
always priced by the version in force at its measurement time.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from meterdesk.audit import service as audit
from meterdesk.billing.quantity_model import check_tariff
from meterdesk.db.bulk import raw_rows
from meterdesk.db.database import Database
from meterdesk.shared.errors import ConflictError, NotFoundError, ValidationError
from meterdesk.shared.time import local_date, zone
from meterdesk.sites.tables import organisations
from meterdesk.tariffs.definition import tariff_from_dict, tariff_to_dict
from meterdesk.tariffs.repository import load_tariff
from meterdesk.tariffs.tables import tariff_versions, tariffs


def create_tariff(
    db: Database, *, organisation_id: int, name: str, definition: dict[str, Any], actor: str
) -> int:
    """Create a tariff from a full definition (utility and one or more versions)."""
    tariff = tariff_from_dict(definition)
    canonical = tariff_to_dict(tariff)
    if not name.strip():
        raise ValidationError("name: must not be empty")
    now = db.clock()
    with db.transaction() as conn:
        try:
            result = conn.execute(
                insert(tariffs).values(
                    organisation_id=organisation_id,
                    name=name.strip(),
                    utility=canonical["utility"],
                    created_at=now,
                )
            )
        except IntegrityError:
            raise ConflictError(f"tariff {name!r} already exists") from None
        key = result.inserted_primary_key
        assert key is not None
        tariff_id = int(key[0])
        for version in canonical["versions"]:
            conn.execute(
                insert(tariff_versions).values(
                    tariff_id=tariff_id,
                    effective_from=date.fromisoformat(version["effective_from"]),
                    definition=json.dumps(version, sort_keys=True),
                    created_at=now,
                    created_by=actor,
                )
            )
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="tariff.create",
            subject=f"tariff:{tariff_id}",
            at=now,
            detail={"name": name},
        )
    return tariff_id


def add_version(
    db: Database, *, organisation_id: int, tariff_id: int, version: dict[str, Any], actor: str
) -> date:
    now = db.clock()
    with db.transaction() as conn:
        row = conn.execute(
            select(tariffs.c.utility, organisations.c.timezone)
            .join(organisations, organisations.c.id == tariffs.c.organisation_id)
            .where(tariffs.c.id == tariff_id, tariffs.c.organisation_id == organisation_id)
        ).one_or_none()
        if row is None:
            raise NotFoundError(f"tariff {tariff_id} not found")
        current = tariff_to_dict(load_tariff(conn, tariff_id))
        candidate = tariff_from_dict(
            {"utility": row.utility, "versions": [*current["versions"], version]}
        )
        if _bought_as_quantity(conn, tariff_id):
            try:
                check_tariff(candidate)
            except ValidationError as refused:
                raise ValidationError(
                    f"{refused} — open quantity-credit accounts (购量) buy along this tariff, and "
                    "every purchase after this version would be refused"
                ) from None
        new_version = next(
            v
            for v in tariff_to_dict(candidate)["versions"]
            if v["effective_from"] == version.get("effective_from")
        )
        effective = date.fromisoformat(new_version["effective_from"])
        today = local_date(now, zone(row.timezone))
        if effective <= today:
            raise ValidationError(
                f"effective_from: {effective} is not after today ({today}); a price change never re-prices the past"
            )
        try:
            conn.execute(
                insert(tariff_versions).values(
                    tariff_id=tariff_id,
                    effective_from=effective,
                    definition=json.dumps(new_version, sort_keys=True),
                    created_at=now,
                    created_by=actor,
                )
            )
        except IntegrityError:
            raise ConflictError(
                f"tariff {tariff_id} already has a version from {effective}"
            ) from None
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="tariff.add_version",
            subject=f"tariff:{tariff_id}",
            at=now,
            detail={"effective_from": effective.isoformat()},
        )
    return effective


def _bought_as_quantity(conn: Connection, tariff_id: int) -> bool:
    """Whether an open quantity-credit account's meter is billed by this tariff now."""
    return bool(
        raw_rows(
            conn,
            "SELECT 1 FROM meter_assignments ma JOIN accounts a ON a.id = ma.account_id "
            "WHERE ma.tariff_id = :tariff AND ma.end_at IS NULL AND a.status = 'open' "
            "AND a.credit_unit = 'quantity' LIMIT 1",
            tariff=tariff_id,
        )
    )


def find_tariff(db: Database, *, organisation_id: int, name: str) -> int:
    with db.read() as conn:
        found = conn.execute(
            select(tariffs.c.id).where(
                tariffs.c.organisation_id == organisation_id, tariffs.c.name == name
            )
        ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"tariff {name!r} not found")
    return int(found)


def describe(db: Database, *, organisation_id: int, tariff_id: int) -> dict[str, Any]:
    with db.read() as conn:
        name = conn.execute(
            select(tariffs.c.name).where(
                tariffs.c.id == tariff_id, tariffs.c.organisation_id == organisation_id
            )
        ).scalar_one_or_none()
        if name is None:
            raise NotFoundError(f"tariff {tariff_id} not found")
        return {"id": tariff_id, "name": name, **tariff_to_dict(load_tariff(conn, tariff_id))}
