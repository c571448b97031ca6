"""``meterdesk org|site|building|floor|room|customer|meter`` — the places, people and meters."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import select

from meterdesk.cli.common import (
    ActorOption,
    JsonOption,
    OrgOption,
    app,
    emit,
    handled,
    organisation_id,
    who,
)
from meterdesk.metering import service as metering
from meterdesk.shared.contacts import optional_phone, sms_warning
from meterdesk.shared.errors import NotFoundError, ValidationError
from meterdesk.sites import service as sites
from meterdesk.sites.model import DEFAULT_LANGUAGE
from meterdesk.sites.tables import buildings, floors
from meterdesk.sites.tables import sites as sites_table

org_cli = typer.Typer(help="Organisations (property-management companies).", no_args_is_help=True)
site_cli = typer.Typer(help="Sites (projects / parks) with their time zone.", no_args_is_help=True)
building_cli = typer.Typer(help="Buildings of a site.", no_args_is_help=True)
floor_cli = typer.Typer(help="Floors of a building.", no_args_is_help=True)
room_cli = typer.Typer(
    help="Rooms: apartments, shops, offices, public areas.", no_args_is_help=True
)
customer_cli = typer.Typer(help="Customers (tenants).", no_args_is_help=True)
meter_cli = typer.Typer(help="Electricity and water meters.", no_args_is_help=True)


def room_id(org: int, path: str) -> int:
    parts = [p.strip() for p in path.split("/")]
    if len(parts) != 4 or not all(parts):
        raise ValidationError(f"room: give SITE/BUILDING/FLOOR/ROOM, got {path!r}")
    with app().db.read() as conn:
        return sites.find_room(conn, organisation_id=org, path=sites.RoomPath(*parts))


def site_id(org: int, name: str) -> int:
    with app().db.read() as conn:
        found = conn.execute(
            select(sites_table.c.id).where(
                sites_table.c.organisation_id == org, sites_table.c.name == name
            )
        ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"site {name!r} not found")
    return int(found)


def building_id(org: int, site: str, name: str) -> int:
    with app().db.read() as conn:
        found = conn.execute(
            select(buildings.c.id).where(
                buildings.c.organisation_id == org,
                buildings.c.site_id == site_id(org, site),
                buildings.c.name == name,
            )
        ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"building {site}/{name} not found")
    return int(found)


def floor_id(org: int, site: str, building: str, name: str) -> int:
    with app().db.read() as conn:
        found = conn.execute(
            select(floors.c.id).where(
                floors.c.building_id == building_id(org, site, building), floors.c.name == name
            )
        ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"floor {site}/{building}/{name} not found")
    return int(found)


@org_cli.command("create")
def org_create(
    name: str,
    timezone: Annotated[str, typer.Option(help="IANA zone")] = "Asia/Shanghai",
    as_json: JsonOption = False,
) -> None:
    """Create an organisation."""
    with handled():
        emit(
            {"id": sites.create_organisation(app().db, name=name, timezone=timezone), "name": name},
            as_json,
            lambda v: f"organisation {v['name']} created (id {v['id']})",
        )


@site_cli.command("create")
def site_create(
    name: str,
    org: OrgOption,
    timezone: Annotated[str, typer.Option(help="IANA zone")] = "Asia/Shanghai",
    as_json: JsonOption = False,
) -> None:
    """Create a site; its rooms use its time zone for time-of-use prices and billing months."""
    with handled():
        new = sites.create_site(
            app().db, organisation_id=organisation_id(org), name=name, timezone=timezone
        )
        emit(
            {"id": new, "name": name, "timezone": timezone},
            as_json,
            lambda v: f"site {v['name']} created (id {v['id']}, {v['timezone']})",
        )


@building_cli.command("create")
def building_create(
    name: str, org: OrgOption, site: Annotated[str, typer.Option()], as_json: JsonOption = False
) -> None:
    """Create a building in a site."""
    with handled():
        o = organisation_id(org)
        new = sites.create_building(
            app().db, organisation_id=o, site_id=site_id(o, site), name=name
        )
        emit(
            {"id": new, "name": name},
            as_json,
            lambda v: f"building {v['name']} created (id {v['id']})",
        )


@floor_cli.command("create")
def floor_create(
    name: str,
    org: OrgOption,
    site: Annotated[str, typer.Option()],
    building: Annotated[str, typer.Option()],
    level: Annotated[int, typer.Option()] = 1,
    as_json: JsonOption = False,
) -> None:
    """Create a floor in a building."""
    with handled():
        o = organisation_id(org)
        new = sites.create_floor(
            app().db,
            organisation_id=o,
            building_id=building_id(o, site, building),
            name=name,
            level=level,
        )
        emit(
            {"id": new, "name": name},
            as_json,
            lambda v: f"floor {v['name']} created (id {v['id']})",
        )


@room_cli.command("create")
def room_create(
    name: str,
    org: OrgOption,
    site: Annotated[str, typer.Option()],
    building: Annotated[str, typer.Option()],
    floor: Annotated[str, typer.Option()],
    kind: Annotated[str, typer.Option(help="apartment|shop|office|public|dormitory")] = "apartment",
    area: Annotated[str | None, typer.Option(help="area in m²")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a room on a floor."""
    with handled():
        o = organisation_id(org)
        new = sites.create_room(
            app().db,
            organisation_id=o,
            floor_id=floor_id(o, site, building, floor),
            name=name,
            kind=kind,
            area_m2=area,
        )
        emit(
            {"id": new, "path": f"{site}/{building}/{floor}/{name}"},
            as_json,
            lambda v: f"room {v['path']} created (id {v['id']})",
        )


PHONE_HELP = "mobile or landline, + and country code outside CN; stored as E.164"
OPENID_HELP = "openid for the WeChat official account (公众号)"
MINI_OPENID_HELP = "openid for the WeChat mini program (小程序), not the official account's"
LanguageOption = Annotated[
    str | None, typer.Option(help="language of the customer's messages: zh-CN or en")
]


def phone_warning(phone: str | None) -> str | None:
    """What to tell whoever typed ``phone`` (already accepted): a landline gets voice calls but
    no SMS, and the SMS channel will fail every message to it."""
    return sms_warning(optional_phone(phone))


def warn(warning: str | None) -> None:
    """A warning on stderr, after the result: ``--json`` output stays one document."""
    if warning:
        typer.echo(f"warning: {warning}", err=True)


@customer_cli.command("create")
def customer_create(
    name: str,
    org: OrgOption,
    phone: Annotated[str | None, typer.Option(help=PHONE_HELP)] = None,
    email: Annotated[str | None, typer.Option()] = None,
    wechat_openid: Annotated[str | None, typer.Option(help=OPENID_HELP)] = None,
    wechat_mini_openid: Annotated[str | None, typer.Option(help=MINI_OPENID_HELP)] = None,
    language: LanguageOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a customer (tenant); their messages are in zh-CN unless --language en."""
    with handled():
        new = sites.create_customer(
            app().db,
            organisation_id=organisation_id(org),
            name=name,
            phone=phone,
            email=email,
            wechat_openid=wechat_openid,
            wechat_mini_openid=wechat_mini_openid,
            language=language or DEFAULT_LANGUAGE,
        )
        warning = phone_warning(phone)
        emit(
            {
                "id": new,
                "name": name,
                "language": language or DEFAULT_LANGUAGE,
                "phone_warning": warning,
            },
            as_json,
            lambda v: f"customer {v['name']} created (id {v['id']}, messages in {v['language']})",
        )
        warn(warning)


@customer_cli.command("update")
def customer_update(
    customer_id: Annotated[int, typer.Argument(help="customer id")],
    org: OrgOption,
    name: Annotated[str | None, typer.Option()] = None,
    phone: Annotated[str | None, typer.Option(help=f'{PHONE_HELP}; "" clears it')] = None,
    email: Annotated[str | None, typer.Option(help='"" clears it')] = None,
    wechat_openid: Annotated[str | None, typer.Option(help=f'{OPENID_HELP}; "" clears it')] = None,
    wechat_mini_openid: Annotated[
        str | None, typer.Option(help=f'{MINI_OPENID_HELP}; "" clears it')
    ] = None,
    language: LanguageOption = None,
    summaries: Annotated[
        bool | None,
        typer.Option(
            "--summaries/--no-summaries",
            help="--no-summaries: the tenant asked for no deduction summaries (扣费通知)",
        ),
    ] = None,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Change a customer's name, phone, e-mail, WeChat openids, message language or whether
    they get deduction summaries (audited)."""
    with handled():
        change = sites.CustomerChange(
            name, phone, email, wechat_openid, language, wechat_mini_openid, summaries
        )
        sites.update_customer(
            app().db,
            organisation_id=organisation_id(org),
            customer_id=customer_id,
            change=change,
            actor=who(actor),
        )
        warning = phone_warning(phone)
        emit(
            {"id": customer_id, "changed": sorted(change.values()), "phone_warning": warning},
            as_json,
            lambda v: f"customer {v['id']} updated ({', '.join(v['changed'])})",
        )
        warn(warning)


@meter_cli.command("create")
def meter_create(
    number: str,
    org: OrgOption,
    utility: Annotated[str, typer.Option(help="electricity|water")] = "electricity",
    kind: Annotated[
        str, typer.Option(help="single_phase|three_phase|multi_user_circuit|water")
    ] = "single_phase",
    room: Annotated[str | None, typer.Option(help="SITE/BUILDING/FLOOR/ROOM")] = None,
    site: Annotated[str | None, typer.Option(help="site, for meters not in a room")] = None,
    protocol: Annotated[str, typer.Option()] = "manual",
    address: Annotated[str, typer.Option()] = "",
    ct: Annotated[str, typer.Option(help="CT ratio")] = "1",
    pt: Annotated[str, typer.Option(help="PT ratio")] = "1",
    modulus: Annotated[str, typer.Option(help="register rolls over at this value")] = "1000000",
    band_registers: Annotated[
        bool, typer.Option(help="the meter keeps its own TOU registers")
    ] = False,
    max_rate: Annotated[str | None, typer.Option(help="max plausible use per hour")] = None,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Register a meter in a room (or directly in a site)."""
    with handled():
        o = organisation_id(org)
        spec = metering.MeterSpec(
            number=number,
            utility=utility,
            kind=kind,
            protocol=protocol,
            address=address,
            room_id=room_id(o, room) if room else None,
            site_id=site_id(o, site) if site else None,
            ct_ratio=ct,
            pt_ratio=pt,
            register_modulus=modulus,
            has_band_registers=band_registers,
            max_rate_per_hour=max_rate,
        )
        new = metering.create_meter(app().db, organisation_id=o, spec=spec, actor=who(actor))
        emit(
            {"id": new, "number": number},
            as_json,
            lambda v: f"meter {v['number']} created (id {v['id']})",
        )
