"""Small builders for integration tests: an organisation with a site, a room and a customer in
one call, then tariffs, meters and accounts in one call each, and the read-side helpers the tests
compare (balances as ``Decimal``, stored readings, transfers, period totals).

Times: tests live after the ``clock`` fixture's instant (2026-11-02T00:00Z = 08:00 in
Asia/Shanghai); :func:`minutes` gives an instant so many minutes later.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, select

from meterdesk.billing import accounts as account_service
from meterdesk.billing.ingest import IncomingReading, Ingestor
from meterdesk.billing.lines import select_lines
from meterdesk.billing.tables import (
    account_controls,
    accounts,
    charge_lines,
    meter_assignments,
    period_totals,
    quantity_lots,
    tariff_changes,
)
from meterdesk.db.consistency import dangling_references
from meterdesk.db.database import Database
from meterdesk.devices.tables import command_events, commands
from meterdesk.ledger.model import request_hash
from meterdesk.ledger.tables import ledger_accounts, transfers
from meterdesk.metering import service as metering
from meterdesk.metering.model import BANDS
from meterdesk.metering.repository import READING_LINE_COLUMNS
from meterdesk.metering.tables import (
    meter_cursors,
    meter_replacements,
    meters,
    quarantine,
    readings,
)
from meterdesk.notifications.tables import notification_outbox
from meterdesk.shared.money import from_fen
from meterdesk.sites import service as sites
from meterdesk.tariffs import service as tariffs

D = Decimal
T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # the clock fixture's "now"
SHANGHAI = ZoneInfo("Asia/Shanghai")
ALL_MONTHS = list(range(1, 13))
ACTOR = "test:operator"


def minutes(count: float, start: datetime = T0) -> datetime:
    return start + timedelta(minutes=count)


def local(text: str, tz: ZoneInfo = SHANGHAI) -> datetime:
    """A local wall time ``YYYY-MM-DD HH:MM`` as a UTC instant."""
    return datetime.fromisoformat(text).replace(tzinfo=tz).astimezone(UTC)


# --- places ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Org:
    id: int
    site_id: int
    room_id: int
    customer_id: int
    name: str


def make_org(db: Database, name: str = "Org A", timezone: str = "Asia/Shanghai") -> Org:
    """An organisation with one site (Park), building (B1), floor (F1), room (101), customer."""
    org_id = sites.create_organisation(db, name=name, timezone=timezone)
    site_id = sites.create_site(db, organisation_id=org_id, name="Park", timezone=timezone)
    building_id = sites.create_building(db, organisation_id=org_id, site_id=site_id, name="B1")
    floor_id = sites.create_floor(
        db, organisation_id=org_id, building_id=building_id, name="F1", level=1
    )
    room_id = sites.create_room(
        db, organisation_id=org_id, floor_id=floor_id, name="101", kind="shop"
    )
    customer_id = sites.create_customer(
        db, organisation_id=org_id, name="Li Lei", phone="13900000000"
    )
    return Org(org_id, site_id, room_id, customer_id, name)


# --- tariffs -----------------------------------------------------------------------------------


def flat_definition(price: str, *, utility: str = "electricity") -> dict[str, Any]:
    return {
        "utility": utility,
        "versions": [{"effective_from": "2026-01-01", "prices": {"flat": price}}],
    }


TOU_PRICES = {"peak": "1.05", "flat": "0.68", "valley": "0.32"}
TOU_DAY = [["00:00", "valley"], ["08:00", "flat"], ["10:00", "peak"], ["15:00", "flat"]]
MONTH_TIERS = {
    "period": "month",
    "mode": "adder",
    "blocks": [
        {"up_to": "5", "price": "0"},
        {"up_to": "12", "price": "0.05"},
        {"up_to": None, "price": "0.3"},
    ],
}


def tou_definition() -> dict[str, Any]:
    """Valley 00-08, flat 08-10, peak 10-15, flat 15-24 every day; no tiers."""
    return {
        "utility": "electricity",
        "versions": [
            {
                "effective_from": "2026-01-01",
                "prices": TOU_PRICES,
                "seasons": [{"name": "all", "months": ALL_MONTHS, "workday": TOU_DAY}],
            }
        ],
    }


def tou_tier_definition() -> dict[str, Any]:
    """Valley 00-08, flat 08-10, peak 10-15, flat 15-24 every day; monthly adder tiers at 5 and
    12 kWh so a short test stream climbs all three blocks."""
    return {
        "utility": "electricity",
        "versions": [
            {
                "effective_from": "2026-01-01",
                "prices": TOU_PRICES,
                "seasons": [{"name": "all", "months": ALL_MONTHS, "workday": TOU_DAY}],
                "tiers": MONTH_TIERS,
            }
        ],
    }


def make_tariff(
    db: Database, org: Org, name: str = "flat", definition: dict[str, Any] | None = None
) -> int:
    return tariffs.create_tariff(
        db,
        organisation_id=org.id,
        name=name,
        definition=definition or flat_definition("0.6537"),
        actor=ACTOR,
    )


# --- meters and accounts -----------------------------------------------------------------------


def make_meter(
    db: Database,
    org: Org,
    number: str = "M1",
    *,
    modulus: str = "1000000",
    max_rate: str | None = None,
    bands: bool = False,
    utility: str = "electricity",
    ct: str = "1",
) -> int:
    spec = metering.MeterSpec(
        number=number,
        utility=utility,
        kind="water" if utility == "water" else "single_phase",
        room_id=org.room_id,
        register_modulus=modulus,
        max_rate_per_hour=max_rate,
        has_band_registers=bands,
        ct_ratio=ct,
    )
    return metering.create_meter(db, organisation_id=org.id, spec=spec, actor=ACTOR)


def open_account(
    db: Database,
    org: Org,
    number: str,
    meters: Sequence[tuple[int, int, str | None]],
    *,
    credit: str = "100",
    overdraft: str = "0",
    ingestor: Ingestor | None = None,
    credit_unit: str = "money",
) -> account_service.OpenedAccount:
    """Open ``number`` with (meter id, tariff id, opening reading or None) per meter."""
    request = account_service.OpenAccount(
        number=number,
        customer_id=org.customer_id,
        room_id=org.room_id,
        meters=[
            account_service.MeterOpening(m, t, None if r is None else D(r)) for m, t, r in meters
        ],
        overdraft_limit=overdraft,
        initial_credit=credit,
        credit_unit=credit_unit,
    )
    return account_service.open_account(
        db, organisation_id=org.id, request=request, actor=ACTOR, ingestor=ingestor
    )


@dataclass(frozen=True)
class Setup:
    """One organisation, one meter, one tariff, one open account: the common starting point."""

    org: Org
    meter_id: int
    tariff_id: int
    account: account_service.OpenedAccount


def one_meter_account(
    db: Database,
    *,
    price: str = "0.6537",
    credit: str = "100",
    overdraft: str = "0",
    opening: str = "1000",
    modulus: str = "1000000",
    max_rate: str | None = None,
    definition: dict[str, Any] | None = None,
) -> Setup:
    org = make_org(db)
    tariff_id = make_tariff(db, org, definition=definition or flat_definition(price))
    meter_id = make_meter(db, org, modulus=modulus, max_rate=max_rate)
    account = open_account(
        db, org, "A-1", [(meter_id, tariff_id, opening)], credit=credit, overdraft=overdraft
    )
    return Setup(org, meter_id, tariff_id, account)


def reading(
    meter_id: int, at: datetime, total: str | Decimal, bands: dict[str, str] | None = None
) -> IncomingReading:
    return IncomingReading(
        meter_id,
        at,
        D(total),
        None if bands is None else {k: D(v) for k, v in bands.items()},
    )


# --- reading back ------------------------------------------------------------------------------


def balance_of(db: Database, ledger_account_id: int) -> Decimal:
    with db.read() as conn:
        fen = conn.execute(
            select(ledger_accounts.c.balance_fen).where(ledger_accounts.c.id == ledger_account_id)
        ).scalar_one()
    return from_fen(int(fen))


def wallet(db: Database, account: account_service.OpenedAccount) -> Decimal:
    return balance_of(db, account.wallet_id)


def owed(db: Database, account: account_service.OpenedAccount) -> Decimal:
    """Arrears as a positive amount owed."""
    return -balance_of(db, account.arrears_id)


def deducted(db: Database, account_id: int, period_key: str | None = None) -> Decimal:
    """Net billed to an account: deductions minus corrections (all periods or one month)."""
    with db.read() as conn:
        query = select(transfers.c.reason, func.sum(transfers.c.amount_fen)).where(
            transfers.c.account_id == account_id,
            transfers.c.reason.in_(("deduction", "deduction_correction")),
        )
        if period_key is not None:
            query = query.where(transfers.c.period_key == period_key)
        sums = dict(conn.execute(query.group_by(transfers.c.reason)).all())
    return from_fen(int(sums.get("deduction", 0)) - int(sums.get("deduction_correction", 0)))


def posted_by_period(db: Database, meter_id: int) -> dict[str, Decimal]:
    with db.read() as conn:
        rows = conn.execute(
            select(period_totals.c.period_key, period_totals.c.posted_fen).where(
                period_totals.c.meter_id == meter_id
            )
        ).all()
    return {str(key): from_fen(int(fen)) for key, fen in rows}


def stored_readings(db: Database, meter_id: int | None = None) -> list[tuple[Any, ...]]:
    """(meter, generation, measured_at, total, bands...) of accepted readings, in order."""
    columns = [readings.c[f"register_{band}"] for band in BANDS]
    query = select(
        readings.c.meter_id,
        readings.c.generation,
        readings.c.measured_at,
        readings.c.register_total,
        *columns,
    ).order_by(readings.c.meter_id, readings.c.measured_at, readings.c.generation)
    if meter_id is not None:
        query = query.where(readings.c.meter_id == meter_id)
    with db.read() as conn:
        return [tuple(row) for row in conn.execute(query)]


def quarantined(db: Database, org: Org, status: str = "open") -> list[dict[str, Any]]:
    return metering.list_quarantine(db, organisation_id=org.id, status=status)


def count_rows(conn: Connection, table: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def active_lines(
    db: Database, meter_id: int, money: str = "cost"
) -> list[tuple[float, float, Decimal, Decimal]]:
    """(interval start, end in minutes after T0, quantity, ``money`` — "cost" or "unit_price")
    of the meter's active lines, wherever stored (billing.lines), in time order."""
    with db.read() as conn:
        rows = conn.execute(
            select_lines(
                ("interval_start", "interval_end", "quantity", money, "segment_start"),
                lambda line: (line["meter_id"] == meter_id, line["active"].is_(True)),
            ).order_by("interval_start", "segment_start")
        ).all()
    return [
        (
            (start - T0) / timedelta(minutes=1),
            (end - T0) / timedelta(minutes=1),
            Decimal(quantity).normalize(),
            Decimal(amount).normalize(),
        )
        for start, end, quantity, amount, _ in rows
    ]


def row_counts(db: Database) -> dict[str, int]:
    tables = (readings, meter_cursors, quarantine, charge_lines, period_totals, transfers, accounts)
    with db.read() as conn:
        return {table.name: count_rows(conn, table) for table in tables}


def all_transfers(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [
            dict(row) for row in conn.execute(select(transfers).order_by(transfers.c.id)).mappings()
        ]


def ledger_balances(db: Database) -> dict[int, int]:
    with db.read() as conn:
        rows = conn.execute(select(ledger_accounts.c.id, ledger_accounts.c.balance_fen)).all()
    return {int(i): int(b) for i, b in rows}


def balances_from_transfers(db: Database) -> dict[int, int]:
    """Each ledger account's balance recomputed from its transfers (credits − debits)."""
    result = dict.fromkeys(ledger_balances(db), 0)
    for transfer in all_transfers(db):
        result[int(transfer["credit_account_id"])] += int(transfer["amount_fen"])
        result[int(transfer["debit_account_id"])] -= int(transfer["amount_fen"])
    return result


def ledger_code_balances(db: Database) -> dict[str, int]:
    """Balances by account code (stable across databases, unlike ids)."""
    with db.read() as conn:
        rows = conn.execute(select(ledger_accounts.c.code, ledger_accounts.c.balance_fen)).all()
    return {str(code): int(fen) for code, fen in rows}


# --- streams -----------------------------------------------------------------------------------


def steady_stream(
    meter_id: int,
    *,
    start_total: Decimal,
    count: int,
    step: Decimal,
    every: timedelta,
    start: datetime = T0,
    modulus: Decimal | None = None,
    seed: int = 0,
) -> list[IncomingReading]:
    """``count`` in-order readings after ``start``: each advances by up to ``step`` (random, with
    4 places), wrapping at ``modulus`` when given."""
    rng = random.Random(seed)
    total, result = start_total, []
    for index in range(1, count + 1):
        total += D(rng.randint(0, int(step * 10_000))).scaleb(-4)
        if modulus is not None and total >= modulus:
            total -= modulus
        result.append(IncomingReading(meter_id, start + every * index, total))
    return result


def shuffled_batches(
    stream: Sequence[IncomingReading], *, size: int, window: int, seed: int
) -> list[list[IncomingReading]]:
    """The stream in batches of ``size``, shuffled within windows of ``window`` readings (so
    some readings arrive late), deterministically."""
    rng = random.Random(seed)
    ordered = sorted(stream, key=lambda r: (r.measured_at, r.meter_id))
    mixed: list[IncomingReading] = []
    for start in range(0, len(ordered), window):
        part = ordered[start : start + window]
        rng.shuffle(part)
        mixed.extend(part)
    return [mixed[start : start + size] for start in range(0, len(mixed), size)]


# --- whole-state snapshots ---------------------------------------------------------------------

_COMMAND_REF = re.compile(r"#(\d+)")

# What :func:`snapshot` reads: name → (table, which rows, columns left out besides ``id``).
SNAPSHOT_TABLES: dict[str, tuple[Any, Any, tuple[str, ...]]] = {
    "readings": (readings, None, READING_LINE_COLUMNS),  # their lines are in "lines"
    "cursors": (meter_cursors, None, ()),
    "quarantine": (quarantine, None, ()),
    # Priced lines wherever stored (billing.lines): on readings or in charge_lines.
    "lines": (charge_lines, True, ("active",)),
    "superseded_lines": (charge_lines, False, ("active",)),
    "totals": (period_totals, None, ()),
    "transfers": (transfers, None, ()),
    "meters": (meters, None, ()),
    "assignments": (meter_assignments, None, ()),
    "tariff_changes": (tariff_changes, None, ()),
    "replacements": (meter_replacements, None, ()),
    "account_controls": (account_controls, None, ()),
    "quantity_lots": (quantity_lots, None, ()),
    "commands": (commands, None, ()),
    "command_events": (command_events, None, ()),
    "notifications": (notification_outbox, None, ()),
}


def plain(value: Any) -> Any:
    """A Decimal by value (``1.50`` and ``1.5`` alike, one repr for both); anything else as is."""
    if isinstance(value, Decimal):
        return Decimal(0) if value == 0 else value.normalize()
    return value


def _columns(name: str) -> list[str]:
    table, _, skip = SNAPSHOT_TABLES[name]
    return [c.name for c in table.c if c.name not in ("id", *skip)]


def _own_hash_checked(row: Any) -> dict[str, Any]:
    """A transfer's request hash is over its ledger accounts' *ids*, which two databases may
    number differently (system accounts are created on first use, so in whatever order two runs
    first post to them): compare whether each row's hash is the hash of the row itself instead
    of the hash's text."""
    values = dict(row)
    if "request_hash" in values and "debit_account_id" in values:
        own = request_hash(
            values["organisation_id"],
            values["debit_account_id"],
            values["credit_account_id"],
            values["amount_fen"],
            values["reason"],
            values["account_id"],
            values["meter_id"],
            values["period_key"],
            values["method"],
            values["reference"],
            values["reverses_id"],
        )
        values["request_hash"] = "own" if values["request_hash"] == own else values["request_hash"]
    return values


def snapshot(db: Database) -> dict[str, Any]:
    """Everything the money core and the control loop write, without surrogate ids, so two
    databases (or two runs) can be compared: each table of :data:`SNAPSHOT_TABLES` (readings,
    cursors, quarantine, active and superseded charge lines, period totals, transfers, meters
    and their assignments, tariff changes, replacements, the control state per account, device
    commands and their events, queued notification messages) as sorted rows of values in column
    order, plus balances by ledger account code.

    Ids become what they stand for: a ledger account its code, a reversed transfer its key, a
    command its idempotency key (also in "superseded by #<id>"). Decimals are normalised, so
    they compare by value and sort by a key that does not depend on their exponent."""
    with db.read() as conn:
        codes = dict(conn.execute(select(ledger_accounts.c.id, ledger_accounts.c.code)).all())
        keys = dict(conn.execute(select(transfers.c.id, transfers.c.idempotency_key)).all())
        command_keys = dict(conn.execute(select(commands.c.id, commands.c.idempotency_key)).all())

        def command_refs(text: str | None) -> str | None:
            return text and _COMMAND_REF.sub(
                lambda m: f"#{command_keys.get(int(m.group(1)), m.group(1))}", text
            )

        ids: dict[str, Any] = {
            "debit_account_id": codes.get,
            "credit_account_id": codes.get,
            "reverses_id": keys.get,
            "command_id": command_keys.get,
        }
        texts = {**ids, "reason": command_refs, "detail": command_refs}

        def rows(name: str) -> list[tuple[Any, ...]]:
            table, where, _ = SNAPSHOT_TABLES[name]
            query: Any = select(*(table.c[c] for c in _columns(name)))
            if table is charge_lines:
                query = select_lines(_columns(name), lambda line: (line["active"].is_(where),))
            elif where is not None:
                query = query.where(where)
            mapped = texts if table.name in ("commands", "command_events") else ids
            found = [
                tuple(
                    plain(mapped[column](value) if column in mapped else value)
                    for column, value in _own_hash_checked(row).items()
                )
                for row in conn.execute(query).mappings()
            ]
            return sorted(found, key=repr)

        state: dict[str, Any] = {name: rows(name) for name in SNAPSHOT_TABLES}
        state["balances"] = {
            codes[i]: int(fen)
            for i, fen in conn.execute(select(ledger_accounts.c.id, ledger_accounts.c.balance_fen))
        }
        return state


def snapshot_difference(expected: dict[str, Any], actual: dict[str, Any], limit: int = 3) -> str:
    """Which tables of two snapshots differ and how (a few rows of each side, with column
    names); empty when none does."""
    found = []
    for name in sorted(expected.keys() | actual.keys()):
        left, right = expected.get(name), actual.get(name)
        if left == right:
            continue
        if name not in SNAPSHOT_TABLES:
            changed = sorted(k for k in left.keys() | right.keys() if left.get(k) != right.get(k))
            found.append(
                f"{name}: "
                + "; ".join(f"{k}: {left.get(k)!r} != {right.get(k)!r}" for k in changed[:limit])
            )
            continue
        found.append(
            f"{name}: {len(left)} rows vs {len(right)}"
            f"\n  only in the first:{_named(name, [r for r in left if r not in right], limit)}"
            f"\n  only in the second:{_named(name, [r for r in right if r not in left], limit)}"
        )
    return "\n".join(found)


def _named(name: str, rows: list[tuple[Any, ...]], limit: int) -> str:
    columns = _columns(name)
    return "".join(f"\n    {dict(zip(columns, row, strict=True))}" for row in rows[:limit])


def check_books(db: Database) -> None:
    """The ledger balances (entries sum to zero, every account's balance is its transfers' net),
    every (meter, account, month)'s active lines add up to its exact running cost, and every reference
    kept without a foreign key resolves."""
    with db.read() as conn:
        balances = dict(
            conn.execute(select(ledger_accounts.c.id, ledger_accounts.c.balance_fen)).all()
        )
        credits = dict(
            conn.execute(
                select(transfers.c.credit_account_id, func.sum(transfers.c.amount_fen)).group_by(
                    transfers.c.credit_account_id
                )
            ).all()
        )
        debits = dict(
            conn.execute(
                select(transfers.c.debit_account_id, func.sum(transfers.c.amount_fen)).group_by(
                    transfers.c.debit_account_id
                )
            ).all()
        )
        # By (meter, account, month), the running total's key: a meter that changed accounts
        # within a month has a total for each.
        lines: dict[tuple[int, int, str], Decimal] = {}
        for m, a, p, cost in conn.execute(
            select_lines(
                ("meter_id", "account_id", "period_key", "cost"),
                lambda line: (line["active"].is_(True),),
            )
        ):
            lines[(m, a, p)] = lines.get((m, a, p), D(0)) + cost
        exact = {
            (m, a, p): c
            for m, a, p, c in conn.execute(
                select(
                    period_totals.c.meter_id,
                    period_totals.c.account_id,
                    period_totals.c.period_key,
                    period_totals.c.exact_cost,
                )
            )
        }
        dangling = {name: n for name, n in dangling_references(conn).items() if n}
    assert not dangling, f"references that point at nothing: {dangling}"
    assert sum(balances.values()) == 0, "the ledger's entries must sum to zero"
    for account_id, balance in balances.items():
        assert balance == credits.get(account_id, 0) - debits.get(account_id, 0), account_id
    assert {k: v for k, v in lines.items() if v} == {k: v for k, v in exact.items() if v}
