"""The ``meterdesk`` command: every use case of the money core from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from meterdesk.cli import (
    accounts,
    commands,
    control,
    devices,
    listings,
    notices,
    places,
    readings,
    summaries,
    tariff_change,
    tariffs,
    users,
)
from meterdesk.cli import notifications as notification_commands
from meterdesk.cli.common import JsonOption, app, emit, handled

cli = typer.Typer(
    help="meterdesk — prepaid water & electricity platform (预付费水电管理平台).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
cli.add_typer(places.org_cli, name="org")
cli.add_typer(places.site_cli, name="site")
cli.add_typer(places.building_cli, name="building")
cli.add_typer(places.floor_cli, name="floor")
cli.add_typer(places.room_cli, name="room")
cli.add_typer(places.customer_cli, name="customer")
cli.add_typer(places.meter_cli, name="meter")
cli.add_typer(tariffs.tariff_cli, name="tariff")
cli.add_typer(accounts.account_cli, name="account")
accounts.account_cli.command("set-tariff")(tariff_change.set_tariff)
cli.add_typer(readings.readings_cli, name="readings")
cli.add_typer(readings.quarantine_cli, name="quarantine")
cli.command("recharge")(accounts.recharge)
cli.command("refund")(accounts.refund)
cli.command("pay-arrears")(accounts.pay_arrears)
cli.command("reverse")(accounts.reverse)
cli.add_typer(commands.command_cli, name="command")
cli.add_typer(users.user_cli, name="user")
cli.add_typer(devices.gateway_cli, name="gateway")
cli.add_typer(devices.bus_cli, name="bus")
places.meter_cli.command("list")(devices.meter_list)
places.meter_cli.command("link")(devices.link_meter)
places.meter_cli.command("unlink")(devices.unlink_meter)
cli.command("poll")(devices.poll)
cli.add_typer(control.alarm_cli, name="alarm-plan")
cli.add_typer(control.policy_cli, name="policy")
cli.add_typer(control.friendly_cli, name="friendly")
cli.add_typer(control.holiday_cli, name="holiday")
cli.command("emergency-credit")(control.emergency)
cli.command("control-tick")(control.tick_command)
cli.add_typer(notification_commands.notification_cli, name="notification")
cli.add_typer(notices.notice_cli, name="notice")
notification_commands.notification_cli.add_typer(summaries.summaries_cli, name="summaries")
places.org_cli.command("list")(listings.org_list)
places.site_cli.command("list")(listings.site_list)
places.building_cli.command("list")(listings.building_list)
places.floor_cli.command("list")(listings.floor_list)
places.room_cli.command("list")(listings.room_list)
places.room_cli.command("status")(listings.room_status)
places.customer_cli.command("list")(listings.customer_list)
accounts.account_cli.command("list")(listings.account_list)
tariffs.tariff_cli.command("list")(listings.tariff_list)
users.user_cli.command("list")(listings.user_list)
cli.add_typer(listings.audit_cli, name="audit")

bench_cli = typer.Typer(
    help="Benchmarks that print figures and ratios (see docs/benchmarks.md).", no_args_is_help=True
)
cli.add_typer(bench_cli, name="bench")
bench_cli.command("poll")(devices.bench_poll)


@cli.command("migrate")
def migrate_command(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
) -> None:
    """Bring the database schema up to date (SQLite default, or METERDESK_DATABASE_URL)."""
    from meterdesk.bootstrap import build
    from meterdesk.db import migrate

    with handled():
        settings = build().settings
        migrate.upgrade(settings.resolved_database_url(), revision)
        typer.echo(f"database at revision {migrate.current(settings.resolved_database_url())}")


@cli.command("check")
def check_command(as_json: JsonOption = False) -> None:
    """Check the whole database: the books balance and every reference resolves (exit 1 if not)."""
    from meterdesk.db.consistency import dangling_references, ledger_differences

    with handled():
        db = app().db
        with db.read() as conn:
            found = {"books": ledger_differences(conn), "references": dangling_references(conn)}
        sound = not any(found["books"].values()) and not any(found["references"].values())
        emit(
            {**found, "ok": sound},
            as_json,
            lambda v: "\n".join(
                [
                    f"entries sum to {v['books']['entries_sum']} fen (must be 0)",
                    f"ledger accounts whose balance is not their transfers' net: "
                    f"{v['books']['balances_off']}",
                    *(
                        f"{name}: {count} rows point at nothing"
                        for name, count in v["references"].items()
                    ),
                    "ok" if v["ok"] else "NOT OK",
                ]
            ),
        )
    if not sound:
        raise typer.Exit(1)


@cli.command("demo")
def demo_command(
    hours: Annotated[float, typer.Option(help="simulated hours to run")] = 72.0,
    speed: Annotated[float, typer.Option(help="simulated seconds per real second")] = 7200.0,
    fresh: Annotated[bool, typer.Option(help="start from an empty demo database")] = True,
    serve: Annotated[
        bool, typer.Option(help="then serve the console at http://127.0.0.1:8000")
    ] = True,
    port: Annotated[int, typer.Option(help="console port")] = 8000,
) -> None:
    """Build a sample site on simulated meters, run it in accelerated time, then serve the
    console while the meters go on in real time."""
    from meterdesk.demo import DemoResult, run_demo

    def serve_console(result: DemoResult) -> None:
        _serve_demo(result.organisation, port)

    with handled():
        run_demo(hours=hours, speed=speed, fresh=fresh, then=serve_console if serve else None)


def _serve_demo(organisation: str, port: int) -> None:
    from meterdesk.api.serve import serve
    from meterdesk.cli.common import app
    from meterdesk.sites.service import organisation_by_name
    from meterdesk.web.demo_login import ensure_demo_login

    username, password = ensure_demo_login(
        app().db, organisation_by_name(app().db, name=organisation)
    )
    typer.echo(
        f"\nConsole: http://127.0.0.1:{port}  login: {username}  password: {password}  (Ctrl-C stops)"
    )
    serve(app(), port=port)


@cli.command("simulate")
def simulate_command(
    dlt645_tcp: Annotated[
        str | None, typer.Option("--dlt645-tcp", help="HOST:PORT for DL/T 645 meters")
    ] = None,
    modbus_tcp: Annotated[
        str | None, typer.Option("--modbus-tcp", help="HOST:PORT for Modbus TCP meters")
    ] = None,
    modbus_rtu_tcp: Annotated[
        str | None, typer.Option("--modbus-rtu-tcp", help="HOST:PORT for Modbus RTU over TCP")
    ] = None,
    cjt188_tcp: Annotated[
        str | None, typer.Option("--cjt188-tcp", help="HOST:PORT for CJ/T 188 water meters")
    ] = None,
    mqtt_broker: Annotated[
        str | None, typer.Option("--mqtt-broker", help="HOST:PORT of the broker for a gateway")
    ] = None,
    hj212_server: Annotated[
        str | None,
        typer.Option("--hj212-server", help="HOST:PORT of ingest-hj212 for an HJ212 gateway"),
    ] = None,
    hj212_password: Annotated[
        str | None,
        typer.Option("--hj212-password", help="the HJ212 gateway's PW (default 123456)"),
    ] = None,
    meters: Annotated[int, typer.Option(help="meters per socket (without --config)")] = 3,
    config: Annotated[Path | None, typer.Option(help="TOML file describing the site")] = None,
    speed: Annotated[
        float | None, typer.Option(help="simulated seconds per real second (default 1)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed of load curves and start values")] = None,
) -> None:
    """Virtual meters and gateways on real sockets, until Ctrl-C (see docs/simulator.md)."""
    from meterdesk.simulator.cli import run_simulator

    with handled():
        run_simulator(
            dlt645_tcp=dlt645_tcp,
            modbus_tcp=modbus_tcp,
            modbus_rtu_tcp=modbus_rtu_tcp,
            cjt188_tcp=cjt188_tcp,
            mqtt_broker=mqtt_broker,
            hj212_server=hj212_server,
            hj212_password=hj212_password,
            meters=meters,
            config=config,
            speed=speed,
            seed=seed,
        )


@bench_cli.command("ingest")
def bench_ingest(
    quick: Annotated[bool, typer.Option(help="small run, under a minute")] = False,
    database_url: Annotated[
        str | None, typer.Option(help="PostgreSQL URL; default: a temporary SQLite file")
    ] = None,
    meters: Annotated[int | None, typer.Option(help="meters in the workload")] = None,
    seed: Annotated[int, typer.Option()] = 1,
    repeat: Annotated[
        int, typer.Option(min=1, help="rounds on fresh databases; the JSON gives medians")
    ] = 1,
) -> None:
    """Readings → dedupe → price → ledger: ours vs a raw bulk insert vs one transaction per reading."""
    from meterdesk.bench.ingest import run

    run(quick=quick, database_url=database_url, meters=meters, seed=seed, repeat=repeat)


@bench_cli.command("floor")
def bench_floor(
    meters: Annotated[int, typer.Option(help="meters in the workload")] = 10_000,
    rounds: Annotated[int, typer.Option(help="readings per meter")] = 20,
    seed: Annotated[int, typer.Option()] = 1,
    database_url: Annotated[
        str | None,
        typer.Option(help="PostgreSQL URL (a scratch schema per run); default: SQLite files"),
    ] = None,
) -> None:
    """The leanest conceivable ingest of the `bench ingest` workload, as a measuring stick for P1
    (SQLite) and P1-pg (PostgreSQL)."""
    from meterdesk.bench.floor import run

    run(meters=meters, rounds=rounds, seed=seed, database_url=database_url)


@cli.command("ingest-mqtt")
def ingest_mqtt_command(
    broker: Annotated[str, typer.Option(help="MQTT broker HOST:PORT")] = "127.0.0.1:1883",
    client_id: Annotated[
        str, typer.Option(help="stable MQTT client id (keeps the session); one per process")
    ] = "meterdesk-ingest",
    share_group: Annotated[
        str | None, typer.Option(help="MQTT shared-subscription group, to run several processes")
    ] = None,
    topic_filter: Annotated[str, typer.Option(help="uplink topics")] = "data/up/+/+",
    window_ms: Annotated[int, typer.Option(help="group-commit window")] = 50,
    max_batch: Annotated[int, typer.Option(help="readings per commit at most")] = 2000,
    gateway_silence: Annotated[
        float,
        typer.Option(
            help="seconds an MQTT gateway may stay silent, while this process listens, before it "
            "is marked lost and announced (3 × its MQTT bus's poll interval when longer)"
        ),
    ] = 900.0,
) -> None:
    """Ingest gateway reports over MQTT; each is acknowledged after its batch committed; MQTT
    gateways silent too long are marked lost. Ctrl-C (or SIGTERM) commits and acknowledges what
    arrived, then stops."""
    from meterdesk.cli.common import app
    from meterdesk.devices.mqtt_ingest import MqttSettings, parse_broker, serve

    with handled():
        host, port = parse_broker(broker)
        settings = MqttSettings(
            host=host,
            port=port,
            client_id=client_id,
            share_group=share_group,
            topic_filter=topic_filter,
            window_s=window_ms / 1000,
            max_batch_readings=max_batch,
        )
        if gateway_silence <= 0:
            raise typer.BadParameter("must be positive", param_hint="--gateway-silence")
        typer.echo(f"ingesting {settings.subscription} from {host}:{port} as {client_id}")
        stats = serve(app().db, settings, gateway_silence_s=gateway_silence)
        typer.echo(
            f"stopped: {stats.messages} reports in {stats.batches} commits, {stats.accepted} readings accepted, "
            f"{stats.duplicates} duplicates, {stats.resent} re-sent reports, {stats.rejected} refused, "
            f"{stats.quarantined} quarantined"
        )


@cli.command("ingest-hj212")
def ingest_hj212_command(
    listen: Annotated[
        str, typer.Option(help="HOST:PORT to accept HJ212 gateways on (0.0.0.0:PORT: all)")
    ] = "127.0.0.1:9212",
    idle_timeout: Annotated[
        float, typer.Option(help="seconds without a valid packet before a connection is closed")
    ] = 600.0,
    window_ms: Annotated[int, typer.Option(help="group-commit window")] = 50,
    max_batch: Annotated[int, typer.Option(help="readings per commit at most")] = 2000,
    gateway_silence: Annotated[
        float,
        typer.Option(
            help="seconds an HJ212 gateway may stay silent, while this process listens, before "
            "it is marked lost and announced"
        ),
    ] = 900.0,
) -> None:
    """Accept HJ212-2017 gateways over TCP and ingest their data packets (CN 2011/2051/2061/
    2031); a packet that asks for an answer gets 9014 after its batch committed; HJ212 gateways
    silent too long are marked lost. Ctrl-C (or SIGTERM) commits and answers what arrived, then
    stops. See docs/hj212.md."""
    from meterdesk.cli.common import app
    from meterdesk.devices.hj212.server import Hj212Settings, parse_listen, serve

    with handled():
        host, port = parse_listen(listen)
        if idle_timeout <= 0:
            raise typer.BadParameter("must be positive", param_hint="--idle-timeout")
        if gateway_silence <= 0:
            raise typer.BadParameter("must be positive", param_hint="--gateway-silence")
        settings = Hj212Settings(
            host=host,
            port=port,
            idle_timeout_s=idle_timeout,
            window_s=window_ms / 1000,
            max_batch_readings=max_batch,
        )
        db = app().db
        typer.echo(f"listening for HJ212 gateways on {host}:{port}", err=True)
        stats, connections = serve(db, settings, gateway_silence_s=gateway_silence)
        typer.echo(
            f"stopped: {connections.connections} connections, {stats.messages} packets in "
            f"{stats.batches} commits, {stats.accepted} readings accepted, {stats.duplicates} "
            f"duplicates, {stats.rejected} refused, {stats.quarantined} quarantined, "
            f"{connections.skipped_bytes} bytes skipped, {stats.replies_sent} answers, "
            f"{connections.lockouts.lockouts} wrong-password lock-outs"
        )


@bench_cli.command("mqtt")
def bench_mqtt(
    quick: Annotated[bool, typer.Option(help="small run, under a minute")] = False,
    database_url: Annotated[
        str | None, typer.Option(help="PostgreSQL URL; default: a temporary SQLite file")
    ] = None,
    broker: Annotated[str, typer.Option(help="MQTT broker HOST:PORT")] = "127.0.0.1:1883",
    meters: Annotated[int | None, typer.Option(help="meters in the workload")] = None,
    rate: Annotated[
        int | None,
        typer.Option(help="readings/s for the paced phase (default: half the saturated rate)"),
    ] = None,
    publishers: Annotated[int, typer.Option(help="gateway publisher processes")] = 2,
    seed: Annotated[int, typer.Option()] = 1,
) -> None:
    """Readings end to end through MQTT (QoS 1, 10 per report) with acks after commit: target P2."""
    from meterdesk.bench.mqtt import run

    run(
        quick=quick,
        database_url=database_url,
        broker=broker,
        meters=meters,
        seed=seed,
        rate=rate,
        publishers=publishers,
    )


@bench_cli.command("control")
def bench_control(
    quick: Annotated[bool, typer.Option(help="20 accounts, 25 s of load: under a minute")] = False,
    database_url: Annotated[
        str | None, typer.Option(help="PostgreSQL URL; default: a temporary SQLite file")
    ] = None,
    broker: Annotated[str, typer.Option(help="MQTT broker HOST:PORT")] = "127.0.0.1:1883",
    rate: Annotated[
        int | None, typer.Option(help="background readings/s (default 10,000: half of P2)")
    ] = None,
    meters: Annotated[
        int | None, typer.Option(help="accounts whose credit runs out (simulated meters)")
    ] = None,
    publishers: Annotated[int, typer.Option(help="background gateway processes")] = 2,
    seconds: Annotated[
        float | None, typer.Option(help="how long the background load runs (25 quick, 80 full)")
    ] = None,
    seed: Annotated[int, typer.Option()] = 1,
) -> None:
    """Credit gone → trip on the wire, recharge → close on the wire (p99), under MQTT load."""
    from meterdesk.bench.control import run
    from meterdesk.shared.runtime import tune_for_long_running

    if seconds is not None and seconds < 5:
        raise typer.BadParameter("at least 5 seconds", param_hint="--seconds")
    for value, hint in ((rate, "--rate"), (meters, "--meters"), (publishers, "--publishers")):
        if value is not None and value < 1:
            raise typer.BadParameter("must be positive", param_hint=hint)
    tune_for_long_running()  # the runtime in this process, as `meterdesk run` tunes it
    run(
        quick=quick,
        database_url=database_url,
        broker=broker,
        rate=rate,
        meters=meters,
        seed=seed,
        publishers=publishers,
        seconds=seconds,
    )


@cli.command("run")
def run_command(
    broker: Annotated[
        str | None,
        typer.Option(help="MQTT broker HOST:PORT for gateway reports; default: no MQTT ingest"),
    ] = None,
    hj212_listen: Annotated[
        str | None,
        typer.Option(help="HOST:PORT to accept HJ212 gateways on; default: no HJ212 server"),
    ] = None,
    tick_interval: Annotated[
        float, typer.Option(help="seconds between control ticks (alarms repeat, deferred cuts)")
    ] = 60.0,
    gateway_silence: Annotated[
        float,
        typer.Option(
            help="seconds an MQTT gateway may stay silent before it is marked lost and announced "
            "(3 × its MQTT bus's poll interval when longer)"
        ),
    ] = 900.0,
    seconds: Annotated[
        float | None, typer.Option(help="stop after this long; default: until Ctrl-C")
    ] = None,
) -> None:
    """Run the device side: poll every bus, send and confirm commands, ingest MQTT reports (and
    watch MQTT gateways for silence) with --broker, accept HJ212 gateways with --hj212-listen,
    deliver notifications and tick the control loop, in one process, until Ctrl-C."""
    import logging

    from meterdesk.cli.common import app, stderr
    from meterdesk.devices.hj212.server import Hj212Settings, parse_listen
    from meterdesk.devices.mqtt_ingest import MqttSettings, parse_broker
    from meterdesk.runtime import Runtime, RuntimeSettings, run_until_stopped
    from meterdesk.shared.runtime import tune_for_long_running

    with handled():
        mqtt = None
        if broker is not None:
            host, port = parse_broker(broker)
            mqtt = MqttSettings(host=host, port=port, client_id="meterdesk-run")
        hj212 = None
        if hj212_listen is not None:
            hj212_host, hj212_port = parse_listen(hj212_listen)
            hj212 = Hj212Settings(host=hj212_host, port=hj212_port)
        if tick_interval <= 0:
            raise typer.BadParameter("must be positive", param_hint="--tick-interval")
        if gateway_silence <= 0:
            raise typer.BadParameter("must be positive", param_hint="--gateway-silence")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        tune_for_long_running()
        settings = RuntimeSettings(
            mqtt=mqtt,
            hj212=hj212,
            tick_interval_s=tick_interval,
            gateway_silence_s=gateway_silence,
        )
        runtime = Runtime(app().db, settings)
        where = (
            f"MQTT from {broker} with the gateway watchdog"
            if broker
            else "no MQTT (the gateway watchdog runs where MQTT is ingested)"
        )
        if hj212_listen:
            where += f"; HJ212 gateways on {hj212_listen}"
        stderr(f"running: poller, command executor, notifications, control tick; {where}")
        stats = run_until_stopped(runtime, seconds=seconds)
        stderr(
            f"stopped: {stats.reads} reads ({stats.read_failures} failed), "
            f"{stats.readings_stored} readings stored, {stats.ticks} control ticks "
            f"({stats.tick_decisions} decisions), {stats.poller_reloads} poller reloads, "
            f"{stats.gateways_lost} MQTT gateways lost"
        )


@cli.command("serve")
def serve_command(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
) -> None:
    """Serve the REST API (/api/v1, docs at /api/docs) at http://HOST:PORT."""
    from meterdesk.api.serve import serve
    from meterdesk.cli.common import app

    with handled():
        serve(app(), host=host, port=port)


@bench_cli.command("api")
def bench_api(
    quick: Annotated[bool, typer.Option(help="2,000 rooms, fewer requests")] = False,
    database_url: Annotated[
        str | None, typer.Option(help="PostgreSQL URL; default: a temporary SQLite file")
    ] = None,
    rooms: Annotated[int | None, typer.Option(help="rooms (default 10,000)")] = None,
    requests: Annotated[int | None, typer.Option(help="requests per endpoint")] = None,
    seed: Annotated[int, typer.Option()] = 1,
) -> None:
    """P5: the room-monitoring API and page with 10,000 rooms, p95 server time."""
    from meterdesk.bench.api import run

    run(quick=quick, database_url=database_url, rooms_total=rooms, requests=requests, seed=seed)


def main() -> None:
    cli()
