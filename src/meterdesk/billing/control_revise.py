"""Revising an alarm plan or a friendly-hours profile that accounts already use.

A plan's levels and a profile's windows are read by every account that points at them, so a
revision changes what the control loop does for all of them — and it must take effect for all
of them at once. The hot path does not look at every account after every deduction: it compares
the balance with each account's stored *watch* threshold (the highest alarm or cut threshold,
``account_controls.watch_fen``), which was worked out from the old plan. Raising level 1 from
20.00 to 30.00 without re-deciding would leave every tenant between 20 and 30 unwarned until
something else made the loop look at them. So the revision, the control-policy counter (the
ingestors' cached thresholds) and a decision for every open account on the plan or profile
happen in **one** transaction, under the balances' locks in the ingest's order, as a policy
change of one account does (``control_admin.set_account_policy``): a tenant already below a
raised level is warned now; a cut that a new friendly window covers waits.

Each revision is audited with what it was before and what it became.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, select, update
from sqlalchemy.exc import IntegrityError

from meterdesk.audit import service as audit
from meterdesk.billing import control, control_config, control_send
from meterdesk.billing.model import AccountStatus
from meterdesk.billing.policy import Cause
from meterdesk.billing.tables import account_controls, accounts, alarm_plans, friendly_profiles
from meterdesk.db import counters
from meterdesk.db.database import Database
from meterdesk.shared.errors import ConflictError, NotFoundError


def revise_alarm_plan(
    db: Database,
    *,
    organisation_id: int,
    plan_id: int,
    levels: object,
    name: str | None = None,
    actor: str,
    outbox: control_send.Outbox,
) -> int:
    """Replace the plan's levels (and its name, when given); returns how many open accounts
    were decided again."""
    parsed = control_config.parse_levels(levels)
    values: dict[str, Any] = {"levels": control_config.levels_to_json(parsed)}
    if name is not None:
        values["name"] = name.strip()
    return _revise(
        db,
        table=alarm_plans,
        what="alarm plan",
        action="alarm_plan.update",
        subject="alarm_plan",
        uses=account_controls.c.alarm_plan_id,
        organisation_id=organisation_id,
        row_id=plan_id,
        values=values,
        actor=actor,
        outbox=outbox,
    )


def revise_friendly_profile(
    db: Database,
    *,
    organisation_id: int,
    profile_id: int,
    windows: object,
    weekends: bool,
    holidays: bool,
    name: str | None = None,
    actor: str,
    outbox: control_send.Outbox,
) -> int:
    """Replace the profile's windows, weekends and holidays (and its name, when given); returns
    how many open accounts were decided again."""
    values: dict[str, Any] = {
        "windows": control_config.windows_to_json(control_config.parse_windows(windows)),
        "weekends": weekends,
        "holidays": holidays,
    }
    if name is not None:
        values["name"] = name.strip()
    return _revise(
        db,
        table=friendly_profiles,
        what="friendly-hours profile",
        action="friendly.update",
        subject="friendly",
        uses=account_controls.c.friendly_profile_id,
        organisation_id=organisation_id,
        row_id=profile_id,
        values=values,
        actor=actor,
        outbox=outbox,
    )


def _revise(
    db: Database,
    *,
    table: Table,
    what: str,
    action: str,
    subject: str,
    uses: Any,
    organisation_id: int,
    row_id: int,
    values: dict[str, Any],
    actor: str,
    outbox: control_send.Outbox,
) -> int:
    at = db.clock()
    with db.transaction() as conn:
        before = _owned(conn, table, organisation_id, row_id, what)
        try:
            conn.execute(update(table).where(table.c.id == row_id).values(**values))
        except IntegrityError:
            raise ConflictError(f"{what} {values.get('name')!r} already exists") from None
        counters.bump(conn, counters.CONTROL_POLICY)
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action=action,
            subject=f"{subject}:{row_id}",
            at=at,
            detail={
                "before": {key: _shown(key, before[key]) for key in values},
                "after": {key: _shown(key, value) for key, value in values.items()},
            },
        )
        return _decide_again(conn, organisation_id, uses, row_id, at, outbox)


def open_accounts_using(
    conn: Connection, organisation_id: int, uses: Any, row_id: int
) -> list[int]:
    """The open accounts whose control row points at the plan or profile (``uses`` is
    ``account_controls.c.alarm_plan_id`` or ``.friendly_profile_id``): the ones a revision
    decides for again, and the console's count of them."""
    return list(
        conn.execute(
            select(account_controls.c.account_id)
            .join(accounts, accounts.c.id == account_controls.c.account_id)
            .where(
                uses == row_id,
                accounts.c.organisation_id == organisation_id,
                accounts.c.status == AccountStatus.OPEN.value,
            )
            .order_by(account_controls.c.account_id)
        ).scalars()
    )


def _decide_again(
    conn: Connection,
    organisation_id: int,
    uses: Any,
    row_id: int,
    at: datetime,
    outbox: control_send.Outbox,
) -> int:
    """Decide now for every open account the revision touches (storing its new watch)."""
    ids = open_accounts_using(conn, organisation_id, uses, row_id)
    if ids:
        balances = control.net_balances(conn, ids, lock=True)
        control.evaluate_in(
            conn, balances=balances, at=at, cause=Cause.POLICY_CHANGE, outbox=outbox
        )
    return len(ids)


def _owned(
    conn: Connection, table: Table, organisation_id: int, row_id: int, what: str
) -> dict[str, Any]:
    row = (
        conn.execute(
            select(table).where(table.c.id == row_id, table.c.organisation_id == organisation_id)
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFoundError(f"{what} {row_id} not found")
    return dict(row)


# The columns that store JSON text; every other one is shown as stored. (Guessing JSON from
# the text itself made a plan named "[0" fail its revision with a 500: schemathesis found it.)
_JSON_COLUMNS = frozenset({"levels", "windows"})


def _shown(column: str, value: Any) -> Any:
    """Stored JSON text as the structure it holds, for a readable audit entry."""
    if column in _JSON_COLUMNS and isinstance(value, str):
        return json.loads(value)
    return value
