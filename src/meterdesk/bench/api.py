"""``meterdesk bench api`` — P5: the room-monitoring API and page with 10,000 rooms, p95 server
time ≤ 150 ms.

A fresh database gets one organisation with 10,000 rooms (20 buildings × 25 floors × 20 rooms),
each with a customer, a meter and — but for 5 % vacant rooms — an open account with credit, its
control state (some alarmed, cut, cut pending, protected) and device state (some lost), written
in bulk like ``bench.setup``. Then the real app (``create_app``, console mounted) answers logged-in
requests in process; the server time of each is read from its ``Server-Timing`` header (request
in → response start, rendering included, no client or network share). The requests cycle through
what an operator does: the default view, a state filter, a search, a building, a later page.

The last line printed is one JSON object with ``grid_api_p95_ms`` and ``grid_page_p95_ms``.
"""

from __future__ import annotations

import json
import platform
import random
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine

from meterdesk import __version__
from meterdesk.access import service as access
from meterdesk.api.app import create_app
from meterdesk.api.context import ApiConfig
from meterdesk.bench.ingest import Places
from meterdesk.billing import control_config
from meterdesk.billing.ingest import Ingestor
from meterdesk.billing.tables import account_controls, accounts
from meterdesk.bootstrap import App
from meterdesk.db.bulk import bulk_insert
from meterdesk.db.database import Database
from meterdesk.db.metadata import load_all_tables
from meterdesk.db.types import instant_int, scaled_int
from meterdesk.devices.tables import device_status
from meterdesk.ledger import repository as ledger
from meterdesk.ledger.model import AccountKind, Reason, TransferRequest
from meterdesk.ledger.tables import ledger_accounts
from meterdesk.metering.tables import meters
from meterdesk.settings import Settings
from meterdesk.shared.runtime import tune_for_long_running
from meterdesk.shared.time import system_clock
from meterdesk.sites import service as sites
from meterdesk.sites.tables import buildings, customers, floors, rooms

ZONE = "Asia/Shanghai"
TARGET_P95_MS = 150.0
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORD = "bench-password-1"  # noqa: S105 - a throwaway bench database
API_QUERIES = (
    "",
    "?state=alarm",
    "?q=0512",
    "?building_id=3",
    "?offset=4000",
    "?state=off&building_id=2",
)
PAGE_QUERIES = (
    "",
    "?state=alarm",
    "?q=0512",
    "?building=3",
    "?page=21",
    "?view=table",
    "?building=2&floor=30",
)


def say(text: str) -> None:
    print(text, flush=True)


def _shape(rooms_total: int) -> tuple[int, int, int]:
    """(buildings, floors per building, rooms per floor) for about ``rooms_total`` rooms."""
    per_floor, per_building = 20, 25
    return max(1, rooms_total // (per_floor * per_building)), per_building, per_floor


def _places(
    conn: Connection, org: int, site: int, shape: tuple[int, int, int], at: int
) -> list[tuple[int, str]]:
    count_b, count_f, count_r = shape
    building_rows = [(b, org, site, f"{b:02d} 栋 Block {b}") for b in range(1, count_b + 1)]
    floor_rows, room_rows, customer_rows = [], [], []
    made: list[tuple[int, str]] = []
    for b in range(1, count_b + 1):
        for f in range(1, count_f + 1):
            floor_id = (b - 1) * count_f + f
            floor_rows.append((floor_id, org, b, f"{f}F", f))
            for r in range(1, count_r + 1):
                room_id = (floor_id - 1) * count_r + r
                name = f"{b:02d}-{f:02d}{r:02d}"
                room_rows.append((room_id, org, floor_id, name, "apartment"))
                customer_rows.append(
                    (room_id, org, f"租户 Tenant {room_id:05d}", f"+86139{room_id:08d}", at)
                )
                made.append((room_id, name))
    bulk_insert(conn, buildings, ("id", "organisation_id", "site_id", "name"), building_rows)
    bulk_insert(conn, floors, ("id", "organisation_id", "building_id", "name", "level"), floor_rows)
    bulk_insert(conn, rooms, ("id", "organisation_id", "floor_id", "name", "kind"), room_rows)
    bulk_insert(
        conn, customers, ("id", "organisation_id", "name", "phone", "created_at"), customer_rows
    )
    return made


def _meters(
    conn: Connection, org: int, site: int, made: list[tuple[int, str]], at: int, rng: random.Random
) -> None:
    columns = (
        "id", "organisation_id", "site_id", "room_id", "number", "utility", "kind", "protocol", "address",
        "ct_ratio", "pt_ratio", "register_modulus", "has_band_registers", "max_rate_per_hour", "generation",
        "created_at",
    )  # fmt: skip
    rows = [
        (
            room_id,
            org,
            site,
            room_id,
            f"E{room_id:06d}",
            "electricity",
            "single_phase",
            "dlt645",
            f"{room_id:012d}",
            100,
            100,
            scaled_int(Decimal(1_000_000), 4),
            False,
            500 * 10**4,
            0,
            at,
        )
        for room_id, _ in made
    ]
    bulk_insert(conn, meters, columns, rows)
    states = []
    for room_id, _ in made:
        draw = rng.random()
        state = "lost" if draw < 0.04 else ("unknown" if draw < 0.05 else "online")
        live = json.dumps(
            {
                "voltage_v": 220.1,
                "current_a": 3.2,
                "power_kw": 0.7,
                "power_factor": 0.98,
                "frequency_hz": 50.0,
            }
        )
        states.append((room_id, state, at, 0, "closed", live, at))
    bulk_insert(
        conn,
        device_status,
        ("meter_id", "state", "last_seen_at", "failures", "relay", "live", "updated_at"),
        states,
    )


def _control_state(draw: float) -> tuple[str, bool] | None:
    """(state JSON, active) for the few accounts the control loop has acted on."""
    if draw < 0.03:
        return json.dumps({"supply": "off", "alarms": {"1": [1, None], "2": [1, None], "3": [1, None]},
                           "emergency_outstanding_fen": 0, "protect_sent": False}), True  # fmt: skip
    if draw < 0.04:
        return json.dumps({"supply": "cut_pending", "alarms": {"1": [1, None]}, "emergency_outstanding_fen": 0,
                           "protect_sent": False}), True  # fmt: skip
    if draw < 0.10:
        level = 1 + int(draw * 100) % 3
        return json.dumps({"supply": "on", "alarms": {str(level): [1, None]}, "emergency_outstanding_fen": 0,
                           "protect_sent": False}), True  # fmt: skip
    return None


def _accounts(
    conn: Connection, org: int, made: list[tuple[int, str]], at: int, rng: random.Random
) -> None:
    when = datetime.now(UTC)
    clearing = ledger.system_account(
        conn, organisation_id=org, code="clearing:cash", kind=AccountKind.CLEARING, at=when
    )
    revenue = ledger.system_account(
        conn, organisation_id=org, code="revenue:bench", kind=AccountKind.REVENUE, at=when
    )
    ledger_rows, account_rows, control_rows, transfers = [], [], [], []
    for room_id, name in made:
        if rng.random() < 0.05:
            continue  # a vacant room
        wallet, owed = 10_000 + 2 * room_id, 10_000 + 2 * room_id + 1
        ledger_rows += [
            (wallet, org, f"wallet:R{room_id}", "wallet", 0, 0, at),
            (owed, org, f"arrears:R{room_id}", "arrears", 0, None, at),
        ]
        account_rows.append(
            (
                room_id,
                org,
                f"A-{name}",
                room_id,
                room_id,
                "open",
                "platform",
                wallet,
                owed,
                at,
                None,
                "bench",
            )
        )
        transfers.append(
            _transfer(
                org,
                f"bench-credit-{room_id}",
                clearing,
                wallet,
                rng.randint(1, 500_000),
                room_id,
                when,
            )
        )
        draw = rng.random()
        if draw < 0.02:
            transfers.append(
                _transfer(org, f"bench-owed-{room_id}", owed, revenue, 1_234, room_id, when)
            )
        control = _control_state(draw)
        if control is not None or draw > 0.98:
            state, active = control or (
                json.dumps(
                    {
                        "supply": "on",
                        "alarms": {},
                        "emergency_outstanding_fen": 0,
                        "protect_sent": True,
                    }
                ),
                False,
            )
            shown = control_config.grid_columns(control_config.state_from_json(state), active)
            control_rows.append(
                (room_id, "zero", draw > 0.98, 0, "direct", 0, state, 0, active, 1, at,
                 shown["supply"], shown["alarm_level"])
            )  # fmt: skip
    bulk_insert(
        conn,
        ledger_accounts,
        ("id", "organisation_id", "code", "kind", "balance_fen", "floor_fen", "created_at"),
        ledger_rows,
    )
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
        account_rows,
    )
    columns = (
        "account_id",
        "cut_at",
        "protect",
        "restore_threshold_fen",
        "restore_mode",
        "emergency_credit_fen",
        "state",
        "watch_fen",
        "active",
        "version",
        "updated_at",
        "supply",
        "alarm_level",
    )
    bulk_insert(conn, account_controls, columns, control_rows)
    ledger.apply_transfers(conn, transfers)


def _transfer(
    org: int, key: str, debit: int, credit: int, fen: int, account_id: int, at: datetime
) -> TransferRequest:
    return TransferRequest(
        organisation_id=org, idempotency_key=key, debit_account_id=debit, credit_account_id=credit, amount_fen=fen,
        reason=Reason.RECHARGE, actor="bench", created_at=at, account_id=account_id, method="cash",
    )  # fmt: skip


def build_property(db: Database, rooms_total: int, seed: int) -> int:
    """A fresh organisation with about ``rooms_total`` rooms; returns its id."""
    load_all_tables().create_all(db.engine)
    org = sites.create_organisation(db, name="Bench Towers", timezone=ZONE)
    site = sites.create_site(db, organisation_id=org, name="Bench Towers Park", timezone=ZONE)
    rng, at = random.Random(seed), instant_int(datetime.now(UTC))
    with db.transaction() as conn:
        made = _places(conn, org, site, _shape(rooms_total), at)
        _meters(conn, org, site, made, at, rng)
        _accounts(conn, org, made, at, rng)
    user = access.NewUser(username="bench-admin", password=PASSWORD, locale="zh-CN")
    access.create_member(
        db, organisation_id=org, user=user, role="admin", actor="bench", hasher=FAST_HASHER
    )
    if db.dialect == "postgresql":
        # The steady state: autovacuum analyses tables this size within a minute of a bulk
        # load; measured before that, the planner has no statistics and picks other plans.
        with db.transaction() as conn:
            for table in load_all_tables().sorted_tables:  # this schema's tables only
                conn.exec_driver_sql(f'ANALYZE "{table.name}"')
    return org


def _server_ms(response: Any) -> float:
    found = re.search(r"app;dur=([0-9.]+)", response.headers.get("server-timing", ""))
    assert found is not None, "no Server-Timing header: is the console mounted?"
    return float(found.group(1))


def measure(client: TestClient, paths: list[str], count: int) -> list[float]:
    for path in paths:  # warm-up: templates compiled, caches filled
        assert client.get(path).status_code == 200, path
    timings = []
    for index in range(count):
        response = client.get(paths[index % len(paths)])
        assert response.status_code == 200, response.text[:200]
        timings.append(_server_ms(response))
    return timings


def percentiles(values: list[float]) -> dict[str, float]:
    ranked = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(ranked[49], 2), "p95": round(ranked[94], 2), "p99": round(ranked[98], 2)}


def _client(engine: Engine, folder: Path) -> Iterator[TestClient]:
    db = Database(engine=engine, clock=system_clock)
    app = App(settings=Settings(data_dir=folder), db=db, ingestor=Ingestor(db))
    with TestClient(create_app(app, config=ApiConfig(hasher=FAST_HASHER))) as client:
        answer = client.post(
            "/api/v1/session", json={"username": "bench-admin", "password": PASSWORD}
        )
        assert answer.status_code == 200, answer.text
        yield client


def _timed(label: str, action: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = action()
    say(f"{label} in {time.perf_counter() - started:.1f} s")
    return result


def _round(client: TestClient, count: int) -> dict[str, list[float]]:
    return {
        "grid_api": measure(client, [f"/api/v1/monitor/rooms{q}" for q in API_QUERIES], count),
        "grid_api_all_rooms": measure(
            client, ["/api/v1/monitor/rooms?limit=10000"], max(10, count // 5)
        ),
        "grid_page": measure(client, [f"/rooms{q}" for q in PAGE_QUERIES], count),
    }


def run(
    *,
    quick: bool,
    database_url: str | None,
    rooms_total: int | None,
    requests: int | None,
    seed: int,
) -> dict[str, Any]:
    """Measure with CPython's default GC first, then tuned as a long-running meterdesk process
    is (``shared.runtime.tune_for_long_running``: while the grid built an object per room, a
    full collection over every module's objects landed on every other request, +90 ms)."""
    total = rooms_total or (2_000 if quick else 10_000)
    count = requests or (60 if quick else 300)
    with tempfile.TemporaryDirectory(prefix="meterdesk-bench-api-") as scratch:
        folder = Path(scratch)
        places = Places(folder, database_url)  # a new schema on PostgreSQL, dropped after
        engine = places.fresh("api")
        try:
            db = Database(engine=engine, clock=system_clock)
            _timed(
                f"built {total:,} rooms with accounts, meters and device state",
                lambda: build_property(db, total, seed),
            )
            for client in _client(engine, folder):
                say("default GC:")
                untuned = _round(client, max(30, count // 3))
                _report_lines(untuned)
                tune_for_long_running()
                say("tuned GC (as a long-running meterdesk process):")
                tuned = _round(client, count)
                _report_lines(tuned)
        finally:
            places.drop(engine)
    return _summary(total, count, tuned, untuned, "postgresql" if database_url else "sqlite", seed)


def _report_lines(found: dict[str, list[float]]) -> None:
    for name, values in found.items():
        figures = percentiles(values)
        verdict = "ok" if figures["p95"] <= TARGET_P95_MS else "OVER"
        say(f"  {name}: p50 {figures['p50']} ms, p95 {figures['p95']} ms, p99 {figures['p99']} ms "
            f"(P5 target p95 ≤ {TARGET_P95_MS:.0f} ms: {verdict})")  # fmt: skip


def _summary(
    total: int,
    count: int,
    tuned: dict[str, list[float]],
    untuned: dict[str, list[float]],
    backend: str,
    seed: int,
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "figure": "P5", "rooms": total, "requests_per_endpoint": count, "backend": backend, "seed": seed,
        "target_p95_ms": TARGET_P95_MS, "server_time": "Server-Timing header, request in to response start",
        "machine": platform.machine(), "python": platform.python_version(), "meterdesk": __version__,
    }  # fmt: skip
    for name, values in tuned.items():
        for key, value in percentiles(values).items():
            summary[f"{name}_{key}_ms"] = value
    for name, values in untuned.items():
        summary[f"{name}_p95_default_gc_ms"] = percentiles(values)["p95"]
    print(json.dumps(summary, sort_keys=True), flush=True)
    return summary
