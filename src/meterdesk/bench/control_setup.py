"""Setting up ``meterdesk bench control``'s database.

- The background: the seeded ingest workload (:func:`meterdesk.bench.setup.prepare`: meters with
  open accounts and credit, written in bulk), its gateways, and its meters made measure-only
  (protocol ``manual``: a background account that runs into arrears is cut on paper, but sends
  no command, so every command on the wire is one the bench times).
- The controlled accounts, through the services an operator would use: a flat tariff; per line a
  gateway (MQTT) and a DL/T 645 bus at the simulator's port; per meter ``create_meter``,
  ``link_meter`` and ``open_account`` with a credit sized to run out at its own moment.
"""

from __future__ import annotations

import socket
from decimal import ROUND_DOWN, Decimal

from sqlalchemy import select, update

from meterdesk.bench import setup
from meterdesk.bench.control_results import Controlled
from meterdesk.bench.control_sim import METERS_PER_LINE, SimJob
from meterdesk.bench.mqtt_gateways import gateway_of
from meterdesk.bench.workload import START, Workload, build
from meterdesk.billing import accounts
from meterdesk.db.bulk import bulk_insert
from meterdesk.db.database import Database
from meterdesk.db.types import instant_int
from meterdesk.devices import service as devices
from meterdesk.devices.tables import commands, gateways
from meterdesk.metering import service as metering
from meterdesk.metering.tables import meters
from meterdesk.sites.tables import organisations, sites
from meterdesk.tariffs import service as tariffs

ACTOR = "bench:control"
FIRST_ADDRESS = 900_001  # controlled meters' DL/T 645 addresses: far from the background's
OPENING = Decimal("1000.00")  # every controlled meter's register when the run starts
RATED_KW = Decimal(720)  # × 0.5 (the constant profile) = 0.1 kWh a second, ±20 % noise per hour
PRICE = Decimal("1.2000")  # CNY/kWh: ~0.12 CNY a second per controlled meter
FEN_PER_S = RATED_KW / 2 / 3600 * PRICE * 100
READINGS_PER_BACKGROUND_METER = 60  # keeps every background account's use inside its credit
POLL_INTERVAL_S = 86_400  # the poller reads each controlled line's first meter at start only


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def background_workload(seed: int, rate: int, load_s: float) -> Workload:
    """Enough distinct readings for ``rate`` readings/s during ``load_s`` (with 10 % to spare)."""
    needed = int(rate * load_s * 1.1)
    count = max(1000, -(-needed // READINGS_PER_BACKGROUND_METER))
    return build(seed=seed, meters=count, rounds=-(-needed // count))


def prepare_background(db: Database, workload: Workload) -> None:
    setup.prepare(db, workload)
    with db.transaction() as conn:
        conn.execute(update(meters).values(protocol="manual"))
        org, site = conn.execute(select(meters.c.organisation_id, meters.c.site_id).limit(1)).one()
    _background_gateways(db, workload, org, site)


def _background_gateways(db: Database, workload: Workload, org: int, site: int) -> None:
    """The gateways ``bench mqtt``'s publishers act for (product key set per run later)."""
    serials = sorted({gateway_of(m.index) for m in workload.meters})
    columns = ("organisation_id", "site_id", "serial", "name", "uplink", "state", "created_at")
    rows = [
        (org, site, serial, f"Bench gateway {serial}", "mqtt", "unknown", instant_int(START))
        for serial in serials
    ]
    with db.transaction() as conn:
        bulk_insert(conn, gateways, columns, rows)


def organisation(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(organisations.c.id).limit(1)).scalar_one())


def _site(db: Database, org: int) -> int:
    with db.read() as conn:
        found = conn.execute(select(sites.c.id).where(sites.c.organisation_id == org).limit(1))
        return int(found.scalar_one())


def credit_for(k: int, count: int, lead_s: float, spread_s: float) -> Decimal:
    """Credit that runs out ``lead_s`` to ``lead_s + spread_s`` seconds after the loads start,
    one account after the other."""
    seconds = lead_s + spread_s * (k + 0.5) / count
    return (FEN_PER_S * Decimal(str(seconds)) / 100).quantize(Decimal("0.01"), ROUND_DOWN)


def prepare_controlled(
    db: Database, job: SimJob, ports: dict[str, int], *, lead_s: float, spread_s: float
) -> list[Controlled]:
    org = organisation(db)
    site = _site(db, org)
    tariff = tariffs.create_tariff(
        db,
        organisation_id=org,
        name="Control flat",
        definition={
            "utility": "electricity",
            "versions": [{"effective_from": "2026-01-01", "prices": {"flat": str(PRICE)}}],
        },
        actor=ACTOR,
    )
    buses = [_line(db, job, org, site, line, ports) for line in range(job.lines)]
    return [
        _account(
            db, job, org, site, tariff, buses[k // METERS_PER_LINE], k,
            credit_for(k, job.meters, lead_s, spread_s),
        )
        for k in range(job.meters)
    ]  # fmt: skip


def _line(db: Database, job: SimJob, org: int, site: int, line: int, ports: dict[str, int]) -> int:
    gateway = devices.create_gateway(
        db,
        organisation_id=org,
        site_id=site,
        serial=job.gateway_sn(line),
        name=f"Control gateway {line}",
        uplink="mqtt",
        actor=ACTOR,
        product_key=job.product_key,
    )
    name = job.line_name(line)
    spec = devices.BusSpec(
        name,
        "dlt645",
        "tcp",
        f"127.0.0.1:{ports[name]}",
        gateway_id=gateway,
        poll_interval_s=POLL_INTERVAL_S,
    )
    return devices.create_bus(db, organisation_id=org, spec=spec, actor=ACTOR)


def _account(
    db: Database, job: SimJob, org: int, site: int, tariff: int, bus: int, k: int, credit: Decimal
) -> Controlled:
    spec = metering.MeterSpec(
        number=f"C{k:05d}", utility="electricity", kind="single_phase", site_id=site
    )
    meter = metering.create_meter(db, organisation_id=org, spec=spec, actor=ACTOR)
    address = job.address(k)
    devices.link_meter(
        db, organisation_id=org, meter_id=meter, bus_id=bus, address=address, actor=ACTOR
    )
    request = accounts.OpenAccount(
        number=f"CA{k:05d}",
        customer_id=1,
        meters=[accounts.MeterOpening(meter, tariff, OPENING)],
        initial_credit=credit,
    )
    opened = accounts.open_account(db, organisation_id=org, request=request, actor=ACTOR)
    return Controlled(address, meter, opened.account_id, int(credit * 100), OPENING, PRICE)


def confirmed(db: Database, by_meter: dict[int, Controlled]) -> tuple[set[int], set[int]]:
    """(meters whose trip is confirmed, meters whose close is confirmed)."""
    with db.read() as conn:
        rows = conn.execute(
            select(commands.c.meter_id, commands.c.kind).where(
                commands.c.status == "confirmed",
                commands.c.kind.in_(("relay_trip", "relay_close")),
            )
        ).all()
    tripped = {int(m) for m, kind in rows if kind == "relay_trip" and m in by_meter}
    restored = {int(m) for m, kind in rows if kind == "relay_close" and m in by_meter}
    return tripped, restored
