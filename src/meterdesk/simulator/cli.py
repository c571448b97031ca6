"""``meterdesk simulate``: run virtual meters and gateways until SIGINT / SIGTERM.

Without ``--config``, ``--meters N`` builds a default site: N electricity meters (addresses
1..N) on each of the DL/T 645, Modbus TCP and Modbus RTU-over-TCP sockets that are asked for,
N water meters (addresses 1..N) on the CJ/T 188 socket, and with ``--mqtt-broker`` one gateway
``GW0001`` reporting the DL/T 645 and CJ/T 188 meters every minute (simulated), or with
``--hj212-server`` an HJ212 gateway ``HJ0001`` pushing the same meters' minute data (CN 2051)
every simulated minute. Each socket is
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
from meterdesk.simulator.config import SimulatorConfig, load_config, parse_config
from meterdesk.simulator.config_values import endpoint
from meterdesk.simulator.runtime import Simulation

DEFAULT_GATEWAY = "GW0001"
DEFAULT_HJ212_GATEWAY = "HJ0001"  # the MN of the --hj212-server gateway
DEFAULT_INTERVAL_S = 60


def _bus(name: str, protocol: str, listen: str | None) -> dict[str, Any]:
    table: dict[str, Any] = {"name": name, "protocol": protocol}
    if listen:
        endpoint(listen, f"--{name}-tcp")
        table["listen"] = listen
    return table


def _gateway_table(
    mqtt_broker: str | None, hj212_server: str | None, hj212_password: str | None
) -> dict[str, Any] | None:
    """The one gateway of the ``--meters N`` site, if an uplink is asked for."""
    if mqtt_broker and hj212_server:
        raise ValidationError(
            "--mqtt-broker and --hj212-server: a meter has one gateway; give one of them"
            " (or describe both gateways in --config)"
        )
    if hj212_password is not None and not hj212_server:
        raise ValidationError("--hj212-password needs --hj212-server")
    if mqtt_broker:
        endpoint(mqtt_broker, "--mqtt-broker")
        return {"sn": DEFAULT_GATEWAY, "broker": mqtt_broker}
    if not hj212_server:
        return None
    endpoint(hj212_server, "--hj212-server")
    table = {"sn": DEFAULT_HJ212_GATEWAY, "uplink": "hj212", "server": hj212_server}
    return table if hj212_password is None else table | {"password": hj212_password}


def default_document(
    *,
    meters: int,
    dlt645_tcp: str | None = None,
    modbus_tcp: str | None = None,
    modbus_rtu_tcp: str | None = None,
    cjt188_tcp: str | None = None,
    mqtt_broker: str | None = None,
    hj212_server: str | None = None,
    hj212_password: str | None = None,
) -> dict[str, Any]:
    """The config document of the ``--meters N`` site (see the module docstring)."""
    if meters < 1:
        raise ValidationError("--meters must be at least 1")
    gateway_table = _gateway_table(mqtt_broker, hj212_server, hj212_password)
    gateway = gateway_table["sn"] if gateway_table else None
    uplink = mqtt_broker or hj212_server
    lines = [
        ("dlt645", "dlt645", dlt645_tcp, "electricity", dlt645_tcp or uplink),
        ("modbus", "modbus", modbus_tcp, "electricity", modbus_tcp),
        ("modbus-rtu", "modbus-rtu", modbus_rtu_tcp, "electricity", modbus_rtu_tcp),
        ("cjt188", "cjt188", cjt188_tcp, "water", cjt188_tcp or uplink),
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
    if gateway_table:
        document["gateway"] = [gateway_table | {"interval_s": DEFAULT_INTERVAL_S}]
    if not document["bus"]:
        raise ValidationError(
            "nothing to simulate: give --dlt645-tcp, --modbus-tcp, --modbus-rtu-tcp,"
            " --cjt188-tcp, --mqtt-broker or --hj212-server (or --config FILE)"
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
    hj212_server: str | None = None,
    hj212_password: str | None = None,
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
        "hj212_server": hj212_server,
        "hj212_password": hj212_password,
    }
    built = build_config(config=config, meters=meters, speed=speed, seed=seed, endpoints=endpoints)
    asyncio.run(_main(built))


async def _main(config: SimulatorConfig) -> None:
    await serve(Simulation(config))
