"""Meters, device replacement, readings, the quarantine."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from meterdesk.api.schemas.common import (
    ONE_LINE,
    Id,
    Instant,
    Ratio,
    Register,
    SignedMoney,
    examples,
)

Utility = Literal["electricity", "water"]
MeterKind = Literal["single_phase", "three_phase", "multi_user_circuit", "water"]
Protocol = Literal["modbus_rtu", "modbus_tcp", "dlt645", "cjt188", "mqtt_json", "manual"]
BandName = Literal["sharp", "peak", "flat", "valley", "deep_valley"]


class MeterIn(BaseModel):
    model_config = examples(
        {
            "number": "E-101",
            "utility": "electricity",
            "kind": "single_phase",
            "protocol": "dlt645",
            "address": "000000000101",
            "room_id": 1,
        }
    )
    number: Annotated[str, StringConstraints(min_length=1, max_length=64), ONE_LINE]
    utility: Utility
    kind: MeterKind
    protocol: Protocol = "manual"
    address: Annotated[str, StringConstraints(max_length=40)] = ""
    room_id: Id | None = Field(default=None, description="the room; or give site_id")
    site_id: Id | None = None
    ct_ratio: Ratio = "1"
    pt_ratio: Ratio = "1"
    register_modulus: Register = "1000000"
    has_band_registers: bool = False
    max_rate_per_hour: Register | None = None
    installed_on: date | None = None


class MeterOut(BaseModel):
    id: int
    number: str
    utility: str
    kind: str
    protocol: str
    address: str
    site_id: Id
    room_id: Id | None
    ct_ratio: str
    pt_ratio: str
    register_modulus: str
    has_band_registers: bool
    max_rate_per_hour: str
    installed_on: date | None
    generation: int
    created_at: datetime


class ReplacementIn(BaseModel):
    model_config = examples(
        {"at": "2026-11-02T08:00:00+08:00", "old_final_total": "1250.5", "new_initial_total": "0"}
    )
    at: Instant
    old_final_total: Register
    new_initial_total: Register
    new_address: Annotated[str, StringConstraints(max_length=40)] = ""


class ReplacementOut(BaseModel):
    meter_id: Id
    generation: int


class ReadingIn(BaseModel):
    model_config = examples(
        {"meter_id": 1, "measured_at": "2026-11-02T08:15:00+08:00", "total": "1001.25"}
    )
    meter_id: Id
    measured_at: Instant
    total: Register
    bands: dict[BandName, Register] | None = None
    source: Literal["realtime", "history", "manual", "import"] = "realtime"


class ReadingsIn(BaseModel):
    model_config = examples(
        {
            "readings": [
                {"meter_id": 1, "measured_at": "2026-11-02T08:15:00+08:00", "total": "1001.25"}
            ]
        }
    )
    readings: list[ReadingIn] = Field(min_length=1, max_length=10_000)


class IngestReportOut(BaseModel):
    received: int
    accepted: int
    duplicates: int
    quarantined: int
    late: int
    intervals_priced: int
    transfers: int
    deducted: SignedMoney
    returned: SignedMoney


class ReadingOut(BaseModel):
    meter_id: Id
    generation: int
    measured_at: datetime
    received_at: datetime
    total: str
    bands: dict[str, str] | None
    source: str


class QuarantineOut(BaseModel):
    id: int
    meter_id: Id | None
    meter_number: str | None
    measured_at: datetime | None
    received_at: datetime
    reason_code: str
    reason: str
    status: str
    total: str | None
    resolved_by: str | None
    resolved_at: datetime | None


class QuarantineResolvedOut(BaseModel):
    id: int
    status: str
    report: IngestReportOut | None = None
