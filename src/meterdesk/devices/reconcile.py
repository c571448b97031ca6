"""Meter billing (表端计费, F-MODE): money and prices pushed to the meter, the meter's remaining
money mirrored back, and the two compared (F-RECON).

**The meter is authoritative.** In meter billing the meter prices what it measures, deducts it
from its own balance and trips by itself; the platform cannot see inside and never corrects the
meter on its own. The platform keeps the money side (every recharge is a ledger transfer),
pushes each recharge to the meter exactly once, mirrors what the meter reports, and flags every
difference for a person to look at.

- A recharge push carries the transfer's money (less any part the ledger used to repay arrears)
  and a purchase count. Its idempotency key is derived from the transfer id, so one transfer can
  never make two pushes. The count given here is provisional (the last count known + 1); the
  executor fixes it from a fresh read of the meter's counter just before the first send.
- The platform's idea of the meter's money: the wallet (recharges less refunds; nothing is
  deducted in meter billing), less what the platform priced from the meter's readings at the
  account's tariff, less the recharges that have not (yet) been confirmed on the meter, less
  what confirmed take-backs (退电, ``devices/take_back.py``) brought back off it. Money on
  the meter before the account opened is assumed to be zero (meters are cleared on opening).
- Purchases: the highest purchase count of a confirmed push should equal the meter's counter.
  A higher counter means a top-up reached the meter some other way (or a failed push did land).

Rows list every open meter-billing account and meter with the verdict ``ok`` or what differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, RowMapping, select

from meterdesk.billing.model import AccountStatus, BillingMode
from meterdesk.billing.repository import load_assignments
from meterdesk.billing.tables import accounts, meter_assignments, period_totals
from meterdesk.db.database import Database
from meterdesk.devices import take_back
from meterdesk.devices.commands import device_state, event_log, repository, service, writes
from meterdesk.devices.commands.model import (
    Command,
    CommandKind,
    CommandSpec,
    CommandStatus,
    was_refused,
)
from meterdesk.devices.commands.params import meter_price_table
from meterdesk.devices.ports import Snapshot
from meterdesk.devices.tables import commands
from meterdesk.ledger.model import REPAY_ARREARS, Reason, derived_key
from meterdesk.ledger.tables import NOT_A_DEDUCTION, ledger_accounts, transfers
from meterdesk.metering.tables import meters
from meterdesk.shared.errors import ConflictError, NotFoundError
from meterdesk.shared.money import from_fen, round_fen, to_fen
from meterdesk.shared.time import local_date, zone
from meterdesk.sites.tables import sites
from meterdesk.tariffs.model import Tariff
from meterdesk.tariffs.repository import load_tariff

DEFAULT_TOLERANCE = Decimal("0.50")


def push_key(transfer_id: int) -> str:
    return f"recharge-push:transfer:{transfer_id}"


def push_recharge_for_transfer(
    db: Database, transfer_id: int, actor: str, *, organisation_id: int | None = None
) -> service.SendResult:
    """Push a desk recharge to the meter of its meter-billing account (once per transfer)."""
    with db.transaction() as conn:
        return push_recharge_in(
            conn,
            transfer_id=transfer_id,
            actor=actor,
            at=db.clock(),
            organisation_id=organisation_id,
        )


def push_recharge_in(
    conn: Connection,
    *,
    transfer_id: int,
    actor: str,
    at: datetime,
    organisation_id: int | None = None,
) -> service.SendResult:
    transfer = _recharge_transfer(conn, transfer_id, organisation_id)
    account = (
        conn.execute(select(accounts).where(accounts.c.id == transfer["account_id"]))
        .mappings()
        .one()
    )
    if account["billing_mode"] != BillingMode.METER.value:
        raise ConflictError(f"account {account['number']} uses platform billing: nothing to push")
    meter_ids = _open_meters(conn, int(account["id"]))
    if len(meter_ids) != 1:
        raise ConflictError(
            f"account {account['number']} has {len(meter_ids)} meters: meter billing pushes money to exactly one"
        )
    amount_fen = int(transfer["amount_fen"]) - _repaid_fen(conn, str(transfer["idempotency_key"]))
    if amount_fen <= 0:
        raise ConflictError(f"transfer {transfer_id} only repaid arrears: no money to push")
    spec = CommandSpec(
        CommandKind.RECHARGE,
        amount=from_fen(amount_fen),
        purchase_count=_provisional_count(conn, meter_ids[0]),
        transfer_id=transfer_id,
    )
    return service.create_in(
        conn,
        organisation_id=int(transfer["organisation_id"]),
        meter_id=meter_ids[0],
        spec=spec,
        actor=actor,
        at=at,
        idempotency_key=push_key(transfer_id),
    )


def _provisional_count(conn: Connection, meter_id: int) -> int:
    """The last purchase count known (mirrored, or of a push already queued) + 1."""
    status = device_state.status_of(conn, meter_id) or {}
    known = [status.get("purchase_count"), repository.highest_purchase(conn, meter_id)]
    return max((int(c) for c in known if c is not None), default=0) + 1


def _recharge_transfer(
    conn: Connection, transfer_id: int, organisation_id: int | None
) -> RowMapping:
    query = select(transfers).where(transfers.c.id == transfer_id)
    if organisation_id is not None:
        query = query.where(transfers.c.organisation_id == organisation_id)
    transfer = conn.execute(query).mappings().one_or_none()
    if transfer is None:
        raise NotFoundError(f"transfer {transfer_id} not found")
    if transfer["reason"] != Reason.RECHARGE.value or transfer["account_id"] is None:
        raise ConflictError(f"transfer {transfer_id} is a {transfer['reason']}, not a recharge")
    reversed_by = conn.execute(
        select(transfers.c.id).where(transfers.c.reverses_id == transfer_id)
    ).scalar_one_or_none()
    if reversed_by is not None:
        raise ConflictError(f"transfer {transfer_id} was reversed by transfer {reversed_by}")
    return transfer


def _repaid_fen(conn: Connection, recharge_key: str) -> int:
    """What the ledger took from this recharge to repay arrears (it never reached the wallet)."""
    # Keyed by derived_key now, ``{key}:repay`` in older databases; only a repayment counts (a
    # recharge keyed "R-7:repay" by the operator is not the repayment of "R-7").
    keys = [derived_key(REPAY_ARREARS, recharge_key), f"{recharge_key}:repay"]
    found = conn.execute(
        select(transfers.c.amount_fen).where(
            transfers.c.idempotency_key.in_(keys),
            transfers.c.reason == Reason.ARREARS_REPAYMENT.value,
        )
    ).scalar_one_or_none()
    return int(found or 0)


def _open_meters(conn: Connection, account_id: int) -> list[int]:
    rows = conn.execute(
        select(meter_assignments.c.meter_id).where(
            meter_assignments.c.account_id == account_id, meter_assignments.c.end_at.is_(None)
        )
    ).scalars()
    return sorted(int(m) for m in rows)


# --- money on the meter: refunds, reversals and closing ---------------------------------------
#
# In meter billing the wallet is never deducted: its balance is everything pushed (or still to
# be pushed) to the meter, which keeps and spends that money by itself. The desk can pay out or
# take back only what never went out.


def account_pushes(conn: Connection, organisation_id: int, account_id: int) -> dict[int, Command]:
    """The push of each recharge of the account, by transfer id."""
    recharges = conn.execute(
        select(transfers.c.id).where(
            transfers.c.account_id == account_id,
            NOT_A_DEDUCTION,  # the account index holds only these
            transfers.c.reason == Reason.RECHARGE.value,
        )
    ).scalars()
    keys = {service.scoped_key(organisation_id, push_key(int(t))): int(t) for t in recharges}
    if not keys:
        return {}
    rows = conn.execute(select(commands).where(commands.c.idempotency_key.in_(sorted(keys))))
    return {
        keys[str(row["idempotency_key"])]: repository.command_from_row(row)
        for row in rows.mappings()
    }


def may_be_on_meter(push: Command) -> bool:
    """Open (it may go out at any moment) or ever sent (it may have landed, whatever its status
    says): only a push cancelled or failed before it went out, or refused by the meter (a
    hoarding limit, say), is certainly not on the meter."""
    if was_refused(push):
        return False
    return push.is_open or push.sent_at is not None or push.status is CommandStatus.CONFIRMED


def money_on_meter_fen(conn: Connection, organisation_id: int, account_id: int) -> int:
    """What the account's recharges put on its meter, or may still put there, less what its
    confirmed take-backs (退电) brought back off it, in the order both reached the meter (the
    order they were made: commands/claiming.py). Never below zero at any step: a take-back of
    more than the account's pushes so far took money the account never pushed (a meter not
    cleared, a card top-up), which makes no more than its wallet refundable, then or against
    a later push — that push's money is on the meter."""
    pushes = [
        (push.id, to_fen(push.spec.amount or Decimal(0)))
        for push in account_pushes(conn, organisation_id, account_id).values()
        if may_be_on_meter(push)
    ]
    taken = [
        (command.id, -to_fen(command.spec.amount or Decimal(0)))
        for command in take_back.confirmed_take_backs(conn, organisation_id, account_id)
    ]
    on_meter = 0
    for _, change in sorted(pushes + taken):
        on_meter = max(on_meter + change, 0)
    return on_meter


def withdraw_push(
    conn: Connection, *, organisation_id: int, transfer_id: int, why: str, at: datetime
) -> None:
    """Stop the push of a recharge the ledger is taking back (a reversal): cancelled when it
    never went out; refused when the money may be on the meter, which would keep and spend
    money the ledger no longer holds."""
    push = repository.find_by_key(conn, service.scoped_key(organisation_id, push_key(transfer_id)))
    if push is None or not may_be_on_meter(push):
        return
    if push.is_open and writes.cancel_unsent(conn, push.id, why, at):
        event_log.add_event(conn, push.id, at, "cancelled", {"reason": why})
        return
    raise ConflictError(
        f"transfer {transfer_id} is on the meter or on its way there (push #{push.id} "
        f"{push.status.value}): the meter keeps and spends it, so the ledger cannot take it back"
    )


def stop_pushes_on_closing(
    conn: Connection, *, organisation_id: int, account_id: int, at: datetime
) -> None:
    """On closing: pushes that never went out are cancelled (the settlement refunds their money
    from the wallet); a push on its way to the meter stops the close until it is proven."""
    why = "account closed: its money is settled from the wallet"
    for push in account_pushes(conn, organisation_id, account_id).values():
        if not push.is_open:
            continue
        if not writes.cancel_unsent(conn, push.id, why, at):
            raise ConflictError(
                f"recharge push #{push.id} may be reaching the meter: close the account when "
                "it is confirmed or failed"
            )
        event_log.add_event(conn, push.id, at, "cancelled", {"reason": why})


def used_on_meter_fen(conn: Connection, account_id: int) -> dict[str, int]:
    """What the platform's tariff made of the account's readings and never deducted (meter
    billing), by utility: the money the meter spent, as far as the platform can tell."""
    rows = conn.execute(
        select(meters.c.utility, period_totals.c.exact_cost, period_totals.c.posted_fen)
        .join(meters, meters.c.id == period_totals.c.meter_id)
        .where(period_totals.c.account_id == account_id)
    ).all()
    used: dict[str, int] = {}
    for utility, cost, posted in rows:
        fen = to_fen(round_fen(Decimal(cost))) - int(posted)
        used[str(utility)] = used.get(str(utility), 0) + fen
    return used


# --- prices (F-TAR-PUSH) -----------------------------------------------------------------------


def push_tariff_prices(
    db: Database,
    *,
    organisation_id: int,
    meter_id: int,
    actor: str,
    idempotency_key: str,
    deadline_s: int | None = None,
) -> service.SendResult:
    """Write the price table of the tariff the meter is billed by (the version in force today,
    in the site's time zone) to the meter."""
    at = db.clock()
    with db.transaction() as conn:
        prices = tariff_prices(conn, organisation_id=organisation_id, meter_id=meter_id, at=at)
        return service.send_command_in(
            conn,
            organisation_id=organisation_id,
            meter_id=meter_id,
            kind=CommandKind.WRITE_PRICES.value,
            params={"prices": {slot: str(price) for slot, price in prices.items()}},
            actor=actor,
            at=at,
            idempotency_key=idempotency_key,
            deadline_s=deadline_s,
        )


def tariff_prices(
    conn: Connection, *, organisation_id: int, meter_id: int, at: datetime
) -> dict[str, Decimal]:
    current = [a for a in load_assignments(conn, [meter_id]).get(meter_id, []) if a.end_at is None]
    if not current or current[0].organisation_id != organisation_id:
        raise ConflictError(
            f"meter {meter_id} belongs to no open account: it has no tariff to push"
        )
    tariff = load_tariff(conn, current[0].tariff_id)
    timezone = conn.execute(
        select(sites.c.timezone)
        .join(meters, meters.c.site_id == sites.c.id)
        .where(meters.c.id == meter_id)
    ).scalar_one()
    return table_in_force(tariff, local_date(at, zone(str(timezone))))


def table_in_force(tariff: Tariff, today: date) -> dict[str, Decimal]:
    """The four-price table of the tariff's version in force on ``today`` (site zone)."""
    in_force = [v for v in tariff.versions if v.effective_from <= today]
    if not in_force:
        raise ConflictError(f"the meter's tariff has no version in force on {today}")
    return meter_price_table(in_force[-1])


# --- mirror and reconciliation -----------------------------------------------------------------


@dataclass(frozen=True)
class ReconciliationRow:
    account_id: int
    account_number: str
    meter_id: int
    meter_number: str
    platform_balance: Decimal  # the wallet in the ledger (recharges less refunds)
    priced_usage: Decimal  # what the platform priced from the readings, not deducted
    not_on_meter: Decimal  # recharges whose push is not confirmed
    expected_meter_money: Decimal | None
    meter_money: Decimal | None  # as last mirrored
    mirrored_at: datetime | None
    purchases_expected: int | None  # highest purchase count of a confirmed push
    purchases_meter: int | None
    difference: Decimal | None  # meter money − expected
    verdict: str  # "ok", or what differs
    taken_back: Decimal = Decimal("0.00")  # confirmed take-backs (退电) of the account
    notes: tuple[str, ...] = ()
    # money beyond the tolerance or purchases differ (not: shared, or never read); operators
    # are told (devices/money_watch.py)
    differs: bool = False


def mirror(
    db: Database, snapshot: Snapshot, *, tolerance: Decimal = DEFAULT_TOLERANCE
) -> ReconciliationRow | None:
    """Keep what a read of the meter showed (remaining money, purchase count, relay …) and, for
    a meter-billing meter, compare it at once; None for a meter billed by the platform."""
    at = db.clock()
    with db.transaction() as conn:
        device_state.save_snapshot(conn, snapshot, at)
        current = [
            a
            for a in load_assignments(conn, [snapshot.meter_id])[snapshot.meter_id]
            if a.end_at is None
        ]
        if not current or current[0].billing_mode is not BillingMode.METER:
            return None
        row = _accounts_query().where(accounts.c.id == current[0].account_id)
        found = [_row(conn, dict(r), tolerance) for r in conn.execute(row).mappings()]
        return next((r for r in found if r.meter_id == snapshot.meter_id), None)


def reconcile(
    db: Database, organisation_id: int, *, tolerance: Decimal = DEFAULT_TOLERANCE
) -> list[ReconciliationRow]:
    """Every open meter-billing account and meter of the organisation, compared."""
    with db.read() as conn:
        query = _accounts_query().where(accounts.c.organisation_id == organisation_id)
        rows = conn.execute(query.order_by(accounts.c.number, meters.c.number)).mappings().all()
        return [_row(conn, dict(row), tolerance) for row in rows]


def _accounts_query() -> Any:
    return (
        select(
            accounts.c.id.label("account_id"),
            accounts.c.number.label("account_number"),
            accounts.c.wallet_id,
            accounts.c.arrears_id,
            accounts.c.organisation_id,
            meters.c.id.label("meter_id"),
            meters.c.number.label("meter_number"),
            ledger_accounts.c.balance_fen,
        )
        .join(meter_assignments, meter_assignments.c.account_id == accounts.c.id)
        .join(meters, meters.c.id == meter_assignments.c.meter_id)
        .join(ledger_accounts, ledger_accounts.c.id == accounts.c.wallet_id)
        .where(
            accounts.c.billing_mode == BillingMode.METER.value,
            accounts.c.status == AccountStatus.OPEN.value,
            meter_assignments.c.end_at.is_(None),
        )
    )


def _row(conn: Connection, base: dict[str, Any], tolerance: Decimal) -> ReconciliationRow:
    account_id, meter_id = int(base["account_id"]), int(base["meter_id"])
    balance = from_fen(int(base["balance_fen"]))
    priced = _priced_usage(conn, account_id, meter_id)
    pushes = repository.recharges_for_meter(conn, meter_id)
    organisation_id = int(base["organisation_id"])
    taken = from_fen(take_back.taken_back_fen(conn, organisation_id, account_id))
    missing, notes = _not_on_meter(conn, account_id, pushes, taken)
    status = device_state.status_of(conn, meter_id) or {}
    expected_count = repository.highest_confirmed_purchase(conn, meter_id)  # this device's
    meter_money = status.get("remaining_money")
    shared = len(_open_meters(conn, account_id)) > 1
    expected = None if shared else balance - priced - missing
    difference = None if expected is None or meter_money is None else meter_money - expected
    verdict = _verdict(
        shared, meter_money, expected_count, status.get("purchase_count"), difference, tolerance
    )
    return ReconciliationRow(
        account_id=account_id,
        account_number=str(base["account_number"]),
        meter_id=meter_id,
        meter_number=str(base["meter_number"]),
        platform_balance=balance,
        priced_usage=priced,
        not_on_meter=missing,
        expected_meter_money=expected,
        meter_money=meter_money,
        mirrored_at=status.get("updated_at"),
        purchases_expected=expected_count,
        purchases_meter=status.get("purchase_count"),
        difference=difference,
        verdict=verdict,
        taken_back=taken,
        notes=tuple(notes),
        differs=not shared and meter_money is not None and verdict != "ok",
    )


def _verdict(
    shared: bool,
    meter_money: Decimal | None,
    expected_count: int | None,
    meter_count: int | None,
    difference: Decimal | None,
    tolerance: Decimal,
) -> str:
    if shared:
        return "several meters share this account: compare by hand"
    if meter_money is None:
        return "not mirrored: the meter's remaining money was never read"
    issues = []
    if expected_count is not None and meter_count is not None and meter_count != expected_count:
        issues.append(f"purchases differ: meter {meter_count}, expected {expected_count}")
    if difference is not None and abs(difference) > tolerance:
        issues.append(f"money differs by {difference:f}")
    return "; ".join(issues) or "ok"


def _priced_usage(conn: Connection, account_id: int, meter_id: int) -> Decimal:
    """What the platform's tariff made of the meter's readings and did not deduct."""
    rows = conn.execute(
        select(period_totals.c.exact_cost, period_totals.c.posted_fen).where(
            period_totals.c.account_id == account_id, period_totals.c.meter_id == meter_id
        )
    ).all()
    return sum(
        (round_fen(Decimal(cost)) - from_fen(int(posted)) for cost, posted in rows), Decimal("0.00")
    )


def _not_on_meter(
    conn: Connection, account_id: int, pushes: list[Any], taken_back: Decimal
) -> tuple[Decimal, list[str]]:
    """Money in the wallet that is not on the meter, with notes: recharges whose push the meter
    has not confirmed, plus what confirmed take-backs brought back off it, less what refunds
    paid out of those.

    Why: with R recharges (C of them confirmed on the meter, U = R − C not), F refunded, P
    priced usage and T taken back, the meter holds C − P − T and the wallet W = R − F, so the
    money to leave out of W − P is W − C + T = U + T − F. A refund can pay out only the
    unpushed or taken-back part (cashier_refund), so this is never below zero."""
    by_transfer = {p.spec.transfer_id: p for p in pushes}
    recharges = conn.execute(
        select(transfers.c.id, transfers.c.amount_fen, transfers.c.idempotency_key).where(
            transfers.c.account_id == account_id,
            NOT_A_DEDUCTION,  # the account index holds only these
            transfers.c.reason == Reason.RECHARGE.value,
        )
    ).all()
    reversed_ids = set(
        conn.execute(
            select(transfers.c.reverses_id).where(
                transfers.c.account_id == account_id,
                NOT_A_DEDUCTION,  # a reversal is not a deduction; the account index holds these
                transfers.c.reverses_id.is_not(None),
            )
        ).scalars()
    )
    missing, notes = Decimal("0.00"), []
    refunded = _refunded(conn, account_id, reversed_ids)
    for transfer_id, amount_fen, key in recharges:
        if transfer_id in reversed_ids:
            continue
        push = by_transfer.get(int(transfer_id))
        if push is not None and push.status is CommandStatus.CONFIRMED:
            continue
        missing += from_fen(int(amount_fen) - _repaid_fen(conn, str(key)))
        state = "never pushed" if push is None else f"push #{push.id} {push.status.value}"
        notes.append(
            f"transfer {transfer_id}: {state}"
            + (f" ({push.reason})" if push is not None and push.reason else "")
        )
    if taken_back:
        notes.append(f"{taken_back:f} taken back off the meter")
        missing += taken_back
    if refunded and missing:
        # A refund pays out money that never went to the meter or came back off it
        # (cashier_refund): that much is gone from the wallet too, not still to come.
        notes.append(f"{min(refunded, missing):f} of it refunded")
        missing = max(missing - refunded, Decimal("0.00"))
    return missing, notes


def _refunded(conn: Connection, account_id: int, reversed_ids: set[int]) -> Decimal:
    rows = conn.execute(
        select(transfers.c.id, transfers.c.amount_fen).where(
            transfers.c.account_id == account_id,
            NOT_A_DEDUCTION,  # the account index holds only these
            transfers.c.reason == Reason.REFUND.value,
        )
    ).all()
    return from_fen(sum(int(fen) for i, fen in rows if int(i) not in reversed_ids))
