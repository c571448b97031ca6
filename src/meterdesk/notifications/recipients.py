"""Who hears about an event, and the names its texts need: read in the caller's transaction.

Reads other areas' tables (organisations, sites, rooms, customers, accounts, meters) without
changing them: the names are snapshotted into the outbox row so a message says what was true
when the event happened, and the addresses — and the language the customer reads — are the
customer's at that moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from meterdesk.billing.tables import accounts, meter_assignments
from meterdesk.metering.tables import meters
from meterdesk.notifications import model
from meterdesk.notifications.configuration import ChannelSetting
from meterdesk.notifications.model import Audience, Channel, EventKind
from meterdesk.shared.errors import NotFoundError
from meterdesk.sites.tables import buildings, customers, floors, organisations, rooms, sites


@dataclass(frozen=True)
class Context:
    organisation: str
    timezone: str
    customer: Mapping[str, Any] | None
    params: dict[str, Any]


def operator_addresses(config: Mapping[str, Any]) -> list[str]:
    """Who hears operator events on a channel: its ``operator_addresses`` setting."""
    found = config.get("operator_addresses") or []
    return [str(address) for address in found if str(address).strip()]


def language_for(kind: EventKind, context: Context, requested: str | None) -> str:
    """The language of a message: the caller's when given; else, for an event the customer
    hears about, the customer's own language; else (operators, or no customer) the default.
    System channels (webhook, log) of a customer event get the customer's language too, so an
    integrator forwarding the text forwards what the tenant would have read."""
    if requested is not None:
        return model.language(requested)
    customer = context.customer
    if customer is not None and model.audience_of(kind) is Audience.CUSTOMER:
        return model.language(str(customer["language"]))
    return model.DEFAULT_LANGUAGE


def recipients(
    setting: ChannelSetting, kind: EventKind, context: Context
) -> list[tuple[str, int | None]]:
    """(address, customer id or None) pairs for one channel."""
    if setting.channel is Channel.WEBHOOK:
        url = str(setting.config.get("url") or "")
        return [(url, None)] if url else []
    if setting.channel is Channel.LOG:
        return [(str(setting.config.get("address", "stdout")), None)]
    if model.audience_of(kind) is Audience.OPERATORS:
        return [(address, None) for address in operator_addresses(setting.config)]
    customer = context.customer
    if customer is None:
        return []
    address = customer[model.ADDRESS_FIELD[setting.channel]]
    return [(str(address), int(customer["id"]))] if address not in (None, "") else []


def context(
    conn: Connection,
    organisation_id: int,
    account_id: int | None,
    customer_id: int | None,
    site_id: int | None,
) -> Context:
    org = conn.execute(
        select(organisations.c.name, organisations.c.timezone).where(
            organisations.c.id == organisation_id
        )
    ).one_or_none()
    if org is None:
        raise NotFoundError(f"organisation {organisation_id} not found")
    params: dict[str, Any] = {"organisation": org.name}
    timezone, room_id = str(org.timezone), None
    if account_id is not None:
        account = _account(conn, organisation_id, account_id)
        params["account"] = account.number
        customer_id = customer_id if customer_id is not None else int(account.customer_id)
        room_id = account.room_id
        params.update(_utility(conn, account_id))
    if room_id is not None:
        room_name, timezone = _room(conn, int(room_id))
        params["room"] = room_name
    if site_id is not None:
        timezone = _site_zone(conn, organisation_id, site_id)
    customer = None if customer_id is None else _customer(conn, organisation_id, customer_id)
    if customer is not None:
        params["customer"] = customer["name"]
    return Context(str(org.name), timezone, customer, params)


def _account(conn: Connection, organisation_id: int, account_id: int) -> Any:
    found = conn.execute(
        select(accounts.c.number, accounts.c.customer_id, accounts.c.room_id).where(
            accounts.c.id == account_id, accounts.c.organisation_id == organisation_id
        )
    ).one_or_none()
    if found is None:
        raise NotFoundError(f"account {account_id} not found")
    return found


def _customer(conn: Connection, organisation_id: int, customer_id: int) -> Mapping[str, Any]:
    found = (
        conn.execute(
            select(
                customers.c.id,
                customers.c.name,
                customers.c.phone,
                customers.c.email,
                customers.c.wechat_openid,
                customers.c.language,
            ).where(customers.c.id == customer_id, customers.c.organisation_id == organisation_id)
        )
        .mappings()
        .one_or_none()
    )
    if found is None:
        raise NotFoundError(f"customer {customer_id} not found")
    return dict(found)


def _room(conn: Connection, room_id: int) -> tuple[str, str]:
    found = conn.execute(
        select(rooms.c.name, sites.c.timezone)
        .join(floors, floors.c.id == rooms.c.floor_id)
        .join(buildings, buildings.c.id == floors.c.building_id)
        .join(sites, sites.c.id == buildings.c.site_id)
        .where(rooms.c.id == room_id)
    ).one()
    return str(found.name), str(found.timezone)


def _site_zone(conn: Connection, organisation_id: int, site_id: int) -> str:
    found = conn.execute(
        select(sites.c.timezone).where(
            sites.c.id == site_id, sites.c.organisation_id == organisation_id
        )
    ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"site {site_id} not found")
    return str(found)


def _utility(conn: Connection, account_id: int) -> dict[str, str]:
    """What the account pays for, so the text says 电费 or 水费 (水电费 when both)."""
    kinds = set(
        conn.execute(
            select(meters.c.utility)
            .join(meter_assignments, meter_assignments.c.meter_id == meters.c.id)
            .where(
                meter_assignments.c.account_id == account_id, meter_assignments.c.end_at.is_(None)
            )
            .distinct()
        ).scalars()
    )
    if not kinds:
        return {}
    return {"utility": kinds.pop() if len(kinds) == 1 else "mixed"}
