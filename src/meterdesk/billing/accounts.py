"""Opening and closing customer accounts (开户 / 销户).

Opening creates the account's wallet and arrears ledger accounts, assigns its meters with their
tariffs from the opening reading on (the baseline — nothing before it is billed to this tenant),
and optionally credits initial money, all in one transaction. Closing stores each meter's final
reading, bills up to it, ends the assignments and settles: a positive balance is refunded, unpaid
arrears stay on the arrears account as a bill to collect. History is kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from meterdesk.audit import service as audit
from meterdesk.billing import cashier, cashier_settle, quantity
from meterdesk.billing.ingest import IncomingReading, Ingestor
from meterdesk.billing.model import AccountStatus, BillingMode
from meterdesk.billing.quantity_model import CreditUnit, check_opening, parse_credit_unit
from meterdesk.billing.tables import accounts, meter_assignments
from meterdesk.db import counters
from meterdesk.db.database import Database
from meterdesk.ledger import repository as ledger
from meterdesk.ledger.model import AccountKind
from meterdesk.metering import repository as metering_repository
from meterdesk.metering.model import Reading, ReadingSource
from meterdesk.metering.tables import meters, quarantine
from meterdesk.shared.errors import (
    ConflictError,
    IdempotencyConflictError,
    NotFoundError,
    ValidationError,
)
from meterdesk.shared.money import from_fen, parse_money, to_fen
from meterdesk.sites.tables import customers, rooms
from meterdesk.tariffs.tables import tariffs


@dataclass(frozen=True)
class MeterOpening:
    """A meter joining the account. Without an opening reading, the meter's last accepted reading
    is the baseline, provided it is less than ``BASELINE_MAX_AGE`` old."""

    meter_id: int
    tariff_id: int
    reading_total: Decimal | None = None
    reading_bands: Mapping[str, Decimal] | None = None


@dataclass(frozen=True)
class OpenAccount:
    number: str
    customer_id: int
    meters: Sequence[MeterOpening]
    room_id: int | None = None
    billing_mode: str = BillingMode.PLATFORM.value
    overdraft_limit: object = "0"
    initial_credit: object = "0"
    payment_method: str = "cash"
    opened_at: datetime | None = None
    idempotency_key: str | None = None
    credit_unit: str = CreditUnit.MONEY.value  # or 'quantity' (购量, decision 0006)


@dataclass
class OpenedAccount:
    account_id: int
    number: str
    wallet_id: int
    arrears_id: int
    initial_transfer_id: int | None = None
    meter_ids: list[int] = field(default_factory=list)


def open_account(
    db: Database,
    *,
    organisation_id: int,
    request: OpenAccount,
    actor: str,
    ingestor: Ingestor | None = None,
) -> OpenedAccount:
    with db.transaction() as conn:
        return open_account_in(
            conn,
            db=db,
            organisation_id=organisation_id,
            request=request,
            actor=actor,
            ingestor=ingestor,
        )


def _meters_room(conn: Connection, request: OpenAccount) -> int | None:
    """The room the account's meters are in, when they are all in one: an account opened
    without naming its room (the CLI's ``account open`` has ``--room`` optional) showed its
    room as vacant on the room monitor while the room's meter was billed."""
    found = set(
        conn.execute(
            select(meters.c.room_id).where(
                meters.c.id.in_(sorted({o.meter_id for o in request.meters}))
            )
        ).scalars()
    )
    return int(found.pop()) if len(found) == 1 and None not in found else None


def open_account_in(
    conn: Connection,
    *,
    db: Database,
    organisation_id: int,
    request: OpenAccount,
    actor: str,
    ingestor: Ingestor | None = None,
) -> OpenedAccount:
    mode = _billing_mode(request.billing_mode)
    overdraft = parse_money(request.overdraft_limit, field="overdraft_limit")
    credit = parse_money(request.initial_credit, field="initial_credit")
    if overdraft < 0 or credit < 0:
        raise ValidationError("overdraft_limit and initial_credit cannot be negative")
    if not request.meters:
        raise ValidationError("meters: an account needs at least one meter")
    if not request.number.strip():
        raise ValidationError("number: must not be empty")
    unit = parse_credit_unit(request.credit_unit)
    if unit is CreditUnit.QUANTITY:
        check_opening(mode is BillingMode.PLATFORM, len(request.meters), overdraft)
    at = request.opened_at or db.clock()
    _check_references(conn, organisation_id, request)
    room_id = request.room_id if request.room_id is not None else _meters_room(conn, request)
    # A number in use fails on its ledger accounts' codes first: the same conflict, not a 500.
    try:
        wallet_id = ledger.create_account(
            conn,
            organisation_id=organisation_id,
            code=f"wallet:{request.number}",
            kind=AccountKind.WALLET,
            at=at,
            floor_fen=-to_fen(overdraft),
        )
        arrears_id = ledger.create_account(
            conn,
            organisation_id=organisation_id,
            code=f"arrears:{request.number}",
            kind=AccountKind.ARREARS,
            at=at,
        )
        result = conn.execute(
            insert(accounts).values(
                organisation_id=organisation_id,
                number=request.number.strip(),
                customer_id=request.customer_id,
                room_id=room_id,
                status=AccountStatus.OPEN.value,
                billing_mode=mode.value,
                wallet_id=wallet_id,
                arrears_id=arrears_id,
                opened_at=at,
                closed_at=None,
                opened_by=actor,
                credit_unit=unit.value,
            )
        )
    except IntegrityError:
        raise ConflictError(f"account {request.number!r} already exists") from None
    key = result.inserted_primary_key
    assert key is not None
    opened = OpenedAccount(int(key[0]), request.number.strip(), wallet_id, arrears_id)
    _assign_meters(conn, opened.account_id, request.meters, at)
    if unit is CreditUnit.QUANTITY:
        # Before the opening reading: it may close an interval the account already holds (a
        # meter that reported ahead of the desk's clock), priced along this opening lot.
        quantity.record_opening(conn, opened.account_id, at)
    _read_openings(conn, request.meters, at, ingestor or Ingestor(db))
    if mode is BillingMode.METER:
        # A meter still holding an earlier account's money would hand it to this one. Looked
        # for after the meters were found free (PostgreSQL): a close that ended the last
        # assignment commits its clear in the same transaction, so it is seen here too.
        from meterdesk.devices import take_back

        take_back.refuse_uncleared(conn, [m.meter_id for m in request.meters])
    opened.meter_ids = [m.meter_id for m in request.meters]
    if credit > 0:
        opened.initial_transfer_id = cashier.recharge_in(
            conn,
            organisation_id=organisation_id,
            account_id=opened.account_id,
            amount=credit,
            method=request.payment_method,
            actor=actor,
            at=at,
            idempotency_key=request.idempotency_key or f"open:{organisation_id}:{opened.number}",
        ).transfer_id
    audit.record(
        conn,
        organisation_id=organisation_id,
        actor=actor,
        action="account.open",
        subject=f"account:{opened.number}",
        at=at,
        detail={
            "meters": opened.meter_ids,
            "initial_credit": str(credit),
            "billing_mode": mode.value,
            "credit_unit": unit.value,
        },
    )
    return opened


def _billing_mode(value: str) -> BillingMode:
    try:
        return BillingMode(value)
    except ValueError:
        raise ValidationError(f"billing_mode: {value!r} is not 'platform' or 'meter'") from None


def _check_references(conn: Connection, organisation_id: int, request: OpenAccount) -> None:
    if (
        conn.execute(
            select(customers.c.id).where(
                customers.c.id == request.customer_id,
                customers.c.organisation_id == organisation_id,
            )
        ).first()
        is None
    ):
        raise NotFoundError(f"customer {request.customer_id} not found")
    if (
        request.room_id is not None
        and conn.execute(
            select(rooms.c.id).where(
                rooms.c.id == request.room_id, rooms.c.organisation_id == organisation_id
            )
        ).first()
        is None
    ):
        raise NotFoundError(f"room {request.room_id} not found")
    for opening in request.meters:
        meter = conn.execute(
            select(meters.c.utility).where(
                meters.c.id == opening.meter_id, meters.c.organisation_id == organisation_id
            )
        ).first()
        if meter is None:
            raise NotFoundError(f"meter {opening.meter_id} not found")
        tariff = conn.execute(
            select(tariffs.c.utility).where(
                tariffs.c.id == opening.tariff_id, tariffs.c.organisation_id == organisation_id
            )
        ).first()
        if tariff is None:
            raise NotFoundError(f"tariff {opening.tariff_id} not found")
        if tariff.utility != meter.utility:
            raise ValidationError(
                f"meter {opening.meter_id} measures {meter.utility} but the tariff prices {tariff.utility}"
            )


# A baseline must be younger than this: a reading exactly 24 h old is already too old.
BASELINE_MAX_AGE = timedelta(hours=24)


def _assign_meters(
    conn: Connection,
    account_id: int,
    openings: Sequence[MeterOpening],
    at: datetime,
) -> None:
    counters.bump(conn)  # the ingest pipeline caches assignments
    cursors = metering_repository.load_cursors(conn, [o.meter_id for o in openings])
    for opening in openings:
        busy = conn.execute(
            select(meter_assignments.c.id).where(
                meter_assignments.c.meter_id == opening.meter_id,
                meter_assignments.c.end_at.is_(None),
            )
        ).first()
        if busy is not None:
            raise ConflictError(f"meter {opening.meter_id} already belongs to an open account")
        start = (
            at
            if opening.reading_total is not None
            else _recent_baseline(cursors.get(opening.meter_id), opening.meter_id, at)
        )
        conn.execute(
            insert(meter_assignments).values(
                meter_id=opening.meter_id,
                account_id=account_id,
                tariff_id=opening.tariff_id,
                start_at=start,
                end_at=None,
            )
        )


def _read_openings(
    conn: Connection,
    openings: Sequence[MeterOpening],
    at: datetime,
    ingestor: Ingestor,
) -> None:
    """Ingest the opening readings given (after the meters were assigned: the readings may
    close intervals the account now holds, a meter having reported ahead of the desk's clock)."""
    given = [o for o in openings if o.reading_total is not None]
    report = ingestor.ingest_in(
        conn,
        [
            IncomingReading(o.meter_id, at, o.reading_total, o.reading_bands, ReadingSource.OPENING)
            for o in given
            if o.reading_total is not None
        ],
        at,
    )
    if report.quarantined:
        raise ValidationError(
            "the opening reading does not fit the meter's earlier readings: "
            + _why_refused(conn, {o.meter_id for o in given}, at)
        )


def _why_refused(conn: Connection, meter_ids: set[int], at: datetime) -> str:
    """What the quarantine said about the readings just given (the transaction is about to roll
    back, so the operator would otherwise never learn which meter and why: the latest reading
    is in the reason)."""
    rows = conn.execute(
        select(meters.c.number, quarantine.c.reason)
        .join(meters, meters.c.id == quarantine.c.meter_id)
        .where(quarantine.c.meter_id.in_(sorted(meter_ids)), quarantine.c.received_at == at)
        .order_by(meters.c.number)
    ).all()
    return "; ".join(f"meter {number}: {reason}" for number, reason in rows) or (
        "register lower, or an implausible jump"
    )


def _recent_baseline(cursor: Reading | None, meter_id: int, at: datetime) -> datetime:
    if cursor is None:
        raise ValidationError(f"meter {meter_id} has no reading yet: give an opening reading")
    if at - cursor.measured_at >= BASELINE_MAX_AGE:
        raise ValidationError(
            f"the last reading of meter {meter_id} is from {cursor.measured_at.isoformat()}: give an opening reading"
        )
    return cursor.measured_at


def account_by_number(
    conn: Connection, *, organisation_id: int, number: str, lock: bool = False
) -> dict[str, object]:
    """The account row; with ``lock``, locked on PostgreSQL until the transaction ends (as
    :func:`meterdesk.billing.cashier.load_account` locks it for the desk)."""
    query = select(accounts).where(
        accounts.c.organisation_id == organisation_id, accounts.c.number == number
    )
    row = (
        conn.execute(query.with_for_update(key_share=True) if lock else query)
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFoundError(f"account {number!r} not found")
    return dict(row)


@dataclass(frozen=True)
class FinalReading:
    meter_id: int
    total: Decimal
    bands: Mapping[str, Decimal] | None = None


@dataclass
class ClosedAccount:
    number: str
    refunded: Decimal
    arrears: Decimal
    refund_transfer_id: int | None


def close_account(
    db: Database,
    *,
    organisation_id: int,
    number: str,
    final_readings: Sequence[FinalReading],
    refund_method: str,
    actor: str,
    idempotency_key: str,
    ingestor: Ingestor | None = None,
) -> ClosedAccount:
    at = db.clock()
    cashier.desk_key(organisation_id, idempotency_key)  # a clear error before anything is done
    asked = _close_request(number, final_readings, refund_method)
    with db.transaction() as conn:
        account = account_by_number(conn, organisation_id=organisation_id, number=number, lock=True)
        if account["status"] != AccountStatus.OPEN.value:
            first = _closed_with(conn, account, idempotency_key, asked)
            if first is not None:  # sent again with its key: the first result (README)
                return first
            raise ConflictError(f"account {number!r} is already closed")
        account_id = int(str(account["id"]))
        _take_close_key(conn, account_id, idempotency_key)
        held = {
            int(r.meter_id)
            for r in conn.execute(
                select(meter_assignments.c.meter_id).where(
                    meter_assignments.c.account_id == account_id,
                    meter_assignments.c.end_at.is_(None),
                )
            )
        }
        given = {r.meter_id for r in final_readings}
        if held != given:
            raise ValidationError(
                f"give one final reading for each meter of the account: {sorted(held)}"
            )
        report = (ingestor or Ingestor(db)).ingest_in(
            conn,
            [
                IncomingReading(r.meter_id, at, r.total, r.bands, ReadingSource.CLOSING)
                for r in final_readings
            ],
            at,
        )
        if report.quarantined:
            raise ValidationError(
                "a final reading does not fit the meter's earlier readings: "
                + _why_refused(conn, given, at)
            )
        conn.execute(
            update(meter_assignments)
            .where(
                meter_assignments.c.account_id == account_id, meter_assignments.c.end_at.is_(None)
            )
            .values(end_at=at)
        )
        counters.bump(conn)
        conn.execute(
            update(accounts)
            .where(accounts.c.id == account_id)
            .values(status=AccountStatus.CLOSED.value, closed_at=at)
        )
        settled = cashier_settle.settle_in(
            conn,
            organisation_id=organisation_id,
            account_id=account_id,
            method=refund_method,
            actor=actor,
            at=at,
            idempotency_key=idempotency_key,
        )
        if account["billing_mode"] == BillingMode.METER.value:
            # The close refunded what the meter holds by the platform's estimate: take it off
            # the meter, or it keeps supplying it (devices/take_back.py).
            from meterdesk.devices import take_back

            take_back.clear_on_close(
                conn,
                organisation_id=organisation_id,
                account_id=account_id,
                meter_ids=sorted(held),
                actor=actor,
                at=at,
            )
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="account.close",
            subject=f"account:{number}",
            at=at,
            detail={
                "refunded": str(settled.refunded),
                "arrears": str(settled.arrears),
                "refund_transfer": settled.transfer_id,
                "key": idempotency_key,  # what a repeated close is answered from
                "request": asked,
            },
        )
    return ClosedAccount(number, settled.refunded, settled.arrears, settled.transfer_id)


def _take_close_key(conn: Connection, account_id: int, key: str) -> None:
    """Record the close's key on the account, first: a key another account's close used is
    refused before anything is done (a concurrent close with it waits here, then is refused)."""
    try:
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(close_key=key))
    except IntegrityError:
        raise IdempotencyConflictError(
            f"idempotency key {key!r} was already used for a different request"
        ) from None


def _close_request(number: str, finals: Sequence[FinalReading], method: str) -> str:
    """What makes two closes "the same request" for their key."""
    described = [
        number,
        method,
        sorted(
            [r.meter_id, str(r.total), sorted((k, str(v)) for k, v in (r.bands or {}).items())]
            for r in finals
        ),
    ]
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()


def _closed_with(
    conn: Connection, account: dict[str, object], key: str, asked: str
) -> ClosedAccount | None:
    """The result of the close made with this key, if this account was closed with it."""
    organisation_id, number = int(str(account["organisation_id"])), str(account["number"])
    detail = audit.last_detail(
        conn, organisation_id=organisation_id, action="account.close", subject=f"account:{number}"
    )
    if detail is None:
        return None
    if "key" in detail:
        if detail["key"] != key:
            return None
        if detail["request"] != asked:
            raise IdempotencyConflictError(
                f"idempotency key {key!r} was already used for a different request"
            )
        refund = detail["refund_transfer"]
        return ClosedAccount(
            number,
            Decimal(detail["refunded"]),
            Decimal(detail["arrears"]),
            None if refund is None else int(refund),
        )
    # Closed before closes recorded their key: its refund, if any, carries it.
    settlement = ledger.find_by_keys(conn, [cashier.desk_key(organisation_id, key)]).get(
        cashier.desk_key(organisation_id, key)
    )
    if settlement is None or settlement["account_id"] != account["id"]:
        return None
    return ClosedAccount(
        number,
        from_fen(int(str(settlement["amount_fen"]))),
        Decimal(detail["arrears"]),
        int(str(settlement["id"])),
    )
