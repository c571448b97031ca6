"""Which driver and transport a bus gets: ``buses.protocol`` × ``buses.transport`` → driver.

| protocol     | transport | driver        | carried by                                   |
|--------------|-----------|---------------|----------------------------------------------|
| dlt645       | tcp       | Dlt645Driver  | TcpTransport (transparent DTU)               |
| dlt645       | serial    | Dlt645Driver  | SerialTransport                              |
| cjt188       | tcp/serial| Cjt188Driver  | TcpTransport / SerialTransport               |
| modbus_tcp   | tcp       | ModbusDriver  | pymodbus TCP client, SOCKET framer           |
| modbus_rtu   | tcp       | ModbusDriver  | pymodbus TCP client, RTU framer (DTU)        |
| modbus_rtu   | serial    | ModbusDriver  | pymodbus serial client                       |

Buses with transport ``mqtt`` are not polled: their gateways push reports (devices/mqtt).
One :class:`BusConnection` per bus: its transport's lock is what keeps one request in flight on
the line, so the poller and the command executor must share it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from meterdesk.devices.drivers import RetryPolicy, default_clock
from meterdesk.devices.drivers.cjt188 import Cjt188Driver
from meterdesk.devices.drivers.dlt645 import Dlt645Driver
from meterdesk.devices.drivers.modbus import ModbusDriver, PymodbusPort
from meterdesk.devices.ports import DeviceError, MeterDriver
from meterdesk.devices.transports import (
    ByteTransport,
    SerialTransport,
    TcpTransport,
    TransportStats,
    split_endpoint,
)

PROTOCOLS = ("dlt645", "cjt188", "modbus_tcp", "modbus_rtu")
TRANSPORTS = ("tcp", "serial", "mqtt")
POLLABLE_TRANSPORTS = ("tcp", "serial")
DEFAULT_LINE = {
    "dlt645": (2400, "E"),
    "cjt188": (2400, "E"),
    "modbus_tcp": (9600, "N"),
    "modbus_rtu": (9600, "N"),
}


@dataclass(frozen=True)
class BusConfig:
    bus_id: int
    protocol: str
    transport: str
    endpoint: str
    baud: int = 9600
    parity: str = "N"
    timeout_s: float = 1.0


@dataclass
class BusConnection:
    """A bus's driver, its transport's counters, and how to close it."""

    bus_id: int
    driver: MeterDriver
    stats: TransportStats
    close: Callable[[], Awaitable[None]]


def check_combination(protocol: str, transport: str) -> None:
    if protocol not in PROTOCOLS:
        raise DeviceError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if transport not in TRANSPORTS:
        raise DeviceError(f"transport {transport!r} is not one of {', '.join(TRANSPORTS)}")
    if protocol == "modbus_tcp" and transport != "tcp":
        raise DeviceError("modbus_tcp runs over tcp; use modbus_rtu for a serial line")


def _byte_transport(config: BusConfig) -> ByteTransport:
    if config.transport == "tcp":
        host, port = split_endpoint(config.endpoint)
        return TcpTransport(host, port)
    return SerialTransport(config.endpoint, config.baud, config.parity)


def _modbus_port(config: BusConfig) -> PymodbusPort:
    if config.transport == "serial":
        return PymodbusPort.serial(
            config.endpoint, config.baud, config.parity, timeout_s=config.timeout_s
        )
    host, port = split_endpoint(config.endpoint)
    rtu = config.protocol == "modbus_rtu"
    return PymodbusPort.tcp(host, port, rtu=rtu, timeout_s=config.timeout_s)


def open_bus(
    config: BusConfig,
    *,
    clock: Callable[[], datetime] = default_clock,
    retry: RetryPolicy | None = None,
) -> BusConnection:
    """The driver for ``config`` (nothing connects until the first request)."""
    check_combination(config.protocol, config.transport)
    if config.transport not in POLLABLE_TRANSPORTS:
        raise DeviceError(f"bus {config.bus_id} uses {config.transport}: it is not polled")
    policy = retry or RetryPolicy(timeout_s=config.timeout_s)
    if config.protocol.startswith("modbus"):
        port = _modbus_port(config)
        driver = ModbusDriver(port, retry=policy, clock=clock)
        return BusConnection(config.bus_id, driver, port.stats, port.close)
    transport = _byte_transport(config)
    byte_driver: MeterDriver
    if config.protocol == "dlt645":
        byte_driver = Dlt645Driver(transport, retry=policy, clock=clock)
    else:
        byte_driver = Cjt188Driver(transport, retry=policy, clock=clock)
    return BusConnection(config.bus_id, byte_driver, transport.stats, transport.close)
