"""Supply drift: a meter whose last read disagrees with the platform's supply decision.

On platform billing (远程费控) the platform decides and the meter only switches, so a relay that
opens by itself (local protection, a restart into a default state, the button, a technician) or
closes while the platform has cut it (a bypass, a reset) leaves the tenant in the dark — or on
free supply — while every screen shows the decision. The control tick therefore compares each
online meter's last read relay/valve (``device_status``) with its account's decision
(``account_controls.state``) and, where they disagree, sends the command that puts the decision
back through the control loop's own outbox (same kinds, read-back, supersede rules and audit).

It acts only on a fresh, settled disagreement, so it never argues with a command in flight:
- the account is open and on platform billing (on meter billing the meter decides);
- the supply is ``on`` (or protect is on) and the meter shows relay open / valve closed, or the
  supply is ``off`` without protect and it shows relay closed / valve open; ``cut_pending``
  waits for friendly hours, so it is never a disagreement;
- the meter is online, has no open (pending/sent) command, and was read after its latest
  command finished (a read from before a confirmed command is stale);
- a relay open after a confirmed "close allowed" is the meter waiting for the tenant's button,
  not drift — until a read shows the relay closed (the tenant used it; :class:`LatestSwitch`);
- at most one re-assert per meter per ``interval`` (default one hour): a meter that keeps
  flipping (real overload protection) gets one command per interval, not one per tick; a stuck
  one (its re-asserts fail) waits twice as long after each failure, up to a day
  (:func:`backoff`), and its failures tell the operators once per episode. The re-asserts
  themselves are the memory (commands keyed ``reassert:…``, their context the episode), so a
  restart forgets nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, exists, func, or_, select

from meterdesk.audit import service as audit
from meterdesk.billing import control_config
from meterdesk.billing.control_send import COMMAND_FOR, CommandRequest, Outbox
from meterdesk.billing.outbox import CONTROL_ACTOR
from meterdesk.billing.policy import Action, RestoreMode, Supply
from meterdesk.billing.tables import account_controls, accounts, meter_assignments
from meterdesk.db.database import Database
from meterdesk.db.types import instant_int
from meterdesk.devices.commands.model import OPEN_STATUSES, CommandStatus
from meterdesk.devices.tables import commands, device_status
from meterdesk.metering.tables import meters
from meterdesk.shared.chunks import chunks

REASSERT_INTERVAL = timedelta(hours=1)
# A stuck relay (its re-asserts fail) waits twice as long after each failed one, up to a day.
BACKOFF_CAP = timedelta(days=1)
BATCH = 500
KEY_PREFIX = "reassert"
# The switch of each utility: (part, shown when supply is on, shown when it is off).
SWITCH = {"electricity": ("relay", "closed", "open"), "water": ("valve", "open", "closed")}
SWITCH_KINDS = ("relay_trip", "relay_close", "relay_close_allowed", "valve_open", "valve_close")


@dataclass(frozen=True)
class Drift:
    """What the meter shows against what the platform decided, and the command that fixes it."""

    part: str  # relay | valve
    shows: str  # open | closed, as last read
    supply: str  # on | off: the platform's decision
    kind: str  # the command that puts the decision back

    @property
    def why(self) -> str:
        return f"meter showed {self.part} {self.shows} while supply is {self.supply}"


def drift(
    *,
    supply: Supply,
    protect: bool,
    utility: str,
    relay: str | None,
    valve: str | None,
    restore_mode: RestoreMode = RestoreMode.DIRECT,
    armed: bool = False,
) -> Drift | None:
    """The disagreement between a meter's read and the decision, or None. ``armed``: the meter's
    latest relay command is a confirmed "close allowed" the tenant has not used yet (open then
    waits for the button; :class:`LatestSwitch`)."""
    if supply is Supply.CUT_PENDING or utility not in SWITCH:
        return None
    part, on, off = SWITCH[utility]
    shows = relay if part == "relay" else valve
    wanted_on = supply is Supply.ON or protect
    if shows not in (on, off) or (shows == on) == wanted_on or (armed and shows == off):
        return None
    kind = COMMAND_FOR[(utility, Action.RESTORE if wanted_on else Action.CUT)]
    if kind == "relay_close" and restore_mode is RestoreMode.CLOSE_ALLOWED:
        kind = "relay_close_allowed"
    return Drift(part, shows, "on" if wanted_on else "off", kind)


@dataclass(frozen=True)
class LatestSwitch:
    """A meter's newest relay or valve command."""

    command_id: int
    kind: str
    status: str
    # A confirmed "close allowed" the tenant has not used yet: an open relay then waits for the
    # button. Once a read taken after the command was created (its own read-back included) has
    # shown the relay closed, the tenant has had the supply back, and a relay that opens again
    # is drift like any other (armed never ended, so it was never put back).
    armed: bool = False


def is_armed(
    kind: str, status: str, created_at: datetime, relay_closed_at: datetime | None
) -> bool:
    return (
        kind == "relay_close_allowed"
        and status == CommandStatus.CONFIRMED
        and (relay_closed_at is None or relay_closed_at <= created_at)
    )


def latest_switch_commands(conn: Connection, meter_ids: Sequence[int]) -> dict[int, LatestSwitch]:
    if not meter_ids:
        return {}
    newest = select(meters.c.id, _newest_switch_id()).where(meters.c.id.in_(sorted(set(meter_ids))))
    ids = [int(command_id) for _, command_id in conn.execute(newest) if command_id is not None]
    return {meter_id: latest for meter_id, (latest, _) in _switches(conn, ids).items()}


def _newest_switch_id() -> Any:
    """The id of the newest relay or valve command of ``meters.c.id`` (correlated): read down
    (meter, id) from the newest and stopped at the first, so it costs the meter's commands of
    other kinds since (protect, prices, limits: operators' rare writes), not its history."""
    return (
        select(commands.c.id)
        .where(commands.c.meter_id == meters.c.id, commands.c.kind.in_(SWITCH_KINDS))
        .order_by(commands.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


# --- the tick's step ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Meter:
    organisation_id: int
    account_id: int
    account_number: str
    meter_id: int
    meter_number: str
    utility: str
    relay: str | None
    valve: str | None
    online: bool
    seen_at: datetime | None
    supply: Supply
    protect: bool
    restore_mode: RestoreMode


@dataclass(frozen=True)
class _Stuck:
    """The meter's newest relay or valve command when it is a failed re-assert."""

    kind: str
    failed: int  # the failed re-asserts of the episode, this one included
    episode: str  # names the episode: the key of its first re-assert


@dataclass(frozen=True)
class _History:
    open: bool
    finished_at: datetime | None  # the latest finished command's
    reasserted_at: datetime | None  # the latest re-assert's creation (a recent one's)
    latest_switch: LatestSwitch | None  # the newest relay or valve command
    stuck: _Stuck | None  # that command, when it is a failed re-assert


@dataclass(frozen=True)
class _Reassert:
    """A command a drifted meter gets now, and its place in a stuck episode."""

    meter: _Meter
    drift: Drift
    failed_before: int  # failed re-asserts of this episode before this one
    episode: str


def backoff(interval: timedelta, failed_before: int) -> timedelta:
    """How long after the newest re-assert the next may go: ``interval``, doubled for each
    failed re-assert of the episode before it, at most a day (or ``interval`` when longer)."""
    wait, cap = interval, max(interval, BACKOFF_CAP)
    for _ in range(failed_before):
        wait *= 2
        if wait >= cap:
            return cap
    return wait


def reassert(db: Database, *, outbox: Outbox, at: datetime, interval: timedelta) -> int:
    """Send the commands that put drifted meters back to the decision; how many were sent.

    First a read picks, among the candidates, the meters that would get a command now; those
    that would not (armed, within the interval, a command in flight, a stale read) are neither
    locked nor read again, so a tick over meters that drift for months costs what it did on
    the first day. Then one transaction per batch of the picked meters, locked first (the lock
    command creation takes), decides again on what it reads under the lock: a decision
    committed before is seen (its command is open, so this step stands back), and one
    committing after waits for the lock and supersedes what this step sent (the newest command
    wins)."""
    with db.read() as conn:
        picked = [
            due.meter.meter_id
            for chunk in chunks(_candidates(conn), BATCH)
            for due in _due_now(conn, chunk, at, interval)
        ]
    sent = 0
    for chunk in chunks(picked, BATCH):
        with db.transaction() as conn:
            _lock_meters(conn, chunk)
            due = _due_now(conn, chunk, at, interval)
            _send(conn, due, outbox, at)
        sent += len(due)
    return sent


def _due_now(
    conn: Connection, meter_ids: list[int], at: datetime, interval: timedelta
) -> list[_Reassert]:
    """The meters of ``meter_ids`` that get a command now, with the command."""
    histories = _histories(conn, meter_ids, since=at - max(interval, BACKOFF_CAP))
    due = []
    for meter in _load(conn, meter_ids):
        history = histories[meter.meter_id]
        found = _due(meter, history)
        if found is None:
            continue
        failed_before, episode = _episode(meter, history.stuck, found, at)
        if _settled(meter, history, at, backoff(interval, failed_before)):
            due.append(_Reassert(meter, found, failed_before, episode))
    return due


def _episode(meter: _Meter, stuck: _Stuck | None, found: Drift, at: datetime) -> tuple[int, str]:
    """A stuck episode goes on while the meter's newest relay or valve command is a failed
    re-assert of the same command; a confirmed re-assert or any other command (a decision, an
    operator's) ends it, and the next re-assert starts a new one named by its own key."""
    if stuck is not None and stuck.kind == found.kind:
        return stuck.failed, stuck.episode
    return 0, _key(meter.meter_id, at)


def _key(meter_id: int, at: datetime) -> str:
    return f"{KEY_PREFIX}:{meter_id}:{instant_int(at)}"


def disagreeing_meter_ids() -> Any:
    """The meters that may disagree with their account's decision: online, on a line, of an
    open platform-billing account, showing off (relay open, valve closed) while supply is on or
    protected, or on while it is off. A superset of :func:`drift`'s cases (an armed
    close-allowed relay is in it), read cheaply from the grid's ``supply`` column; the tick
    decides on the JSON state, the console lists them (``/meters?drift=1``)."""
    supply = func.coalesce(account_controls.c.supply, Supply.ON.value)
    shows_off = or_(device_status.c.relay == "open", device_status.c.valve == "closed")
    shows_on = or_(device_status.c.relay == "closed", device_status.c.valve == "open")
    return (
        select(meters.c.id)
        .select_from(accounts)
        .join(
            meter_assignments,
            (meter_assignments.c.account_id == accounts.c.id)
            & meter_assignments.c.end_at.is_(None),
        )
        .join(meters, meters.c.id == meter_assignments.c.meter_id)
        .join(device_status, device_status.c.meter_id == meters.c.id)
        .outerjoin(account_controls, account_controls.c.account_id == accounts.c.id)
        .where(
            accounts.c.status == "open",
            accounts.c.billing_mode == "platform",
            meters.c.protocol != "manual",
            device_status.c.state == "online",
            or_(
                and_(shows_off, or_(supply != Supply.OFF.value, account_controls.c.protect)),
                and_(shows_on, account_controls.c.supply == Supply.OFF.value),
            ),
        )
    )


def _candidates(conn: Connection) -> list[int]:
    rows = conn.execute(disagreeing_meter_ids().order_by(meters.c.id)).scalars()
    return [int(meter_id) for meter_id in rows]


def _lock_meters(conn: Connection, meter_ids: list[int]) -> None:
    """The lock command creation takes (:func:`batch.create_many_in`), taken before reading."""
    conn.execute(
        select(meters.c.id)
        .where(meters.c.id.in_(meter_ids))
        .order_by(meters.c.id)
        .with_for_update(key_share=True)
    ).all()


_COLUMNS = (
    accounts.c.organisation_id,
    accounts.c.id,
    accounts.c.number,
    meters.c.id.label("meter_id"),
    meters.c.number.label("meter_number"),
    meters.c.utility,
    device_status.c.relay,
    device_status.c.valve,
    device_status.c.state.label("connection"),
    device_status.c.last_seen_at,
    account_controls.c.state.label("control"),
    account_controls.c.protect,
    account_controls.c.restore_mode,
)


def _load(conn: Connection, meter_ids: list[int]) -> list[_Meter]:
    """The meters with their account's decision, read inside the batch's transaction."""
    rows = conn.execute(
        select(*_COLUMNS)
        .join(meter_assignments, meter_assignments.c.account_id == accounts.c.id)
        .join(meters, meters.c.id == meter_assignments.c.meter_id)
        .join(device_status, device_status.c.meter_id == meters.c.id)
        .outerjoin(account_controls, account_controls.c.account_id == accounts.c.id)
        .where(
            meters.c.id.in_(meter_ids),
            meter_assignments.c.end_at.is_(None),
            accounts.c.status == "open",
            accounts.c.billing_mode == "platform",
        )
        .order_by(meters.c.id)
    ).mappings()
    return [
        _Meter(
            organisation_id=int(r["organisation_id"]),
            account_id=int(r["id"]),
            account_number=str(r["number"]),
            meter_id=int(r["meter_id"]),
            meter_number=str(r["meter_number"]),
            utility=str(r["utility"]),
            relay=r["relay"],
            valve=r["valve"],
            online=r["connection"] == "online",
            seen_at=r["last_seen_at"],
            # no control row yet: the default state, supply on
            supply=control_config.state_from_json(r["control"]).supply
            if r["control"]
            else Supply.ON,
            protect=bool(r["protect"]),
            restore_mode=RestoreMode(r["restore_mode"] or RestoreMode.DIRECT.value),
        )
        for r in rows
    ]


def _histories(conn: Connection, meter_ids: list[int], *, since: datetime) -> dict[int, _History]:
    """Each meter's open command, latest finish, re-assert since ``since`` and newest relay or
    valve command — every one an index range of the meter's recent commands ((meter,
    finished_at) and (meter, id), read from the newest), never its whole history."""
    mine = commands.c.meter_id == meters.c.id
    is_reassert = and_(
        commands.c.created_by == CONTROL_ACTOR,
        commands.c.idempotency_key.like(f"%:{KEY_PREFIX}:%"),
    )
    # Open is unfinished: a command gets its finished_at exactly when it leaves pending/sent.
    is_open = exists().where(
        mine, commands.c.finished_at.is_(None), commands.c.status.in_(OPEN_STATUSES)
    )
    latest_finish = (
        select(commands.c.finished_at)
        .where(mine, commands.c.finished_at.is_not(None))
        .order_by(commands.c.finished_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    # A re-assert created since ``since`` finished since then too (or is open, and then this
    # step stands back anyway): the ones before cannot hold the meter back.
    reasserted = (
        select(func.max(commands.c.created_at))
        .where(mine, commands.c.finished_at >= since, is_reassert)
        .scalar_subquery()
    )
    rows = conn.execute(
        select(meters.c.id, is_open, latest_finish, reasserted, _newest_switch_id()).where(
            meters.c.id.in_(meter_ids)
        )
    ).all()
    switches = _switches(conn, [int(row[4]) for row in rows if row[4] is not None])
    histories = {}
    for meter_id, open_, done, again, _ in rows:
        latest, stuck = switches.get(int(meter_id), (None, None))
        histories[int(meter_id)] = _History(bool(open_), done, again, latest, stuck)
    return histories


def _switches(
    conn: Connection, command_ids: list[int]
) -> dict[int, tuple[LatestSwitch, _Stuck | None]]:
    """The commands of ``command_ids`` (one per meter) by meter: as :class:`LatestSwitch`, and
    as a stuck episode's re-assert when it is a failed one."""
    if not command_ids:
        return {}
    rows = conn.execute(
        select(
            commands.c.id, commands.c.meter_id, commands.c.kind, commands.c.status,
            commands.c.created_by, commands.c.created_at, commands.c.params,
            device_status.c.relay_closed_at,
        )
        .outerjoin(device_status, device_status.c.meter_id == commands.c.meter_id)
        .where(commands.c.id.in_(command_ids))
    )  # fmt: skip
    found = {}
    for r in rows:
        stuck = None
        context = json.loads(r.params)
        if (
            r.status == CommandStatus.FAILED
            and r.created_by == CONTROL_ACTOR
            and context.get("reason") == "reassert"
        ):
            # re-asserts from before episodes were recorded: each its own episode, named as its
            # failure message's key was (devices.commands.attempt)
            episode = context.get("failure_notice") or f"command:{r.id}"
            stuck = _Stuck(str(r.kind), int(context.get("failed_before", 0)) + 1, str(episode))
        armed = is_armed(str(r.kind), str(r.status), r.created_at, r.relay_closed_at)
        latest = LatestSwitch(int(r.id), str(r.kind), str(r.status), armed)
        found[int(r.meter_id)] = (latest, stuck)
    return found


def _due(meter: _Meter, history: _History) -> Drift | None:
    if not meter.online or history.open:
        return None
    latest = history.latest_switch
    return drift(
        supply=meter.supply,
        protect=meter.protect,
        utility=meter.utility,
        relay=meter.relay,
        valve=meter.valve,
        restore_mode=meter.restore_mode,
        armed=latest is not None and latest.armed,
    )


def _settled(meter: _Meter, history: _History, at: datetime, wait: timedelta) -> bool:
    """The read is newer than the meter's last finished command, and no re-assert within
    ``wait``."""
    if meter.seen_at is None:
        return False
    if history.finished_at is not None and meter.seen_at <= history.finished_at:
        return False
    return history.reasserted_at is None or at - history.reasserted_at >= wait


def _send(conn: Connection, due: list[_Reassert], outbox: Outbox, at: datetime) -> None:
    """The commands through the control loop's outbox, and one audit entry each saying why.
    The re-asserts of one stuck episode share a ``failure_notice``, so their failures tell the
    operators once (devices.commands.attempt), while each stays in the command list."""
    if not due:
        return
    outbox.send_commands(
        conn,
        [
            CommandRequest(
                organisation_id=one.meter.organisation_id,
                meter_id=one.meter.meter_id,
                kind=one.drift.kind,
                key=_key(one.meter.meter_id, at),
                params={
                    "reason": "reassert",
                    "account_id": one.meter.account_id,
                    "why": one.drift.why,
                    "failed_before": one.failed_before,
                    "failure_notice": one.episode,
                },
            )
            for one in due
        ],
    )
    audit.record_many(
        conn,
        [
            audit.Entry(
                organisation_id=one.meter.organisation_id,
                actor=CONTROL_ACTOR,
                action="supply.reassert",
                subject=f"account:{one.meter.account_number}",
                at=at,
                detail={
                    "meter": one.meter.meter_number,
                    "command": one.drift.kind,
                    "why": one.drift.why,
                    # a stuck relay: how many re-asserts of this episode failed before
                    **({"failed_before": one.failed_before} if one.failed_before else {}),
                },
            )
            for one in due
        ],
    )
