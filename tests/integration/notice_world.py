"""A property to send system notices in: one site, buildings A and B, tenants with one or two
rooms, a closed account; SMS and log channels, quiet hours 22:00–07:00 (Shanghai)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from builders import ACTOR, Org, make_meter, make_tariff
from sqlalchemy import select, update

from meterdesk.billing import accounts
from meterdesk.billing.tables import accounts as accounts_table
from meterdesk.db.database import Database
from meterdesk.notifications import configuration
from meterdesk.notifications.tables import notification_outbox
from meterdesk.sites import service as sites


@dataclass(frozen=True)
class World:
    org: int
    site: int
    building_a: int
    building_b: int
    floor_b1: int
    rooms: dict[str, int]
    customers: dict[str, int]  # zhang (B-101 and B-201), anna (B-102, English), wang,
    # chen (B-103, account closed)


def make_world(db: Database, name: str = "示例物业", *, log: bool = True) -> World:
    org = sites.create_organisation(db, name=name, timezone="Asia/Shanghai")
    site = sites.create_site(db, organisation_id=org, name="Park", timezone="Asia/Shanghai")
    building = {
        b: sites.create_building(db, organisation_id=org, site_id=site, name=b) for b in "AB"
    }
    floors = {
        f"{b}/{level}F": sites.create_floor(
            db, organisation_id=org, building_id=building[b], name=f"{level}F", level=level
        )
        for b, level in (("A", 1), ("B", 1), ("B", 2))
    }
    placed = {"A-101": "A/1F", "B-101": "B/1F", "B-102": "B/1F", "B-103": "B/1F", "B-201": "B/2F"}
    rooms = {
        room: sites.create_room(
            db, organisation_id=org, floor_id=floors[f], name=room, kind="apartment"
        )
        for room, f in placed.items()
    }
    people = {
        "zhang": ("张伟", "13900000001", "zh-CN"),
        "anna": ("Anna", "13900000002", "en"),
        "wang": ("王芳", "13900000003", "zh-CN"),
        "chen": ("陈静", "13900000004", "zh-CN"),
    }
    customers = {
        key: sites.create_customer(db, organisation_id=org, name=n, phone=phone, language=language)
        for key, (n, phone, language) in people.items()
    }
    holder = Org(org, site, rooms["A-101"], customers["wang"], name)
    tariff = make_tariff(db, holder)
    tenancy = (
        ("zhang", "B-101"),
        ("zhang", "B-201"),
        ("anna", "B-102"),
        ("wang", "A-101"),
        ("chen", "B-103"),
    )
    for who, room in tenancy:
        meter = make_meter(db, Org(org, site, rooms[room], customers[who], name), f"M-{room}")
        accounts.open_account(
            db,
            organisation_id=org,
            request=accounts.OpenAccount(
                number=room,
                customer_id=customers[who],
                room_id=rooms[room],
                meters=[accounts.MeterOpening(meter, tariff, Decimal("100"))],
            ),
            actor=ACTOR,
        )
    with db.transaction() as conn:
        # Chen moved out: a closed account (closing through the desk needs final readings and
        # a refund, which this world does not care about).
        conn.execute(
            update(accounts_table)
            .where(accounts_table.c.number == "B-103", accounts_table.c.organisation_id == org)
            .values(status="closed", closed_at=db.clock())
        )
    enable(db, org, "sms", "aliyun", access_key_id="id", sign_name="示例物业", templates={})
    if log:
        enable(db, org, "log", "log")
    configuration.set_quiet_hours(db, organisation_id=org, start="22:00", end="07:00", actor=ACTOR)
    return World(org, site, building["A"], building["B"], floors["B/1F"], rooms, customers)


def enable(db: Database, org: int, channel: str, provider: str, **config: Any) -> None:
    configuration.configure_channel(
        db,
        organisation_id=org,
        channel=channel,
        provider=provider,
        config=config,
        secret_refs={},
        events=None,
        actor=ACTOR,
    )


def notice_rows(db: Database, notice_id: int | None = None) -> list[dict[str, Any]]:
    table = notification_outbox
    query = select(table).where(table.c.event_kind == "system_notice").order_by(table.c.id)
    if notice_id is not None:
        query = query.where(table.c.event_key.startswith(f"notice:{notice_id}:"))
    with db.read() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]
