"""Build the sample property through the same use cases the CLI calls: organisation, site,
buildings, floors, rooms, customers, tariffs, meters and accounts with their opening readings
and initial credit. Nothing is written around the services."""

from __future__ import annotations

from dataclasses import dataclass, field

from meterdesk.billing.accounts import MeterOpening, OpenAccount, open_account
from meterdesk.billing.presets import PresetData, add_preset
from meterdesk.bootstrap import App
from meterdesk.demo import catalogue
from meterdesk.demo.plan import BUILDINGS, SITE, TIMEZONE, MeterPlan, TenantPlan, VacantPlan
from meterdesk.metering.service import MeterSpec, create_meter
from meterdesk.shared.time import zone
from meterdesk.sites import service as sites
from meterdesk.tariffs.service import create_tariff

ACTOR = "demo:setup"


@dataclass
class SampleProperty:
    organisation: str
    organisation_id: int
    site_id: int
    tenants: dict[str, TenantPlan]  # by account number
    vacancies: list[VacantPlan] = field(default_factory=list)
    account_ids: dict[str, int] = field(default_factory=dict)
    meter_ids: dict[str, int] = field(default_factory=dict)
    tariff_ids: dict[str, int] = field(default_factory=dict)
    room_ids: dict[str, int] = field(default_factory=dict)


def build_property(
    app: App,
    *,
    organisation: str,
    tenants: list[TenantPlan],
    vacancies: list[VacantPlan] | None = None,
) -> SampleProperty:
    db = app.db
    org = sites.create_organisation(db, name=organisation, timezone=TIMEZONE)
    site = sites.create_site(db, organisation_id=org, name=SITE, timezone=TIMEZONE)
    sample = SampleProperty(
        organisation, org, site, {t.account: t for t in tenants}, vacancies or []
    )
    effective_from = f"{db.clock().astimezone(zone(TIMEZONE)).year:04d}-01-01"
    for name, definition in catalogue.tariffs(effective_from).items():
        sample.tariff_ids[name] = create_tariff(
            db, organisation_id=org, name=name, definition=definition, actor=ACTOR
        )
    _rooms(app, sample)
    for tenant in tenants:
        _open(app, sample, tenant)
    for vacancy in sample.vacancies:
        _fit_out(app, sample, vacancy)
    return sample


def _rooms(app: App, sample: SampleProperty) -> None:
    db, org = app.db, sample.organisation_id
    floor_ids: dict[tuple[str, str], int] = {}
    for building in BUILDINGS:
        building_id = sites.create_building(
            db, organisation_id=org, site_id=sample.site_id, name=building.name
        )
        for floor, level in building.floors:
            floor_ids[(building.name, floor)] = sites.create_floor(
                db, organisation_id=org, building_id=building_id, name=floor, level=level
            )
    rooms: list[TenantPlan | VacantPlan] = [*sample.tenants.values(), *sample.vacancies]
    for room in rooms:
        sample.room_ids[room.room] = sites.create_room(
            db,
            organisation_id=org,
            floor_id=floor_ids[(room.building, room.floor)],
            name=room.room,
            kind=room.kind,
            area_m2=room.area_m2,
        )


def _open(app: App, sample: SampleProperty, tenant: TenantPlan) -> None:
    db, org = app.db, sample.organisation_id
    room_id = sample.room_ids[tenant.room]
    customer = sites.create_customer(
        db, organisation_id=org, name=tenant.customer, phone=tenant.phone
    )
    openings = []
    for meter in tenant.meters:
        meter_id = _install(app, sample, meter, room_id)
        openings.append(MeterOpening(meter_id, sample.tariff_ids[meter.tariff], meter.start_total))
    request = OpenAccount(
        number=tenant.account,
        customer_id=customer,
        meters=openings,
        room_id=room_id,
        overdraft_limit=tenant.overdraft,
        initial_credit=tenant.credit,
        payment_method="transfer" if tenant.credit >= 1000 else "cash",
        credit_unit=tenant.credit_unit,
    )
    opened = open_account(
        db, organisation_id=org, request=request, actor=ACTOR, ingestor=app.ingestor
    )
    sample.account_ids[tenant.account] = opened.account_id


def _install(app: App, sample: SampleProperty, meter: MeterPlan, room_id: int) -> int:
    spec = MeterSpec(
        number=meter.number,
        utility=meter.utility,
        kind=meter.kind,
        room_id=room_id,
        ct_ratio=meter.ct,
    )
    meter_id = create_meter(app.db, organisation_id=sample.organisation_id, spec=spec, actor=ACTOR)
    sample.meter_ids[meter.number] = meter_id
    return meter_id


def _fit_out(app: App, sample: SampleProperty, vacancy: VacantPlan) -> None:
    """An empty room with its meters; its coming tenant pre-entered when known (the opening
    reading is left empty: the meter's latest reading when the account is opened)."""
    for meter in vacancy.meters:
        _install(app, sample, meter, sample.room_ids[vacancy.room])
    if vacancy.preset is None:
        return
    account, customer, phone, credit = vacancy.preset
    data = PresetData(
        account_number=account,
        customer_name=customer,
        customer_phone=phone,
        site=SITE,
        building=vacancy.building,
        floor=vacancy.floor,
        room=vacancy.room,
        meter_numbers=[meter.number for meter in vacancy.meters],
        tariffs=[meter.tariff for meter in vacancy.meters],
        initial_credit=str(credit),
        payment_method="transfer",
    )
    add_preset(app.db, organisation_id=sample.organisation_id, data=data)
