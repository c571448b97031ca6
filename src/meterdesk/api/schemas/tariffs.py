"""Tariffs and their dated versions. The definition is the JSON format of
``meterdesk.tariffs.definition`` (prices as decimal strings; see docs/api.md)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, Field

from meterdesk.api.schemas.common import Id, Name, examples

_VERSION = {"effective_from": "2026-01-01", "prices": {"flat": "0.6537"}}


class TariffIn(BaseModel):
    model_config = examples(
        {"name": "Shop flat", "definition": {"utility": "electricity", "versions": [_VERSION]}}
    )
    name: Name
    definition: dict[str, Any] = Field(description="utility and one or more versions")


class TariffVersionIn(BaseModel):
    model_config = examples({"version": {**_VERSION, "effective_from": "2027-01-01"}})
    version: dict[str, Any] = Field(description="one version, effective after today")


class TariffSummaryOut(BaseModel):
    id: int
    name: str
    utility: str
    created_at: datetime
    current_from: date | None


class TariffOut(BaseModel):
    id: int
    name: str
    utility: str
    versions: list[dict[str, Any]]


class TariffVersionOut(BaseModel):
    tariff_id: Id
    effective_from: date
    created_at: datetime
    created_by: str
    definition: dict[str, Any]
