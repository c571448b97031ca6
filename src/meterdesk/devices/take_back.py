"""退电 (F-REFUND, meter billing): take money back off a meter-billing meter, so that the desk
may refund it, and clear a meter when its account closes.

A take-back is a device command (kind ``take_back``, aspect money) with the recharge's
no-twice protocol on the meter's own take-back counter (``commands/take_back_attempt.py``): an
amount, or "all" (fixed from a fresh read of the meter's remaining money just before the first
send). It moves no ledger money: the wallet of a meter-billing account is never deducted, so it
already holds what the meter holds; what changes is how much of the wallet is on the meter.

- **Refundable.** The desk may refund the wallet less the money that may be on the meter
  (``reconcile.money_on_meter_fen``): pushes that may have landed, less the take-backs of the
  account that are *confirmed* (:func:`taken_back_fen`). A take-back pending, or sent and not
  yet proven, adds nothing: the money may still be on the meter. Each command counts once,
  by its own row, however often it is replayed or re-read.
- **Whose money.** A take-back records the open meter-billing account of its meter when it is
  made (``account_id``); only those count for that account. A take-back of a meter without
  such an account — the clear queued on closing, or an operator clearing a meter by hand — has
  none, and its money is nobody's to refund again: the close already refunded the platform's
  estimate of what the meter held.
- **Closing clears the meter.** Closing a meter-billing account queues a take-back "all" for
  each of its Modbus meters in the closing's transaction (key
  ``clear-on-close:{account}:{meter}``), so the meter stops supplying money the close refunded.
  Meters on other protocols never received money from the platform (their drivers refuse a
  recharge push), so there is nothing to clear.
- **Opening waits for the clear.** A meter-billing account cannot open on a meter whose newest
  clear (a take-back "all" without an account) is open, failed or cancelled, unless a
  replacement of the meter was recorded after it (a new device holds none of that money).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, func, select

from meterdesk.audit import service as audit
from meterdesk.billing.model import AccountStatus, BillingMode
from meterdesk.billing.tables import accounts, meter_assignments
from meterdesk.db.database import Database
from meterdesk.devices.commands import repository, service
from meterdesk.devices.commands.model import Command, CommandKind, CommandSpec, CommandStatus
from meterdesk.devices.tables import commands
from meterdesk.metering.model import Protocol
from meterdesk.metering.tables import meter_replacements, meters
from meterdesk.shared.errors import ConflictError, ValidationError
from meterdesk.shared.money import parse_positive_money, to_fen

CLEAR_ON_CLOSE = "clear-on-close"
# The protocols whose drivers can take money back. The others (DL/T 645 without the security
# chip, CJ/T 188, the MQTT-JSON gateway, manual meters) refuse a recharge push as well, so the
# platform never put money on them and closing has nothing to clear there.
TAKES_MONEY_BACK = (Protocol.MODBUS_TCP.value, Protocol.MODBUS_RTU.value)


def clear_key(account_id: int, meter_id: int) -> str:
    return f"{CLEAR_ON_CLOSE}:{account_id}:{meter_id}"


def take_back(
    db: Database,
    *,
    organisation_id: int,
    meter_id: int,
    amount: object | None,
    take_all: bool,
    actor: str,
    idempotency_key: str,
) -> service.SendResult:
    """Queue a take-back of ``amount`` (CNY) or of all the meter holds. The same key with the
    same request answers the first command."""
    with db.transaction() as conn:
        return take_back_in(
            conn,
            organisation_id=organisation_id,
            meter_id=meter_id,
            amount=amount,
            take_all=take_all,
            actor=actor,
            at=db.clock(),
            idempotency_key=idempotency_key,
        )


def take_back_in(
    conn: Connection,
    *,
    organisation_id: int,
    meter_id: int,
    amount: object | None,
    take_all: bool,
    actor: str,
    at: datetime,
    idempotency_key: str,
    clearing: bool = False,
) -> service.SendResult:
    """The same inside the caller's transaction. ``clearing``: the clear of a closing account,
    whose money is nobody's to refund (no account is recorded)."""
    if take_all == (amount is not None):
        raise ValidationError("give an amount to take back, or all (not both)")
    parsed = None if amount is None else parse_positive_money(amount, field="amount")
    account = None if clearing else _meter_billing_account(conn, organisation_id, meter_id)
    spec = CommandSpec(
        CommandKind.TAKE_BACK,
        amount=parsed,
        take_all=take_all,
        take_back_count=(repository.highest_confirmed_take_back(conn, meter_id) or 0) + 1,
        account_id=None if account is None else account[0],
    )
    result = service.create_in(
        conn,
        organisation_id=organisation_id,
        meter_id=meter_id,
        spec=spec,
        actor=actor,
        at=at,
        idempotency_key=idempotency_key,
    )
    if not result.replayed:
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="money.take_back",
            subject=f"meter:{result.command.meter_number}",
            at=at,
            detail={
                "command": result.command.id,
                "amount": "all" if parsed is None else f"{parsed:f}",
                "account": None if account is None else account[1],
                "clear_on_close": clearing,
            },
        )
    return result


def _meter_billing_account(
    conn: Connection, organisation_id: int, meter_id: int
) -> tuple[int, str] | None:
    """The open meter-billing account the meter belongs to (id, number), if any: the money a
    take-back brings off the meter is that account's to refund."""
    found = conn.execute(
        select(accounts.c.id, accounts.c.number)
        .join(meter_assignments, meter_assignments.c.account_id == accounts.c.id)
        .where(
            meter_assignments.c.meter_id == meter_id,
            meter_assignments.c.end_at.is_(None),
            accounts.c.organisation_id == organisation_id,
            accounts.c.status == AccountStatus.OPEN.value,
            accounts.c.billing_mode == BillingMode.METER.value,
        )
    ).first()
    return None if found is None else (int(found.id), str(found.number))


def clear_on_close(
    conn: Connection,
    *,
    organisation_id: int,
    account_id: int,
    meter_ids: list[int],
    actor: str,
    at: datetime,
) -> list[int]:
    """Queue a take-back "all" of each meter of a meter-billing account that is closing (in its
    transaction) that can take money back; the command ids."""
    clearable = conn.execute(
        select(meters.c.id).where(
            meters.c.id.in_(sorted(meter_ids)), meters.c.protocol.in_(TAKES_MONEY_BACK)
        )
    ).scalars()
    return [
        take_back_in(
            conn,
            organisation_id=organisation_id,
            meter_id=meter_id,
            amount=None,
            take_all=True,
            actor=actor,
            at=at,
            idempotency_key=clear_key(account_id, meter_id),
            clearing=True,
        ).command.id
        for meter_id in sorted(int(m) for m in clearable)
    ]


def _take_backs(conn: Connection, meter_ids: list[int]) -> list[Command]:
    if not meter_ids:
        return []
    rows = conn.execute(
        select(commands)
        .where(
            commands.c.meter_id.in_(sorted(set(meter_ids))),
            commands.c.kind == CommandKind.TAKE_BACK.value,
        )
        .order_by(commands.c.id)
    )
    return [repository.command_from_row(row) for row in rows.mappings()]


def taken_back_fen(conn: Connection, organisation_id: int, account_id: int) -> int:
    """What confirmed take-backs of the account (made while it was open: only those record it)
    brought off its meters. Pending or unproven ones count nothing."""
    return sum(
        to_fen(command.spec.amount or Decimal(0))
        for command in confirmed_take_backs(conn, organisation_id, account_id)
    )


def confirmed_take_backs(conn: Connection, organisation_id: int, account_id: int) -> list[Command]:
    """The account's confirmed take-backs that took money, in the order they were made (the
    order they reached the meter, with the pushes: commands/claiming.py)."""
    meter_ids = [
        int(m)
        for m in conn.execute(
            select(meter_assignments.c.meter_id).where(meter_assignments.c.account_id == account_id)
        ).scalars()
    ]
    return [
        command
        for command in _take_backs(conn, meter_ids)
        if command.organisation_id == organisation_id
        and command.spec.account_id == account_id
        and command.status is CommandStatus.CONFIRMED
        and command.spec.amount is not None
    ]


def unfinished_clear(conn: Connection, meter_id: int) -> Command | None:
    """The meter's newest clear (a take-back "all" without an account) when it is not
    confirmed, unless a replacement recorded after it put a new device there."""
    clears = [
        c for c in _take_backs(conn, [meter_id]) if c.spec.take_all and c.spec.account_id is None
    ]
    if not clears or clears[-1].status is CommandStatus.CONFIRMED:
        return None
    replaced = conn.execute(
        select(func.max(meter_replacements.c.replaced_at)).where(
            meter_replacements.c.meter_id == meter_id
        )
    ).scalar_one_or_none()
    if replaced is not None and replaced > clears[-1].created_at:
        return None
    return clears[-1]


def refuse_uncleared(conn: Connection, meter_ids: list[int]) -> None:
    """Opening meter billing on a meter that may still hold an earlier account's money: the
    new account's reconciliation (and the tenant) would get that money."""
    for meter_id in sorted(meter_ids):
        clear = unfinished_clear(conn, meter_id)
        if clear is None:
            continue
        number = conn.execute(select(meters.c.number).where(meters.c.id == meter_id)).scalar()
        state = clear.status.value + (f" ({clear.reason})" if clear.reason else "")
        raise ConflictError(
            f"meter {number} may still hold money: its clear (take-back #{clear.id}) is "
            f"{state}; clear it first (meterdesk command take-back {number} --all --key …) "
            "and open the account when it is confirmed"
        )
