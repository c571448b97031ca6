"""What the "change tariff" dialog (改电价) offers for a room: each meter of the room's open
account with its tariff now, from when a change would apply, and the organisation's tariffs for
the meter's utility. Read-only; scoped to the caller's organisation."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, select

from meterdesk.billing.tariff_change import SwitchPoint, switch_point
from meterdesk.shared.errors import NotFoundError
from meterdesk.tariffs.tables import tariffs


@dataclass(frozen=True)
class TariffChoice:
    point: SwitchPoint
    tariffs: list[tuple[int, str]]  # (id, name) of the tariffs for the meter's utility


def tariff_choices(
    conn: Connection, *, organisation_id: int, account_id: int, meter_ids: Iterable[int]
) -> list[TariffChoice]:
    by_utility: dict[str, list[tuple[int, str]]] = {}
    found = []
    for meter_id in meter_ids:
        try:
            point = switch_point(
                conn, organisation_id=organisation_id, account_id=account_id, meter_id=meter_id
            )
        except NotFoundError:
            continue  # a meter of the room that this account does not hold
        if point.utility not in by_utility:
            by_utility[point.utility] = [
                (int(row.id), str(row.name))
                for row in conn.execute(
                    select(tariffs.c.id, tariffs.c.name)
                    .where(
                        tariffs.c.organisation_id == organisation_id,
                        tariffs.c.utility == point.utility,
                    )
                    .order_by(tariffs.c.name)
                )
            ]
        found.append(TariffChoice(point, by_utility[point.utility]))
    return found
