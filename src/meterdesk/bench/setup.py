"""Preparing a bench database quickly: the schema, two tariffs, N meters with open accounts and
credit, and their opening readings — written in bulk (the bench times ingest, not setup)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, Engine, insert

from meterdesk.bench.workload import MODULUS, START, TIERED_TARIFF, TOU_TARIFF, ZONE, Workload
from meterdesk.billing.ingest import IncomingReading, Ingestor
from meterdesk.billing.tables import accounts, meter_assignments
from meterdesk.db.bulk import bulk_insert
from meterdesk.db.database import Database
from meterdesk.db.metadata import load_all_tables
from meterdesk.db.types import instant_int, scaled_int
from meterdesk.ledger import repository as ledger
from meterdesk.ledger.model import AccountKind, Reason, TransferRequest
from meterdesk.ledger.tables import ledger_accounts
from meterdesk.metering.model import ReadingSource
from meterdesk.metering.repository import RAW_READING_COLUMNS
from meterdesk.metering.tables import meters, readings
from meterdesk.sites import service as sites
from meterdesk.sites.tables import customers
from meterdesk.tariffs import service as tariffs


@dataclass
class Prepared:
    meter_ids: dict[int, int]  # workload index → meter id
    account_ids: dict[int, int]  # workload index → account id
    opening: dict[int, Decimal]

    def incoming(self, item: tuple[int, datetime, Decimal]) -> IncomingReading:
        index, at, total = item
        return IncomingReading(self.meter_ids[index], at, total)


def prepare(db: Database, workload: Workload) -> Prepared:
    load_all_tables().create_all(db.engine)
    org = sites.create_organisation(db, name="Bench Property Co.", timezone=ZONE)
    site = sites.create_site(db, organisation_id=org, name="Bench Park", timezone=ZONE)
    tariff_ids = {
        "tou": tariffs.create_tariff(
            db, organisation_id=org, name="TOU", definition=TOU_TARIFF, actor="bench"
        ),
        "tiered": tariffs.create_tariff(
            db, organisation_id=org, name="Tiered", definition=TIERED_TARIFF, actor="bench"
        ),
    }
    prepared = Prepared({}, {}, {m.index: m.start_total for m in workload.meters})
    with db.transaction() as conn:
        clearing = ledger.system_account(
            conn, organisation_id=org, code="clearing:cash", kind=AccountKind.CLEARING, at=START
        )
        base = 1000  # ids above what the services created
        meter_rows, ledger_rows, account_rows, assignment_rows, credits = [], [], [], [], []
        for meter in workload.meters:
            meter_id, account_id, wallet, arrears = (
                base + meter.index,
                base + meter.index,
                base + 2 * meter.index,
                base + 2 * meter.index + 1,
            )
            prepared.meter_ids[meter.index], prepared.account_ids[meter.index] = (
                meter_id,
                account_id,
            )
            meter_rows.append(
                (
                    meter_id,
                    org,
                    site,
                    None,
                    f"B{meter.index:06d}",
                    "electricity",
                    "single_phase",
                    "dlt645",
                    f"{meter.index + 1:012d}",
                    meter.ct * 100,
                    100,
                    scaled_int(MODULUS, 4),
                    False,
                    500 * 10**4,
                    None,
                    0,
                    instant_int(START),
                )
            )
            ledger_rows += [
                (wallet, org, f"wallet:B{meter.index:06d}", "wallet", 0, 0, instant_int(START)),
                (
                    arrears,
                    org,
                    f"arrears:B{meter.index:06d}",
                    "arrears",
                    0,
                    None,
                    instant_int(START),
                ),
            ]
            account_rows.append(
                (
                    account_id,
                    org,
                    f"B{meter.index:06d}",
                    None,
                    None,
                    "open",
                    "platform",
                    wallet,
                    arrears,
                    instant_int(START),
                    None,
                    "bench",
                )
            )
            assignment_rows.append(
                (meter_id, account_id, tariff_ids[meter.tariff], instant_int(START), None)
            )
            credits.append(
                TransferRequest(
                    organisation_id=org,
                    idempotency_key=f"bench-credit-{meter.index}",
                    debit_account_id=clearing,
                    credit_account_id=wallet,
                    amount_fen=int(meter.credit * 100),
                    reason=Reason.RECHARGE,
                    actor="bench",
                    created_at=START,
                    account_id=account_id,
                    method="cash",
                )
            )
        bulk_insert(
            conn,
            meters,
            (
                "id",
                "organisation_id",
                "site_id",
                "room_id",
                "number",
                "utility",
                "kind",
                "protocol",
                "address",
                "ct_ratio",
                "pt_ratio",
                "register_modulus",
                "has_band_registers",
                "max_rate_per_hour",
                "installed_on",
                "generation",
                "created_at",
            ),
            meter_rows,
        )
        bulk_insert(
            conn,
            ledger_accounts,
            ("id", "organisation_id", "code", "kind", "balance_fen", "floor_fen", "created_at"),
            ledger_rows,
        )
        _bench_customer(conn, org)
        bulk_insert(
            conn,
            accounts,
            (
                "id",
                "organisation_id",
                "number",
                "customer_id",
                "room_id",
                "status",
                "billing_mode",
                "wallet_id",
                "arrears_id",
                "opened_at",
                "closed_at",
                "opened_by",
            ),
            [(*r[:3], 1, *r[4:]) for r in account_rows],
        )
        bulk_insert(
            conn,
            meter_assignments,
            ("meter_id", "account_id", "tariff_id", "start_at", "end_at"),
            assignment_rows,
        )
        ledger.apply_transfers(conn, credits)
    opening = [
        IncomingReading(
            prepared.meter_ids[m.index], START, m.start_total, None, ReadingSource.OPENING
        )
        for m in workload.meters
    ]
    pipeline = Ingestor(db)
    for start in range(0, len(opening), 5000):
        pipeline.ingest(opening[start : start + 5000], received_at=START)
    return prepared


def _bench_customer(conn: Connection, org: int) -> None:
    conn.execute(
        insert(customers).values(id=1, organisation_id=org, name="Bench tenant", created_at=START)
    )


def bulk_insert_readings(engine: Engine, workload: Workload, prepared: Prepared) -> float:
    """The baseline: the same distinct readings, one executemany (SQLite) or COPY (PostgreSQL),
    one transaction, into the same table with the same indexes."""
    load_all_tables().create_all(engine)
    db = Database(engine, lambda: START)
    org = sites.create_organisation(db, name="Bench Property Co.", timezone=ZONE)
    site = sites.create_site(db, organisation_id=org, name="Bench Park", timezone=ZONE)
    with engine.begin() as conn:
        bulk_insert(
            conn,
            meters,
            (
                "id",
                "organisation_id",
                "site_id",
                "number",
                "utility",
                "kind",
                "protocol",
                "address",
                "ct_ratio",
                "pt_ratio",
                "register_modulus",
                "has_band_registers",
                "max_rate_per_hour",
                "generation",
                "created_at",
            ),
            [
                (
                    prepared.meter_ids[m.index],
                    org,
                    site,
                    f"B{m.index:06d}",
                    "electricity",
                    "single_phase",
                    "dlt645",
                    f"{m.index + 1:012d}",
                    100,
                    100,
                    scaled_int(MODULUS, 4),
                    False,
                    500 * 10**4,
                    0,
                    instant_int(START),
                )
                for m in workload.meters
            ],
        )
    received = instant_int(START)
    rows = [
        (
            prepared.meter_ids[i],
            0,
            instant_int(at),
            received,
            scaled_int(total, 4),
            None,
            None,
            None,
            None,
            None,
            "realtime",
        )
        for i, at, total in workload.truth
    ]
    started = time.perf_counter()
    with engine.begin() as conn:
        bulk_insert(conn, readings, RAW_READING_COLUMNS, rows)
    return time.perf_counter() - started
