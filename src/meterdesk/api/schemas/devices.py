"""Gateways, buses, where a meter answers on a bus, and what the platform last saw of it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from meterdesk.api.schemas.common import ONE_LINE, Id, Name, examples

Uplink = Literal["modbus_tcp", "transparent_tcp", "mqtt", "hj212"]
BusProtocol = Literal["dlt645", "cjt188", "modbus_tcp", "modbus_rtu"]
Transport = Literal["tcp", "serial", "mqtt"]
Connection = Literal["online", "lost", "unknown"]
Short = Annotated[str, StringConstraints(min_length=1, max_length=64), ONE_LINE]
OptionText = Annotated[str, StringConstraints(max_length=200)]


class GatewayIn(BaseModel):
    model_config = examples(
        {
            "site_id": 1,
            "serial": "DTU-0001",
            "name": "Building A DTU",
            "uplink": "transparent_tcp",
            "host": "10.0.0.5",
            "port": 4001,
        }
    )
    site_id: Id
    serial: Short
    name: Name | None = Field(default=None, description="default: the serial")
    uplink: Uplink = "transparent_tcp"
    host: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    product_key: Short | None = Field(default=None, description="MQTT product key")
    access_password: Short | None = Field(
        default=None,
        description="HJ212 gateways: the access password (PW) they send; stored hashed, "
        "never returned",
    )


class GatewayPasswordIn(BaseModel):
    model_config = examples({"access_password": "123456"})
    access_password: Short


class GatewayOut(BaseModel):
    id: int
    site_id: int
    serial: str
    name: str
    uplink: str
    host: str | None
    port: int | None
    product_key: str | None
    state: Connection = Field(description="online when any of its meters answers, else lost")
    last_seen_at: datetime | None
    meters: int = Field(description="meters on its buses")
    created_at: datetime


class BusIn(BaseModel):
    model_config = examples(
        {
            "name": "A-485-1",
            "protocol": "dlt645",
            "transport": "tcp",
            "endpoint": "10.0.0.5:4001",
            "gateway_id": 1,
            "poll_interval_s": 60,
        }
    )
    name: Annotated[str, StringConstraints(min_length=1, max_length=100), ONE_LINE]
    protocol: BusProtocol
    transport: Transport = "tcp"
    endpoint: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="host:port, or a serial device such as /dev/ttyUSB0"
    )
    gateway_id: Id | None = None
    baud: Annotated[int, Field(ge=300, le=921_600)] | None = Field(
        default=None, description="default: 2400 for DL/T 645 and CJ/T 188, 9600 for Modbus"
    )
    parity: Literal["N", "E", "O"] | None = None
    timeout_ms: Annotated[int, Field(ge=50, le=60_000)] = 1000
    poll_interval_s: Annotated[int, Field(ge=0, le=86_400)] = 60


class BusOut(BaseModel):
    id: int
    gateway_id: int | None
    name: str
    protocol: str
    transport: str
    endpoint: str
    baud: int
    parity: str
    timeout_ms: int
    poll_interval_s: int
    meters: int
    online: int = Field(description="meters online")
    lost: int = Field(description="meters lost")
    last_seen_at: datetime | None = Field(description="the latest contact with any of its meters")
    created_at: datetime


class MeterStatusOut(BaseModel):
    meter_id: int
    number: str
    bus_id: int | None
    address: str
    state: Connection
    last_seen_at: datetime | None
    last_error: str | None
    failures: int = Field(description="failed reads in a row")
    relay: str | None = Field(description="closed | open, as last read")
    valve: str | None = Field(description="open | closed | abnormal, as last read")
    protected: bool | None
    remaining_money: str | None = Field(description="meter billing: the meter's own money")
    purchase_count: int | None
    live: dict[str, Any] | None = Field(description="voltage_v, current_a, power_kw …")
    updated_at: datetime | None


class BusDetailOut(BusOut):
    meter_status: list[MeterStatusOut]


class LinkIn(BaseModel):
    model_config = examples({"bus_id": 1, "address": "000000000101", "options": {}})
    bus_id: Id
    address: Annotated[str, StringConstraints(min_length=1, max_length=40)] = Field(
        description="DL/T 645: 12 digits; CJ/T 188: 14; Modbus: unit 1–247"
    )
    options: dict[Annotated[str, StringConstraints(min_length=1, max_length=40)], OptionText] = (
        Field(default_factory=dict, max_length=20, description="e.g. password, map, di_order")
    )


class LinkOut(BaseModel):
    meter_id: int
    bus_id: int | None
    address: str
    protocol: str
    options: dict[str, str]
