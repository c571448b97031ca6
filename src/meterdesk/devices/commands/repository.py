"""Reading device commands: a stored row back as a :class:`Command`, one command by id or key,
the open commands of meters, a page of the organisation's commands, where each meter answers and a
meter's recharge pushes. ``params_text`` is the one way a command's parameters are stored (with the
request hash beside them), shared by every writer.

The rest of the persistence lives beside this module: inserts and status changes in
:mod:`~meterdesk.devices.commands.writes`, the command event log in
:mod:`~meterdesk.devices.commands.event_log` and the executor's claim and lease of due commands in
:mod:`~meterdesk.devices.commands.claiming`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, RowMapping, bindparam, func, or_, select

from meterdesk.devices.commands.model import (
    OPEN_STATUSES,
    Command,
    CommandKind,
    CommandSpec,
    CommandStatus,
    CommandTarget,
)
from meterdesk.devices.commands.params import split_stored
from meterdesk.devices.ports import MeterAddress
from meterdesk.devices.tables import buses, commands, gateways
from meterdesk.metering.tables import meter_replacements, meters

REQUEST_HASH = "request_hash"  # kept beside the parameters in commands.params


def command_from_row(row: RowMapping) -> Command:
    params = json.loads(row["params"])
    request_hash = str(params.pop(REQUEST_HASH, ""))
    spec, context = split_stored(row["kind"], params)
    return Command(
        id=int(row["id"]),
        organisation_id=int(row["organisation_id"]),
        meter_id=int(row["meter_id"]),
        spec=spec,
        status=CommandStatus(row["status"]),
        reason=row["reason"],
        attempts=int(row["attempts"]),
        max_attempts=int(row["max_attempts"]),
        next_attempt_at=row["next_attempt_at"],
        deadline_at=row["deadline_at"],
        idempotency_key=str(row["idempotency_key"]),
        created_by=str(row["created_by"]),
        created_at=row["created_at"],
        request_hash=request_hash or spec.request_hash(int(row["meter_id"])),
        sent_at=row["sent_at"],
        finished_at=row["finished_at"],
        context=context,
    )


def params_text(spec: CommandSpec, request_hash: str, context: Mapping[str, object]) -> str:
    return json.dumps({**context, **spec.to_params(), REQUEST_HASH: request_hash}, sort_keys=True)


def find_by_key(conn: Connection, idempotency_key: str) -> Command | None:
    row = (
        conn.execute(select(commands).where(commands.c.idempotency_key == idempotency_key))
        .mappings()
        .one_or_none()
    )
    return None if row is None else command_from_row(row)


def get(conn: Connection, command_id: int, organisation_id: int | None = None) -> Command | None:
    query = select(commands).where(commands.c.id == command_id)
    if organisation_id is not None:
        query = query.where(commands.c.organisation_id == organisation_id)
    row = conn.execute(query).mappings().one_or_none()
    return None if row is None else command_from_row(row)


def many(conn: Connection, command_ids: Iterable[int]) -> list[Command]:
    ids = sorted(set(command_ids))
    if not ids:
        return []
    rows = conn.execute(select(commands).where(commands.c.id.in_(ids)).order_by(commands.c.id))
    return [command_from_row(row) for row in rows.mappings()]


def for_meter(conn: Connection, meter_id: int, statuses: Iterable[str]) -> list[Command]:
    return for_meters(conn, [meter_id], statuses)


# Built once: the control loop reads its meters' open commands in every batch that decides, and
# building the statement (and its cache key) cost more than running it.
_FOR_METERS = (
    select(commands)
    .where(
        commands.c.meter_id.in_(bindparam("meter_ids", expanding=True)),
        commands.c.status.in_(bindparam("statuses", expanding=True)),
    )
    .order_by(commands.c.id)
)


def for_meters(
    conn: Connection, meter_ids: Iterable[int], statuses: Iterable[str]
) -> list[Command]:
    rows = conn.execute(
        _FOR_METERS, {"meter_ids": sorted(set(meter_ids)), "statuses": list(statuses)}
    )
    return [command_from_row(row) for row in rows.mappings()]


def select_commands(
    conn: Connection,
    *,
    organisation_id: int,
    status: str | None = None,
    meter_id: int | None = None,
    kind: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[Command]:
    query = select(commands).where(commands.c.organisation_id == organisation_id)
    for column, value in (
        (commands.c.status, status),
        (commands.c.meter_id, meter_id),
        (commands.c.kind, kind),
    ):
        if value is not None:
            query = query.where(column == value)
    if before_id is not None:
        query = query.where(commands.c.id < before_id)
    rows = conn.execute(query.order_by(commands.c.id.desc()).limit(limit))
    return [command_from_row(row) for row in rows.mappings()]


def targets(conn: Connection, meter_ids: Iterable[int]) -> dict[int, CommandTarget]:
    """Where each meter answers. A meter behind an MQTT gateway also gets the gateway's
    ``product_key`` and ``gateway_sn`` in its options: the MQTT driver addresses the gateway."""
    ids = sorted(set(meter_ids))
    if not ids:
        return {}
    rows = conn.execute(
        select(
            meters.c.id,
            meters.c.number,
            meters.c.protocol,
            meters.c.address,
            meters.c.bus_id,
            meters.c.device_options,
            buses.c.transport,
            gateways.c.serial,
            gateways.c.product_key,
        )
        .select_from(meters)
        .outerjoin(buses, buses.c.id == meters.c.bus_id)
        .outerjoin(gateways, gateways.c.id == buses.c.gateway_id)
        .where(meters.c.id.in_(ids))
    )
    result = {}
    for row in rows:
        loaded = json.loads(row.device_options) if row.device_options else {}
        options = {str(k): str(v) for k, v in loaded.items()}
        if row.transport == "mqtt" and row.serial is not None:
            options.setdefault("gateway_sn", str(row.serial))
            options.setdefault("product_key", str(row.product_key or ""))
        address_ = MeterAddress(int(row.id), str(row.protocol), str(row.address), options)
        result[int(row.id)] = CommandTarget(address_, row.bus_id, str(row.number), row.transport)
    return result


def highest_purchase(conn: Connection, meter_id: int) -> int | None:
    """The highest purchase count of this meter's pushes that are open or confirmed."""
    pushes = conn.execute(
        select(commands.c.params).where(
            commands.c.meter_id == meter_id,
            commands.c.kind == CommandKind.RECHARGE.value,
            commands.c.status.in_((*OPEN_STATUSES, CommandStatus.CONFIRMED.value)),
        )
    ).scalars()
    counts = [json.loads(text).get("purchase_count") for text in pushes]
    known = [int(count) for count in counts if count is not None]
    return max(known, default=None)


def highest_confirmed_purchase(conn: Connection, meter_id: int) -> int | None:
    """The highest purchase count confirmed on the meter's current device: pushes confirmed
    before its last replacement went to the device it replaced."""
    replaced = (
        select(func.max(meter_replacements.c.replaced_at))
        .where(meter_replacements.c.meter_id == meter_id)
        .scalar_subquery()
    )
    pushes = conn.execute(
        select(commands.c.params).where(
            commands.c.meter_id == meter_id,
            commands.c.kind == CommandKind.RECHARGE.value,
            commands.c.status == CommandStatus.CONFIRMED.value,
            or_(replaced.is_(None), commands.c.finished_at > replaced),
        )
    ).scalars()
    counts = [json.loads(text).get("purchase_count") for text in pushes]
    return max((int(count) for count in counts if count is not None), default=None)


def replaced_after(conn: Connection, meter_id: int, at: datetime) -> datetime | None:
    """When the meter's device was last replaced, if that was after ``at`` (a command sent
    before it went to the device that was taken away)."""
    replaced = conn.execute(
        select(func.max(meter_replacements.c.replaced_at)).where(
            meter_replacements.c.meter_id == meter_id
        )
    ).scalar_one_or_none()
    return replaced if replaced is not None and replaced > at else None


def highest_confirmed_take_back(conn: Connection, meter_id: int) -> int | None:
    """The highest take-back count confirmed on the meter's current device (as for purchases:
    take-backs confirmed before its last replacement were on the device it replaced)."""
    replaced = (
        select(func.max(meter_replacements.c.replaced_at))
        .where(meter_replacements.c.meter_id == meter_id)
        .scalar_subquery()
    )
    done = conn.execute(
        select(commands.c.params).where(
            commands.c.meter_id == meter_id,
            commands.c.kind == CommandKind.TAKE_BACK.value,
            commands.c.status == CommandStatus.CONFIRMED.value,
            or_(replaced.is_(None), commands.c.finished_at > replaced),
        )
    ).scalars()
    counts = [json.loads(text).get("take_back_count") for text in done]
    return max((int(count) for count in counts if count is not None), default=None)


def recharges_for_meter(conn: Connection, meter_id: int) -> list[Command]:
    rows = conn.execute(
        select(commands)
        .where(commands.c.meter_id == meter_id, commands.c.kind == CommandKind.RECHARGE.value)
        .order_by(commands.c.id)
    )
    return [command_from_row(row) for row in rows.mappings()]


def decimal_or_none(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))
