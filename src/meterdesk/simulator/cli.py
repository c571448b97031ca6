"""``meterdesk simulate``: run virtual meters and gateways until SIGINT / SIGTERM.

Without ``--config``, ``--meters N`` builds a default site: N electricity meters (addresses
1..N) on each of the DL/T 645, Modbus TCP and Modbus RTU-over-TCP sockets that are asked for,
N water meters (addresses 1..N) on the CJ/T 188 socket, and with ``--mqtt-broker`` one gateway
``GW0001`` reporting the DL/T 645 and CJ/T 188 meters every minute (simulated). Each socket is
its own line with its own meters. With ``--config`` the file describes everything and only
``--speed`` / ``--seed`` may override it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from meterdesk.shared.errors import ValidationError
from meterdesk.simulator.config import SimulatorConfig, endpoint, load_config, parse_config
from meterdesk.simulator.runtime import Simulation

DEFAULT_GATEWAY = "GW0001"
DEFAULT_INTERVAL_S = 60


def _bus(name: str, protocol: str, listen: str | None) -> dict[str, Any]:
    table: dict[str, Any] = {"name": name, "protocol": protocol}
    if listen:
        endpoint(listen, f"--{name}-tcp")
        table["listen"] = listen
    return table


def default_document(
    *,
    meters: int,
    dlt645_tcp: str | None = None,
    modbus_tcp: str | None = None,
    modbus_rtu_tcp: str | None = None,
    cjt188_tcp: str | None = None,
    mqtt_broker: str | None = None,
) -> dict[str, Any]:
    """The config document of the ``--meters N`` site (see the module docstring)."""
    if meters < 1:
        raise ValidationError("--meters must be at least 1")
    gateway = DEFAULT_GATEWAY if mqtt_broker else None
    lines = [
        ("dlt645", "dlt645", dlt645_tcp, "electricity", dlt645_tcp or mqtt_broker),
        ("modbus", "modbus", modbus_tcp, "electricity", modbus_tcp),
        ("modbus-rtu", "modbus-rtu", modbus_rtu_tcp, "electricity", modbus_rtu_tcp),
        ("cjt188", "cjt188", cjt188_tcp, "water", cjt188_tcp or mqtt_broker),
    ]
    document: dict[str, Any] = {"bus": [], "meters": []}
    for name, protocol, listen, kind, wanted in lines:
        if not wanted:
            continue
        if protocol.startswith("modbus") and meters > 247:
            raise ValidationError("Modbus unit ids stop at 247: use --meters 247 or fewer")
        document["bus"].append(_bus(name, protocol, listen))
        group = {"first_address": 1, "count": meters, "kind": kind, "bus": name}
        if gateway and protocol in ("dlt645", "cjt188"):
            group["gateway"] = gateway
        document["meters"].append(group)
    if mqtt_broker:
        endpoint(mqtt_broker, "--mqtt-broker")
        gateway_table = {"sn": DEFAULT_GATEWAY, "broker": mqtt_broker}
        document["gateway"] = [gateway_table | {"interval_s": DEFAULT_INTERVAL_S}]
    if not document["bus"]:
        raise ValidationError(
            "nothing to simulate: give --dlt645-tcp, --modbus-tcp, --modbus-rtu-tcp,"
            " --cjt188-tcp or --mqtt-broker (or --config FILE)"
        )
    return document


def build_config(
    *,
    config: Path | None,
    meters: int,
    speed: float | None,
    seed: int | None,
    endpoints: dict[str, str | None],
) -> SimulatorConfig:
    if config is not None:
        given = [f"--{name.replace('_', '-')}" for name, value in endpoints.items() if value]
        if given:
            raise ValidationError(f"{', '.join(given)}: the config file names the sockets")
        return load_config(config, seed=seed, speed=speed)
    document = default_document(meters=meters, **endpoints)
    return parse_config(document, seed=seed, speed=speed)


async def serve(simulation: Simulation) -> None:
    """Start, print where it listens, run until SIGINT or SIGTERM, stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await simulation.start()
    try:
        started = simulation.started_at.astimezone(simulation.config.zone)
        speed = simulation.clock.speed
        print(f"meterdesk simulator: simulated time {started:%Y-%m-%d %H:%M:%S%z}, ×{speed:g}")
        for line in simulation.describe():
            print(f"  {line}")
        print("Ctrl-C to stop.", flush=True)
        await stop.wait()
    finally:
        await simulation.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def run_simulator(
    *,
    dlt645_tcp: str | None = None,
    modbus_tcp: str | None = None,
    modbus_rtu_tcp: str | None = None,
    cjt188_tcp: str | None = None,
    mqtt_broker: str | None = None,
    meters: int = 3,
    config: Path | None = None,
    speed: float | None = None,
    seed: int | None = None,
) -> None:
    """What ``meterdesk simulate`` does (blocks until SIGINT / SIGTERM)."""
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    endpoints = {
        "dlt645_tcp": dlt645_tcp,
        "modbus_tcp": modbus_tcp,
        "modbus_rtu_tcp": modbus_rtu_tcp,
        "cjt188_tcp": cjt188_tcp,
        "mqtt_broker": mqtt_broker,
    }
    built = build_config(config=config, meters=meters, speed=speed, seed=seed, endpoints=endpoints)
    asyncio.run(_main(built))


async def _main(config: SimulatorConfig) -> None:
    await serve(Simulation(config))
