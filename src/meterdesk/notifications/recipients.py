"""Who hears about an event, and the names its texts need: read in the caller's transaction,
for a whole batch of messages at once (:class:`Contexts`).

Reads other areas' tables (organisations, sites, rooms, customers, accounts, meters) without
changing them: the names are snapshotted into the outbox row so a message says what was true
when the event happened, and the addresses — and the language the customer reads — are the
customer's at that moment.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
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
    address = customer_address(setting.channel, customer)
    return [(address, int(customer["id"]))] if address is not None else []


def customer_address(channel: Channel, customer: Mapping[str, Any]) -> str | None:
    """The customer's address on a person channel (phone, e-mail, openid, id), or None."""
    address = customer[model.ADDRESS_FIELD[channel]]
    return None if address in (None, "") else str(address)


def no_address(channel: Channel, customer: Mapping[str, Any]) -> str:
    """The reason a person channel cannot reach the customer, as a failed row states it."""
    return f"customer {customer['id']} has no {model.ADDRESS_FIELD[channel]} for {channel.value}"


def missing_address(setting: ChannelSetting, kind: EventKind, context: Context) -> str | None:
    """Why a customer event reaches its customer on no address of this person channel, or None
    (a system channel, an operator event, no customer, or the address is there)."""
    customer = context.customer
    if (
        customer is None
        or setting.channel not in model.PERSON_CHANNELS
        or model.audience_of(kind) is not Audience.CUSTOMER
        or customer_address(setting.channel, customer) is not None
    ):
        return None
    return no_address(setting.channel, customer)


ContextKey = tuple[int, int | None, int | None, int | None]
"""Whose context: (organisation, account, customer, site), as :func:`context` takes them."""


def context(
    conn: Connection,
    organisation_id: int,
    account_id: int | None,
    customer_id: int | None,
    site_id: int | None,
) -> Context:
    key = (organisation_id, account_id, customer_id, site_id)
    return Contexts.read(conn, [key]).of(key)


@dataclass(frozen=True)
class Contexts:
    """The rows the contexts of a batch of messages are made of, read with one query per kind of
    row (organisations, accounts, utilities, rooms, sites, customers) instead of several queries
    per message. :meth:`of` answers — and fails — as reading one context on its own would."""

    organisations: Mapping[int, Any]  # id -> (name, timezone)
    accounts: Mapping[int, Any]  # id -> (organisation_id, number, customer_id, room_id)
    utilities: Mapping[int, dict[str, str]]  # account id -> {"utility": ...} or {}
    rooms: Mapping[int, tuple[str, str]]  # id -> (name, the timezone of its site)
    sites: Mapping[int, Any]  # id -> (organisation_id, timezone)
    customers: Mapping[int, tuple[int, Mapping[str, Any]]]  # id -> (organisation_id, customer)

    @classmethod
    def read(cls, conn: Connection, keys: Iterable[ContextKey]) -> Contexts:
        wanted = set(keys)
        found_accounts = _accounts(conn, {key[1] for key in wanted if key[1] is not None})
        # A message's own customer, else its account's (whatever the account's organisation:
        # of() refuses a foreign account before it looks at the customer).
        customer_ids = set()
        for _, account_id, customer_id, _ in wanted:
            if customer_id is None and account_id in found_accounts:
                customer_id = int(found_accounts[account_id].customer_id)
            if customer_id is not None:
                customer_ids.add(customer_id)
        room_ids = {row.room_id for row in found_accounts.values() if row.room_id is not None}
        return cls(
            organisations=_organisations(conn, {key[0] for key in wanted}),
            accounts=found_accounts,
            utilities=_utilities(conn, set(found_accounts)),
            rooms=_rooms(conn, room_ids),
            sites=_sites(conn, {key[3] for key in wanted if key[3] is not None}),
            customers=_customers(conn, customer_ids),
        )

    def of(self, key: ContextKey) -> Context:
        organisation_id, account_id, customer_id, site_id = key
        org = self.organisations.get(organisation_id)
        if org is None:
            raise NotFoundError(f"organisation {organisation_id} not found")
        params: dict[str, Any] = {"organisation": org.name}
        timezone, room_id = str(org.timezone), None
        if account_id is not None:
            account = self.accounts.get(account_id)
            if account is None or account.organisation_id != organisation_id:
                raise NotFoundError(f"account {account_id} not found")
            params["account"] = account.number
            customer_id = customer_id if customer_id is not None else int(account.customer_id)
            room_id = account.room_id
            params.update(self.utilities.get(account_id, {}))
        if room_id is not None:
            room_name, timezone = self.rooms[int(room_id)]  # rooms.id is the account's foreign key
            params["room"] = room_name
        if site_id is not None:
            site = self.sites.get(site_id)
            if site is None or site.organisation_id != organisation_id:
                raise NotFoundError(f"site {site_id} not found")
            timezone = str(site.timezone)
        customer = None if customer_id is None else self._customer(organisation_id, customer_id)
        if customer is not None:
            params["customer"] = customer["name"]
        return Context(str(org.name), timezone, customer, params)

    def _customer(self, organisation_id: int, customer_id: int) -> Mapping[str, Any]:
        owner, customer = self.customers.get(customer_id, (None, {}))
        if owner != organisation_id:
            raise NotFoundError(f"customer {customer_id} not found")
        return dict(customer)  # a copy per message, as a read of its own gave


def _organisations(conn: Connection, ids: set[int]) -> dict[int, Any]:
    if not ids:
        return {}
    table = organisations
    rows = conn.execute(
        select(table.c.id, table.c.name, table.c.timezone).where(table.c.id.in_(sorted(ids)))
    ).all()
    return {int(row.id): row for row in rows}


def _accounts(conn: Connection, ids: set[int]) -> dict[int, Any]:
    if not ids:
        return {}
    table = accounts
    rows = conn.execute(
        select(
            table.c.id,
            table.c.organisation_id,
            table.c.number,
            table.c.customer_id,
            table.c.room_id,
        ).where(table.c.id.in_(sorted(ids)))
    ).all()
    return {int(row.id): row for row in rows}


def _customers(conn: Connection, ids: set[int]) -> dict[int, tuple[int, Mapping[str, Any]]]:
    if not ids:
        return {}
    table = customers
    rows = conn.execute(
        select(
            table.c.organisation_id,
            table.c.id,
            table.c.name,
            table.c.phone,
            table.c.email,
            table.c.wechat_openid,
            table.c.wechat_mini_openid,
            table.c.language,
        ).where(table.c.id.in_(sorted(ids)))
    ).mappings()
    found: dict[int, tuple[int, Mapping[str, Any]]] = {}
    for row in rows:
        customer = dict(row)
        found[int(customer["id"])] = (int(customer.pop("organisation_id")), customer)
    return found


def _rooms(conn: Connection, ids: set[int]) -> dict[int, tuple[str, str]]:
    if not ids:
        return {}
    rows = conn.execute(
        select(rooms.c.id, rooms.c.name, sites.c.timezone)
        .join(floors, floors.c.id == rooms.c.floor_id)
        .join(buildings, buildings.c.id == floors.c.building_id)
        .join(sites, sites.c.id == buildings.c.site_id)
        .where(rooms.c.id.in_(sorted(ids)))
    ).all()
    return {int(row.id): (str(row.name), str(row.timezone)) for row in rows}


def _sites(conn: Connection, ids: set[int]) -> dict[int, Any]:
    if not ids:
        return {}
    rows = conn.execute(
        select(sites.c.id, sites.c.organisation_id, sites.c.timezone).where(
            sites.c.id.in_(sorted(ids))
        )
    ).all()
    return {int(row.id): row for row in rows}


def _utilities(conn: Connection, account_ids: set[int]) -> dict[int, dict[str, str]]:
    """What each account pays for, so the text says 电费 or 水费 (水电费 when both)."""
    if not account_ids:
        return {}
    rows = conn.execute(
        select(meter_assignments.c.account_id, meters.c.utility)
        .join(meter_assignments, meter_assignments.c.meter_id == meters.c.id)
        .where(
            meter_assignments.c.account_id.in_(sorted(account_ids)),
            meter_assignments.c.end_at.is_(None),
        )
        .distinct()
    ).all()
    kinds: dict[int, set[str]] = defaultdict(set)
    for account_id, utility in rows:
        kinds[int(account_id)].add(str(utility))
    return {
        account_id: {"utility": found.pop() if len(found) == 1 else "mixed"}
        for account_id, found in kinds.items()
    }
