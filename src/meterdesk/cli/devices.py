"""``meterdesk gateway|bus`` and ``meterdesk meter link|unlink`` — where meters answer — and
``meterdesk poll``, the poller in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Annotated, Any

import typer

from meterdesk.cli.common import (
    ActorOption,
    JsonOption,
    OrgOption,
    app,
    emit,
    handled,
    organisation_id,
    stderr,
    who,
)
from meterdesk.cli.places import site_id
from meterdesk.devices import service
from meterdesk.devices.status import load_meter_states
from meterdesk.devices.tables import buses, gateways
from meterdesk.metering import service as metering
from meterdesk.metering.tables import meters
from meterdesk.reports import devices as device_lists
from meterdesk.shared.errors import ValidationError

gateway_cli = typer.Typer(help="Gateways and DTUs that carry buses.", no_args_is_help=True)
bus_cli = typer.Typer(
    help="Buses: RS485/M-Bus lines and Modbus TCP endpoints.", no_args_is_help=True
)


@gateway_cli.command("create")
def gateway_create(
    serial: str,
    org: OrgOption,
    site: Annotated[str, typer.Option(help="site the gateway is installed in")],
    name: Annotated[str, typer.Option()] = "",
    uplink: Annotated[
        str, typer.Option(help="modbus_tcp|transparent_tcp|mqtt|hj212")
    ] = "transparent_tcp",
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    product_key: Annotated[str | None, typer.Option(help="MQTT product key")] = None,
    access_password: Annotated[
        str | None, typer.Option(help="HJ212 gateways: the access password (PW) they send")
    ] = None,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Register a gateway (or transparent DTU)."""
    with handled():
        o = organisation_id(org)
        new = service.create_gateway(
            app().db,
            organisation_id=o,
            site_id=site_id(o, site),
            serial=serial,
            name=name or serial,
            uplink=uplink,
            host=host,
            port=port,
            product_key=product_key,
            access_password=access_password,
            actor=who(actor),
        )
        emit(
            {"id": new, "serial": serial},
            as_json,
            lambda v: f"gateway {v['serial']} created (id {v['id']})",
        )


@gateway_cli.command("set-password")
def gateway_set_password(
    serial: str,
    org: OrgOption,
    password: Annotated[
        str,
        typer.Option(
            prompt=True, hide_input=True, help="the access password (PW) the HJ212 gateway sends"
        ),
    ],
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Set or change an HJ212 gateway's access password; its packets are refused until set."""
    with handled():
        o = organisation_id(org)
        gateway_id = service.find_by_name(app().db, organisation_id=o, table=gateways, name=serial)
        service.set_access_password(
            app().db, organisation_id=o, gateway_id=gateway_id, password=password, actor=who(actor)
        )
        emit(
            {"id": gateway_id, "serial": serial, "access_password_set": True},
            as_json,
            lambda v: f"gateway {v['serial']}: access password set",
        )


@gateway_cli.command("list")
def gateway_list(org: OrgOption, as_json: JsonOption = False) -> None:
    """Gateways with their state (online / lost) and when they were last seen."""
    with handled():
        rows = service.list_rows(app().db, organisation_id=organisation_id(org), table=gateways)
        emit(
            rows,
            as_json,
            lambda rs: "\n".join(
                f"{r['serial']:<16} {r['uplink']:<16} {r['state']:<8} {r['last_seen_at'] or '-'}"
                for r in rs
            ),
        )


@bus_cli.command("create")
def bus_create(
    name: str,
    org: OrgOption,
    protocol: Annotated[str, typer.Option(help="dlt645|modbus_tcp|modbus_rtu|cjt188")],
    endpoint: Annotated[
        str, typer.Option(help="host:port, or a serial device such as /dev/ttyUSB0")
    ],
    transport: Annotated[str, typer.Option(help="tcp|serial|mqtt")] = "tcp",
    gateway: Annotated[str | None, typer.Option(help="gateway serial")] = None,
    baud: Annotated[
        int | None, typer.Option(help="default: 2400 for DL/T 645 and CJ/T 188, 9600 for Modbus")
    ] = None,
    parity: Annotated[
        str | None, typer.Option(help="N|E|O (default E for DL/T 645 and CJ/T 188)")
    ] = None,
    timeout_ms: Annotated[int, typer.Option(help="per-request timeout")] = 1000,
    poll_interval_s: Annotated[
        int, typer.Option(help="every meter on the bus is read this often")
    ] = 60,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Register a bus: one line (or endpoint) with one request in flight at a time."""
    with handled():
        o = organisation_id(org)
        gateway_id = None
        if gateway is not None:
            gateway_id = service.find_by_name(
                app().db, organisation_id=o, table=gateways, name=gateway
            )
        spec = service.BusSpec(
            name,
            protocol,
            transport,
            endpoint,
            gateway_id,
            baud,
            parity,
            timeout_ms,
            poll_interval_s,
        )
        new = service.create_bus(app().db, organisation_id=o, spec=spec, actor=who(actor))
        emit(
            {"id": new, "name": name}, as_json, lambda v: f"bus {v['name']} created (id {v['id']})"
        )


@bus_cli.command("list")
def bus_list(org: OrgOption, as_json: JsonOption = False) -> None:
    """Buses with protocol, endpoint and poll interval."""
    with handled():
        rows = service.list_rows(app().db, organisation_id=organisation_id(org), table=buses)
        emit(
            rows,
            as_json,
            lambda rs: "\n".join(
                f"{r['name']:<16} {r['protocol']:<11} {r['transport']:<7} {r['endpoint']:<24} "
                f"every {r['poll_interval_s']} s"
                for r in rs
            ),
        )


@bus_cli.command("status")
def bus_status(name: str, org: OrgOption, as_json: JsonOption = False) -> None:
    """What the poller last saw of each meter on the bus."""
    with handled():
        o = organisation_id(org)
        bus_id = service.find_by_name(app().db, organisation_id=o, table=buses, name=name)
        with app().db.read() as conn:
            found = dict(
                conn.execute(
                    meters.select()
                    .with_only_columns(meters.c.id, meters.c.number)
                    .where(meters.c.bus_id == bus_id)
                )
                .tuples()
                .all()
            )
            states = load_meter_states(conn, found)
        rows = [
            {"meter": number, **(states[m].row() if m in states else {"state": "unknown"})}
            for m, number in found.items()
        ]
        emit(rows, as_json, _status_text)


def _status_text(rows: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{r['meter']:<12} {r['state']:<8} seen {r.get('last_seen_at') or '-'} failures {r.get('failures', 0)} "
        f"relay {r.get('relay') or '-'} valve {r.get('valve') or '-'} money {r.get('remaining_money') or '-'}"
        for r in rows
    )


def _options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise ValidationError(f"option {pair!r}: give KEY=VALUE")
        options[key.strip()] = value.strip()
    return options


def meter_list(
    org: OrgOption,
    q: Annotated[str | None, typer.Option(help="part of a meter number or room name")] = None,
    connection: Annotated[str | None, typer.Option(help="online | lost | unknown")] = None,
    utility: Annotated[str | None, typer.Option(help="electricity | water")] = None,
    drift: Annotated[
        bool, typer.Option(help="only meters whose relay or valve disagrees with their account")
    ] = False,
    limit: Annotated[int, typer.Option(help="at most this many, by number")] = 200,
    as_json: JsonOption = False,
) -> None:
    """Meters with their room, line address, online state (在线 / 失连), last contact and relay
    or valve, as the console's meter list shows them."""
    with handled():
        if connection is not None and connection not in device_lists.CONNECTIONS:
            raise ValidationError("connection: give online, lost or unknown")
        if utility is not None and utility not in ("electricity", "water"):
            raise ValidationError("utility: give electricity or water")
        if not 1 <= limit <= 10_000:
            raise ValidationError("limit: give 1 to 10000")
        where = device_lists.MeterFilter(q or None, connection, utility, drift)
        with app().db.read() as conn:
            rows, total = device_lists.meter_page(
                conn, organisation_id(org), where, offset=0, limit=limit
            )
        emit(rows, as_json, lambda found: _meter_lines(found, total))


def _meter_lines(rows: list[dict[str, Any]], total: int) -> str:
    if not rows:
        return "no meters"
    lines = [
        f"{'meter':<12} {'utility':<12} {'room':<14} {'protocol':<10} {'address':<15} "
        f"{'state':<8} {'last seen (UTC)':<26} switch"
    ]
    for r in rows:
        seen = r["last_seen_at"].isoformat(timespec="seconds") if r["last_seen_at"] else "-"
        switch = r["relay"] or r["valve"] or "-"
        lines.append(
            f"{r['number']:<12} {r['utility']:<12} {r['room'] or '-':<14} "
            f"{r['protocol'] or '-':<10} {r['address'] or '-':<15} {r['connection']:<8} "
            f"{seen:<26} {switch}"
        )
    if total > len(rows):
        lines.append(f"… {len(rows)} of {total}; narrow with --q/--connection or raise --limit")
    return "\n".join(lines)


def link_meter(
    number: str,
    org: OrgOption,
    bus: Annotated[str, typer.Option(help="bus name")],
    address: Annotated[
        str, typer.Option(help="DL/T 645: 12 digits; CJ/T 188: 14; Modbus: unit 1–247")
    ],
    option: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE, e.g. map=reference_prepaid, password=123456"),
    ] = None,
    actor: ActorOption = "",
) -> None:
    """Put a meter on a bus at an address."""
    with handled():
        o = organisation_id(org)
        db = app().db
        bus_id = service.find_by_name(db, organisation_id=o, table=buses, name=bus)
        with db.read() as conn:
            meter_id = metering.find_meter(conn, organisation_id=o, number=number)
        service.link_meter(
            db,
            organisation_id=o,
            meter_id=meter_id,
            bus_id=bus_id,
            address=address,
            options=_options(option or []),
            actor=who(actor),
        )
        typer.echo(f"meter {number} linked to bus {bus} at {address}")


def unlink_meter(number: str, org: OrgOption, actor: ActorOption = "") -> None:
    """Take a meter off its bus; it is no longer polled."""
    with handled():
        o = organisation_id(org)
        with app().db.read() as conn:
            meter_id = metering.find_meter(conn, organisation_id=o, number=number)
        service.unlink_meter(app().db, organisation_id=o, meter_id=meter_id, actor=who(actor))
        typer.echo(f"meter {number} unlinked")


def poll(
    org: Annotated[
        str | None,
        typer.Option("--org", envvar="METERDESK_ORG", help="one organisation; default all"),
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(help="stop after this long; default: until Ctrl-C")
    ] = None,
) -> None:
    """Poll every meter on its bus's schedule and store the readings."""
    from meterdesk.devices.poller import DatabaseSink, Poller, PollerSettings

    with handled():
        built = app()
        plans = service.load_poll_plans(
            built.db, organisation_id=organisation_id(org) if org else None
        )
        stderr(f"polling {sum(len(p.meters) for p in plans)} meters on {len(plans)} buses")
        # From the stored status, as `meterdesk run` starts: a restart while a meter is lost
        # is not a new loss (no second meter_offline message).
        settings = PollerSettings()
        status = service.stored_status_book(built.db, plans, lost_after=settings.lost_after)
        poller = Poller(
            plans,
            sink=DatabaseSink(built.db, built.ingestor),
            settings=settings,
            status=status,
        )
        asyncio.run(_poll_until_stopped(poller, seconds))
        stderr(
            f"stopped: {poller.stats.reads} reads, {poller.stats.failures} failures, "
            f"{poller.stats.readings_flushed} readings stored"
        )


async def _poll_until_stopped(poller: Any, seconds: float | None) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, poller.stop)
    if seconds is not None:
        loop.call_later(seconds, poller.stop)
    await poller.run()


def bench_poll(
    quick: Annotated[bool, typer.Option(help="small run, under a minute")] = False,
    lines: Annotated[int, typer.Option(help="simulated RS485 lines (TCP endpoints)")] = 20,
    meters: Annotated[int, typer.Option(help="meters per line")] = 25,
    duration_s: Annotated[float | None, typer.Option(help="seconds per run")] = None,
    runs: Annotated[int | None, typer.Option(help="runs (the median is reported)")] = None,
    server: Annotated[
        str, typer.Option(help="lean|pymodbus|simulator: who plays the meters")
    ] = "lean",
    ingest: Annotated[
        bool, typer.Option(help="also store readings through the money core")
    ] = False,
) -> None:
    """P6: meter reads per second of the poller, one request in flight per line."""
    from meterdesk.bench.poll import run

    run(
        quick=quick,
        lines=lines,
        meters=meters,
        duration_s=duration_s,
        runs=runs,
        server=server,
        ingest=ingest,
    )
