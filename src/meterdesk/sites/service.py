"""Use cases for organisations, sites, buildings, floors, rooms and customers.

Every function takes the caller's ``organisation_id`` and refuses ids of another organisation as
"not found", so one property-management company never sees another's data.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from meterdesk.audit import service as audit
from meterdesk.db.database import Database
from meterdesk.shared.contacts import optional_email, optional_openid, optional_phone, same_phone
from meterdesk.shared.errors import ConflictError, NotFoundError, ValidationError
from meterdesk.shared.money import to_decimal
from meterdesk.shared.time import zone
from meterdesk.sites.model import DEFAULT_LANGUAGE, Language, RoomKind
from meterdesk.sites.tables import buildings, customers, floors, organisations, rooms, sites

OPENID_LENGTH = 100  # the columns' lengths (sites/tables.py); a phone is E.164, 16 at most
EMAIL_LENGTH = 200


def _name(value: str, field: str, limit: int = 200) -> str:
    """``limit``: the column's length (floors and rooms hold 100): a longer name from the CLI
    was a DataError traceback on PostgreSQL and stored as it was on SQLite."""
    cleaned = value.strip()
    if not cleaned:
        raise ValidationError(f"{field}: must not be empty")
    if len(cleaned) > limit:
        raise ValidationError(f"{field}: at most {limit} characters")
    return cleaned


def _optional(value: str | None, field: str, limit: int) -> str | None:
    if value and len(value) > limit:
        raise ValidationError(f"{field}: at most {limit} characters")
    return value or None


def _email(value: str | None) -> str | None:
    """The e-mail as stored (shared/contacts.py), within its column: email-validator allows 254
    characters, and the CLI has no schema to hold the limit."""
    return _optional(optional_email(value), "email", EMAIL_LENGTH)


def _insert(conn: Connection, statement: object, what: str) -> int:
    try:
        result = conn.execute(statement)  # type: ignore[call-overload]
    except IntegrityError:
        raise ConflictError(f"{what} already exists") from None
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def create_organisation(db: Database, *, name: str, timezone: str = "Asia/Shanghai") -> int:
    zone(timezone)
    with db.transaction() as conn:
        statement = insert(organisations).values(
            name=_name(name, "name"), timezone=timezone, created_at=db.clock()
        )
        return _insert(conn, statement, f"organisation {name!r}")


def organisation_by_name(db: Database, *, name: str) -> int:
    with db.read() as conn:
        found = conn.execute(
            select(organisations.c.id).where(organisations.c.name == name)
        ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"organisation {name!r} not found")
    return int(found)


def create_site(db: Database, *, organisation_id: int, name: str, timezone: str) -> int:
    zone(timezone)
    with db.transaction() as conn:
        _require(conn, organisations, organisation_id, None, "organisation")
        statement = insert(sites).values(
            organisation_id=organisation_id,
            name=_name(name, "name"),
            timezone=timezone,
            created_at=db.clock(),
        )
        return _insert(conn, statement, f"site {name!r}")


def create_building(db: Database, *, organisation_id: int, site_id: int, name: str) -> int:
    with db.transaction() as conn:
        _require(conn, sites, site_id, organisation_id, "site")
        statement = insert(buildings).values(
            organisation_id=organisation_id, site_id=site_id, name=_name(name, "name")
        )
        return _insert(conn, statement, f"building {name!r}")


def create_floor(
    db: Database, *, organisation_id: int, building_id: int, name: str, level: int
) -> int:
    with db.transaction() as conn:
        _require(conn, buildings, building_id, organisation_id, "building")
        statement = insert(floors).values(
            organisation_id=organisation_id,
            building_id=building_id,
            name=_name(name, "name", 100),
            level=level,
        )
        return _insert(conn, statement, f"floor {name!r}")


def create_room(
    db: Database,
    *,
    organisation_id: int,
    floor_id: int,
    name: str,
    kind: str,
    area_m2: object = None,
) -> int:
    try:
        room_kind = RoomKind(kind)
    except ValueError:
        raise ValidationError(
            f"kind: {kind!r} is not one of {', '.join(k.value for k in RoomKind)}"
        ) from None
    area: Decimal | None = None
    if area_m2 is not None and area_m2 != "":
        area = to_decimal(area_m2, field="area_m2")
        if area <= 0 or area != area.quantize(Decimal("0.01")):
            raise ValidationError("area_m2: a positive area with at most two decimal places")
    with db.transaction() as conn:
        _require(conn, floors, floor_id, organisation_id, "floor")
        statement = insert(rooms).values(
            organisation_id=organisation_id,
            floor_id=floor_id,
            name=_name(name, "name", 100),
            kind=room_kind.value,
            area_m2=area,
        )
        return _insert(conn, statement, f"room {name!r}")


def parse_language(value: str) -> Language:
    """A customer's message language, or a clear error naming the choices."""
    try:
        return Language(value)
    except ValueError:
        choices = ", ".join(choice.value for choice in Language)
        raise ValidationError(f"language: {value!r} is not one of {choices}") from None


def create_customer(
    db: Database,
    *,
    organisation_id: int,
    name: str,
    phone: str | None = None,
    email: str | None = None,
    wechat_openid: str | None = None,
    language: str = DEFAULT_LANGUAGE,
    wechat_mini_openid: str | None = None,
) -> int:
    """A customer (tenant); ``language`` is what their messages are written in."""
    chosen = parse_language(language)
    with db.transaction() as conn:
        _require(conn, organisations, organisation_id, None, "organisation")
        statement = insert(customers).values(
            organisation_id=organisation_id,
            name=_name(name, "name"),
            phone=optional_phone(phone),
            email=_email(email),
            wechat_openid=_optional(wechat_openid, "wechat_openid", OPENID_LENGTH),
            wechat_mini_openid=optional_openid(wechat_mini_openid, field="wechat_mini_openid"),
            language=chosen.value,
            created_at=db.clock(),
        )
        return _insert(conn, statement, f"customer {name!r}")


def same_customer_in(
    conn: Connection, organisation_id: int, name: str, phone: str | None
) -> int | None:
    """The customer with this name and phone (E.164, or None: none on record either), or None.
    The phone is compared as a number, not as text: a customer stored before phones were
    normalised (``13800138000``, ``138-0013-8000``) is the same tenant as ``+8613800138000``.
    Where several match (a second one created before), the first stored is taken."""
    candidates = conn.execute(
        select(customers.c.id, customers.c.phone)
        .where(customers.c.organisation_id == organisation_id, customers.c.name == name)
        .order_by(customers.c.id)
    ).all()
    return next((int(row.id) for row in candidates if same_phone(row.phone, phone)), None)


def same_customer(
    db: Database, *, organisation_id: int, name: str, phone: str | None
) -> int | None:
    """:func:`same_customer_in` for a name and phone as typed (checked and normalised as
    :func:`create_customer` would store them)."""
    wanted = _name(name, "name")
    with db.read() as conn:
        return same_customer_in(conn, organisation_id, wanted, optional_phone(phone))


@dataclass(frozen=True)
class CustomerChange:
    """What to change on a customer: ``None`` keeps a field, ``""`` clears an optional one."""

    name: str | None = None
    phone: str | None = None
    email: str | None = None
    wechat_openid: str | None = None
    language: str | None = None
    wechat_mini_openid: str | None = None  # after these: the CLI passes the others by position
    summaries: bool | None = None  # False: the tenant asked for no deduction summaries

    def values(self) -> dict[str, Any]:
        """The columns to write (``summaries`` is stored the other way round, as the opt-out)."""
        given = {f.name: getattr(self, f.name) for f in fields(self)}
        changed = {key: value for key, value in given.items() if value is not None}
        if not changed:
            raise ValidationError("give at least one field to change")
        if "summaries" in changed:
            if not isinstance(changed["summaries"], bool):  # a form or script passing "no"
                raise ValidationError("summaries: must be true or false")
            changed["summaries_opt_out"] = not changed.pop("summaries")
        if "name" in changed:
            changed["name"] = _name(changed["name"], "name")
        if "phone" in changed:
            changed["phone"] = optional_phone(changed["phone"])
        if "email" in changed:
            changed["email"] = _email(changed["email"])
        if "language" in changed:
            changed["language"] = parse_language(changed["language"]).value
        if "wechat_openid" in changed:
            changed["wechat_openid"] = _optional(
                changed["wechat_openid"], "wechat_openid", OPENID_LENGTH
            )
        if "wechat_mini_openid" in changed:
            changed["wechat_mini_openid"] = optional_openid(
                changed["wechat_mini_openid"], field="wechat_mini_openid"
            )
        return changed


def update_customer(
    db: Database,
    *,
    organisation_id: int,
    customer_id: int,
    change: CustomerChange,
    actor: str,
    source: str | None = None,
) -> None:
    """Change a customer's name, addresses, message language or whether they get deduction
    summaries (audited: who, what, from which address)."""
    values = change.values()
    with db.transaction() as conn:
        _require(conn, customers, customer_id, organisation_id, "customer")
        conn.execute(update(customers).where(customers.c.id == customer_id).values(**values))
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="customer.update",
            subject=f"customer:{customer_id}",
            at=db.clock(),
            detail={"changed": sorted(values)},
            source=source,
        )


def _require(
    conn: Connection, table: object, row_id: int, organisation_id: int | None, what: str
) -> None:
    columns = table.c  # type: ignore[attr-defined]
    query = select(columns.id).where(columns.id == row_id)
    if organisation_id is not None:
        query = query.where(columns.organisation_id == organisation_id)
    if conn.execute(query).scalar_one_or_none() is None:
        raise NotFoundError(f"{what} {row_id} not found")


@dataclass(frozen=True)
class RoomPath:
    site: str
    building: str
    floor: str
    room: str


def find_room(conn: Connection, *, organisation_id: int, path: RoomPath) -> int:
    """A room by its human path (site / building / floor / room), as operators name it."""
    query = (
        select(rooms.c.id)
        .select_from(rooms.join(floors).join(buildings).join(sites))
        .where(
            rooms.c.organisation_id == organisation_id,
            sites.c.name == path.site,
            buildings.c.name == path.building,
            floors.c.name == path.floor,
            rooms.c.name == path.room,
        )
    )
    found = conn.execute(query).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"room {path.site}/{path.building}/{path.floor}/{path.room} not found")
    return int(found)


def site_timezone(conn: Connection, *, site_id: int) -> str:
    return str(conn.execute(select(sites.c.timezone).where(sites.c.id == site_id)).scalar_one())
