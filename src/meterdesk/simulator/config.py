"""The simulator's configuration: whole buildings in one TOML file (stdlib ``tomllib``).

Format (every key except the ones marked *required* has a default; see docs/simulator.md)::

    [simulator]
    seed = 7                     # every load curve and initial value follows from it
    speed = 1.0                  # simulated seconds per real second (3600 = an hour a second)
    zone = "Asia/Shanghai"       # the meters' clocks and TOU bands; default: the host's zone
    start = "2026-11-02T08:00:00+08:00"   # simulated start; default: now

    [[bus]]                      # one RS485 / M-Bus line behind one TCP port (a DTU)
    name = "A-485-1"             # required
    protocol = "dlt645"          # required: dlt645 | modbus | modbus-rtu | cjt188
    listen = "127.0.0.1:7001"    # omit to keep the line off the network (gateway only)
    baud = 0                     # > 0 adds the time the bytes take on the line

    [[gateway]]                  # a gateway reporting its meters (MQTT by default)
    sn = "GW0001"                # required
    product_key = "meterdesk"
    broker = "127.0.0.1:1883"
    interval_s = 300             # simulated seconds between reads
    resend_after_s = 30          # real seconds before an unacknowledged report is resent
    # uplink = "hj212" makes it an HJ212-2017 gateway: keys in .config_hj212

    [[meters]]                   # a group of meters with consecutive addresses
    first_address = 101          # required (count = 1 by default)
    count = 8
    kind = "electricity"         # electricity | water
    profile = "apartment"        # apartment | shop | office | public | constant
    bus = "A-485-1"              # where it answers (optional)
    gateway = "GW0001"           # who reports it over MQTT (optional)
    # electricity: rated_kw phases ct pt modulus billing ("meter"|"platform") money energy_kwh
    #              alarm_1 alarm_2 overdraft_limit hoarding_limit close_allowed_amount
    #              prices = ["1.2", "1.0", "0.7", "0.4"]
    # water:       rated_flow_m3h volume_m3 modulus valve_delay_s di_order ("high_first"|"low_first")

    [[fault]]                    # faults on a schedule (simulated seconds after the start)
    kind = "offline"             # offline | slow | garbage | rollover | clock_drift | replace
                                 # | valve_stuck | battery_low | uplink_down
    at_s = 600
    duration_s = 300             # omit: for ever (one-shot kinds ignore it)
    bus = "A-485-1"              # the meter: its bus (or gateway) and address
    address = 101
    value = 2.5                  # slow: seconds; garbage: bytes; clock_drift: ppm; rollover: kWh

Money and prices are decimal strings (or integers), never floats. Addresses: DL/T 645 up to 12
digits, CJ/T 188 up to 14, Modbus unit ids 1–247; unique per bus and per gateway.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import datetime, tzinfo
from enum import StrEnum
from pathlib import Path

from meterdesk.shared.errors import ValidationError
from meterdesk.shared.time import parse_instant, zone
from meterdesk.simulator.clock import host_zone
from meterdesk.simulator.config_hj212 import hj212_gateway
from meterdesk.simulator.config_meters import build_meters
from meterdesk.simulator.config_values import Table, check_keys, endpoint, typed
from meterdesk.simulator.gateway import GatewaySpec
from meterdesk.simulator.hj212_gateway import Hj212GatewaySpec
from meterdesk.simulator.meter import ElectricitySpec, WaterSpec


class Protocol(StrEnum):
    DLT645 = "dlt645"
    MODBUS = "modbus"
    MODBUS_RTU = "modbus-rtu"
    CJT188 = "cjt188"


class FaultKind(StrEnum):
    OFFLINE = "offline"
    SLOW = "slow"
    GARBAGE = "garbage"
    ROLLOVER = "rollover"
    CLOCK_DRIFT = "clock_drift"
    REPLACE = "replace"
    VALVE_STUCK = "valve_stuck"
    BATTERY_LOW = "battery_low"
    UPLINK_DOWN = "uplink_down"


@dataclass(frozen=True)
class BusConfig:
    name: str
    protocol: Protocol
    host: str | None = None
    port: int | None = None
    baud: int = 0


@dataclass(frozen=True)
class MeterConfig:
    spec: ElectricitySpec | WaterSpec
    bus: str | None = None
    gateway: str | None = None


@dataclass(frozen=True)
class FaultConfig:
    kind: FaultKind
    at_s: float
    duration_s: float | None = None
    value: float | None = None
    address: int | None = None
    bus: str | None = None
    gateway: str | None = None


@dataclass(frozen=True)
class SimulatorConfig:
    seed: int
    speed: float
    zone: tzinfo
    start: datetime | None
    buses: tuple[BusConfig, ...]
    gateways: tuple[GatewaySpec | Hj212GatewaySpec, ...]
    meters: tuple[MeterConfig, ...]
    faults: tuple[FaultConfig, ...] = ()


def _bus(table: Table) -> BusConfig:
    where = f"[[bus]] {table.get('name', '?')}"
    check_keys(table, {"name", "protocol", "listen", "baud"}, where)
    name = typed(table, "name", str, None, where)
    if not name:
        raise ValidationError(f"{where}: name is required")
    try:
        protocol = Protocol(str(table.get("protocol", "")))
    except ValueError:
        raise ValidationError(
            f"{where}: protocol must be one of {[p.value for p in Protocol]}"
        ) from None
    listen = typed(table, "listen", str, None, where)
    host, port = endpoint(listen, where) if listen else (None, None)
    return BusConfig(name, protocol, host, port, typed(table, "baud", int, 0, where))


def _gateway(table: Table, seed: int) -> GatewaySpec | Hj212GatewaySpec:
    where = f"[[gateway]] {table.get('sn', '?')}"
    uplink = typed(table, "uplink", str, "mqtt", where)
    if uplink == "hj212":
        return hj212_gateway(table, seed, where)
    if uplink != "mqtt":
        raise ValidationError(f"{where}: uplink must be mqtt or hj212")
    allowed = {"sn", "uplink", "product_key", "broker", "interval_s", "resend_after_s"}
    check_keys(table, allowed, where)
    sn = typed(table, "sn", str, None, where)
    if not sn:
        raise ValidationError(f"{where}: sn is required")
    host, port = endpoint(typed(table, "broker", str, "127.0.0.1:1883", where), where)
    return GatewaySpec(
        sn=sn,
        product_key=typed(table, "product_key", str, "meterdesk", where),
        broker_host=host,
        broker_port=port,
        interval_s=float(typed(table, "interval_s", (int, float), 300, where)),
        resend_after_s=float(typed(table, "resend_after_s", (int, float), 30, where)),
        seed=seed,
    )


def _fault(table: Table) -> FaultConfig:
    where = f"[[fault]] {table.get('kind', '?')}"
    check_keys(table, {"kind", "at_s", "duration_s", "value", "address", "bus", "gateway"}, where)
    try:
        kind = FaultKind(str(table.get("kind", "")))
    except ValueError:
        raise ValidationError(
            f"{where}: kind must be one of {[k.value for k in FaultKind]}"
        ) from None
    number = (int, float)
    fault = FaultConfig(
        kind=kind,
        at_s=float(typed(table, "at_s", number, 0, where)),
        duration_s=typed(table, "duration_s", number, None, where),
        value=typed(table, "value", number, None, where),
        address=typed(table, "address", int, None, where),
        bus=typed(table, "bus", str, None, where),
        gateway=typed(table, "gateway", str, None, where),
    )
    if kind is FaultKind.UPLINK_DOWN and fault.gateway is None:
        raise ValidationError(f"{where}: uplink_down needs gateway")
    if kind is FaultKind.GARBAGE and fault.address is None and fault.bus is None:
        if fault.gateway is None:
            raise ValidationError(f"{where}: name the meter, or an HJ212 gateway with gateway")
    elif kind is not FaultKind.UPLINK_DOWN and (
        fault.address is None or (fault.bus or fault.gateway) is None
    ):
        raise ValidationError(f"{where}: name the meter with address and bus (or gateway)")
    return fault


def is_gateway_garbage(fault: FaultConfig) -> bool:
    """Junk bytes between an HJ212 gateway's packets, rather than in a meter's answers."""
    return fault.kind is FaultKind.GARBAGE and fault.address is None


def _settings(table: Table, where: str) -> tuple[int, float, tzinfo, datetime | None]:
    check_keys(table, {"seed", "speed", "zone", "start"}, where)
    seed = typed(table, "seed", int, 1, where)
    speed = float(typed(table, "speed", (int, float), 1.0, where))
    if speed <= 0:
        raise ValidationError(f"{where}: speed must be positive")
    zone_name = typed(table, "zone", str, None, where)
    start = typed(table, "start", (str, datetime), None, where)
    if isinstance(start, str):
        start = parse_instant(start, field="start")
    elif isinstance(start, datetime) and start.tzinfo is None:
        raise ValidationError(f"{where}: start needs a UTC offset")
    return seed, speed, zone(zone_name) if zone_name else host_zone(), start


def parse_config(
    document: Table, *, seed: int | None = None, speed: float | None = None
) -> SimulatorConfig:
    """A validated configuration from a parsed TOML document; ``seed``/``speed`` override it."""
    check_keys(document, {"simulator", "bus", "gateway", "meters", "fault"}, "config")
    base_seed, base_speed, meter_zone, start = _settings(
        document.get("simulator", {}), "[simulator]"
    )
    seed = base_seed if seed is None else seed
    buses = tuple(_bus(table) for table in document.get("bus", []))
    gateways = tuple(_gateway(table, seed) for table in document.get("gateway", []))
    meters = build_meters(
        document.get("meters", []),
        seed=seed,
        zone=meter_zone,
        buses={b.name: b.protocol.value for b in buses},
        gateways={g.sn for g in gateways},
    )
    config = SimulatorConfig(
        seed=seed,
        speed=base_speed if speed is None else speed,
        zone=meter_zone,
        start=start,
        buses=buses,
        gateways=gateways,
        meters=tuple(MeterConfig(spec, bus, gateway) for spec, bus, gateway in meters),
        faults=tuple(_fault(table) for table in document.get("fault", [])),
    )
    _check_names(config)
    return config


def _check_names(config: SimulatorConfig) -> None:
    names = [bus.name for bus in config.buses]
    sns = [gateway.sn for gateway in config.gateways]
    hj212 = {gateway.sn for gateway in config.gateways if isinstance(gateway, Hj212GatewaySpec)}
    if len(set(names)) != len(names) or len(set(sns)) != len(sns):
        raise ValidationError("bus names and gateway serial numbers must be unique")
    for fault in config.faults:
        if fault.bus is not None and fault.bus not in names:
            raise ValidationError(f"[[fault]] {fault.kind}: no bus named {fault.bus!r}")
        if fault.gateway is not None and fault.gateway not in sns:
            raise ValidationError(f"[[fault]] {fault.kind}: no gateway {fault.gateway!r}")
        if is_gateway_garbage(fault) and fault.gateway not in hj212:
            raise ValidationError(f"[[fault]] garbage: {fault.gateway!r} is not an HJ212 gateway")


def load_config(
    path: Path, *, seed: int | None = None, speed: float | None = None
) -> SimulatorConfig:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValidationError(f"cannot read {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValidationError(f"{path}: not valid TOML ({error})") from None
    return parse_config(document, seed=seed, speed=speed)
