"""Builders and fixtures for the API tests (``conftest.py`` re-exports the fixtures): two fully
stocked organisations, Alpha and Bravo, each with one user and one API token per role, and a
TestClient over the app.

Alpha is "us"; Bravo is "another organisation" whose ids and names must never come back to an
Alpha caller. Every Bravo name contains ``Bravo`` so a leak is easy to spot in any answer.
Passwords use a cheap argon2id (the production parameters take ~50 ms a hash).
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from meterdesk.access import credentials, service
from meterdesk.api.app import create_app
from meterdesk.api.context import ApiConfig
from meterdesk.billing import accounts, control_admin, presets
from meterdesk.billing.ingest import IncomingReading, Ingestor
from meterdesk.bootstrap import App
from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.db.metadata import load_all_tables
from meterdesk.devices import service as devices
from meterdesk.devices.commands import service as commands
from meterdesk.metering import service as metering
from meterdesk.notifications import configuration, notice_model, notices
from meterdesk.notifications import queueing as notifications
from meterdesk.settings import Settings
from meterdesk.shared.time import FakeClock
from meterdesk.sites import service as sites
from meterdesk.tariffs import service as tariffs

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
ROLES = ("admin", "operator", "cashier", "readonly")
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
API_CONFIG = ApiConfig(hasher=FAST_HASHER)


def password_of(username: str) -> str:
    return f"pw-{username}-long-enough"


def flat_tariff(price: str = "0.6537", utility: str = "electricity") -> dict[str, Any]:
    return {
        "utility": utility,
        "versions": [{"effective_from": "2026-01-01", "prices": {"flat": price}}],
    }


@dataclass
class Org:
    """One organisation's ids, names and credentials."""

    label: str  # "Alpha" | "Bravo"
    id: int = 0
    site_id: int = 0
    building_id: int = 0
    floor_id: int = 0
    room_id: int = 0
    spare_room_id: int = 0
    customer_id: int = 0
    tariff_id: int = 0
    meter_id: int = 0
    preset_meter_id: int = 0
    spare_meter_id: int = 0
    account_id: int = 0
    account_number: str = ""
    transfer_id: int = 0
    preset_id: int = 0
    quarantine_id: int = 0
    gateway_id: int = 0
    bus_id: int = 0
    command_id: int = 0
    alarm_plan_id: int = 0
    friendly_profile_id: int = 0
    notification_id: int = 0
    notice_id: int = 0
    user_ids: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    token_ids: dict[str, int] = field(default_factory=dict)

    def name(self, what: str) -> str:
        return f"{self.label} {what}"

    def username(self, role: str) -> str:
        return f"{self.label.lower()}-{role}"

    def auth(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def ids(self) -> dict[str, Any]:
        """Ids (and the other path parameters) by the names the API uses."""
        return {
            "organisation_id": self.id,
            "site_id": self.site_id,
            "building_id": self.building_id,
            "floor_id": self.floor_id,
            "room_id": self.room_id,
            "customer_id": self.customer_id,
            "tariff_id": self.tariff_id,
            "meter_id": self.meter_id,
            "account_id": self.account_id,
            "transfer_id": self.transfer_id,
            "preset_id": self.preset_id,
            "quarantine_id": self.quarantine_id,
            "user_id": self.user_ids["readonly"],
            "token_id": self.token_ids["readonly"],
            "gateway_id": self.gateway_id,
            "bus_id": self.bus_id,
            "command_id": self.command_id,
            "alarm_plan_id": self.alarm_plan_id,
            "friendly_profile_id": self.friendly_profile_id,
            "notification_id": self.notification_id,
            "notice_id": self.notice_id,
            # Not ids: the same name in every organisation, scoped by the caller's.
            "channel": "log",
            "day": "2026-10-01",
        }


def _places(db: Database, org: Org) -> None:
    org.id = sites.create_organisation(db, name=org.name("Property"), timezone="Asia/Shanghai")
    org.site_id = sites.create_site(
        db, organisation_id=org.id, name=org.name("Park"), timezone="Asia/Shanghai"
    )
    org.building_id = sites.create_building(
        db, organisation_id=org.id, site_id=org.site_id, name=org.name("B1")
    )
    org.floor_id = sites.create_floor(
        db, organisation_id=org.id, building_id=org.building_id, name=org.name("F1"), level=1
    )
    org.room_id, org.spare_room_id = (
        sites.create_room(
            db, organisation_id=org.id, floor_id=org.floor_id, name=org.name(n), kind="shop"
        )
        for n in ("101", "102")
    )
    org.customer_id = sites.create_customer(
        db, organisation_id=org.id, name=org.name("Customer"), phone="13900000000"
    )


def _meter(db: Database, org: Org, number: str, room_id: int) -> int:
    spec = metering.MeterSpec(
        number=number, utility="electricity", kind="single_phase", room_id=room_id
    )
    return metering.create_meter(db, organisation_id=org.id, spec=spec, actor="setup")


def _money(db: Database, org: Org) -> None:
    org.tariff_id = tariffs.create_tariff(
        db, organisation_id=org.id, name=org.name("Flat"), definition=flat_tariff(), actor="setup"
    )
    org.meter_id = _meter(db, org, f"{org.label}-M1", org.room_id)
    org.preset_meter_id = _meter(db, org, f"{org.label}-M2", org.spare_room_id)
    org.spare_meter_id = _meter(db, org, f"{org.label}-M3", org.spare_room_id)
    org.account_number = f"{org.label}-ACC-1"
    opened = accounts.open_account(
        db,
        organisation_id=org.id,
        request=accounts.OpenAccount(
            number=org.account_number,
            customer_id=org.customer_id,
            room_id=org.room_id,
            meters=[accounts.MeterOpening(org.meter_id, org.tariff_id, Decimal("1000"))],
            initial_credit="100",
        ),
        actor="setup",
    )
    org.account_id = opened.account_id
    assert opened.initial_transfer_id is not None
    org.transfer_id = opened.initial_transfer_id


def _preset_and_quarantine(db: Database, org: Org) -> None:
    data = presets.PresetData(
        account_number=f"{org.label}-ACC-2",
        customer_name=org.name("Tenant"),
        site=org.name("Park"),
        building=org.name("B1"),
        floor=org.name("F1"),
        room=org.name("102"),
        meter_numbers=[f"{org.label}-M2"],
        tariffs=[org.name("Flat")],
        opening_readings=["0"],
    )
    org.preset_id = presets.add_preset(db, organisation_id=org.id, data=data)
    # A jump far beyond what the meter can measure in 15 minutes: quarantined.
    report = Ingestor(db).ingest(
        [IncomingReading(org.meter_id, T0 + timedelta(minutes=15), Decimal("900000"))]
    )
    assert report.quarantined == 1
    org.quarantine_id = int(metering.list_quarantine(db, organisation_id=org.id)[0]["id"])


def _devices_and_control(db: Database, org: Org) -> None:
    """A gateway with a bus, a cancelled command, an alarm plan, a friendly-hours profile, a site holiday
    and one notification (the log channel hears a recharge)."""
    org.gateway_id = devices.create_gateway(
        db,
        organisation_id=org.id,
        site_id=org.site_id,
        serial=f"{org.label}-GW1",
        name=org.name("Gateway"),
        uplink="transparent_tcp",
        actor="setup",
    )
    spec = devices.BusSpec(org.name("Bus"), "dlt645", "tcp", "127.0.0.1:4001", org.gateway_id)
    org.bus_id = devices.create_bus(db, organisation_id=org.id, spec=spec, actor="setup")
    org.command_id = commands.send_command(
        db,
        organisation_id=org.id,
        meter_id=org.meter_id,
        kind="relay_trip",
        params=None,
        actor="setup",
        idempotency_key="setup-trip",
    ).command.id
    # Finished, so no test finds an open command it did not make (the browser tests confirm
    # every open one).
    commands.cancel(db, organisation_id=org.id, command_id=org.command_id, actor="setup")
    levels = [{"level": 1, "amount": "20.00", "channels": ["sms"]}]
    org.alarm_plan_id = control_admin.create_alarm_plan(
        db, organisation_id=org.id, name=org.name("Plan"), levels=levels, actor="setup"
    )
    org.friendly_profile_id = control_admin.create_friendly_profile(
        db,
        organisation_id=org.id,
        name=org.name("Nights"),
        windows=[{"start": "20:00", "end": "08:00"}],
        weekends=True,
        holidays=True,
        actor="setup",
    )
    control_admin.set_site_holiday(
        db,
        organisation_id=org.id,
        site_id=org.site_id,
        day=date(2026, 10, 1),
        name=org.name("National Day"),
        actor="setup",
    )
    # Sent before any channel exists: the notice is there, its messages are not (the message
    # log tests count the one recharge message below).
    request = notice_model.notice_request(
        scope_kind="site", scope_ids=[org.site_id], subject_text="停水通知", body="明天停水。"
    )
    sent, _ = notices.send_notice(
        db, organisation_id=org.id, request=request, key="setup-notice", actor="setup"
    )
    org.notice_id = int(sent["id"])
    configuration.configure_channel(
        db, organisation_id=org.id, channel="log", provider="log", actor="setup"
    )
    (org.notification_id,) = notifications.enqueue(
        db,
        organisation_id=org.id,
        event="recharge_credited",
        key=f"transfer:{org.transfer_id}",
        params={"amount": "100.00", "balance": "100.00"},
        account_id=org.account_id,
    )


def _people(db: Database, org: Org) -> None:
    for role in ROLES:
        username = org.username(role)
        org.user_ids[role] = service.create_member(
            db,
            organisation_id=org.id,
            user=service.NewUser(username=username, password=password_of(username), locale="en"),
            role=role,
            actor="setup",
            hasher=FAST_HASHER,
        )
        made = credentials.create_token(
            db,
            organisation_id=org.id,
            user_id=org.user_ids[role],
            name=f"{role} token",
            actor="setup",
        )
        org.tokens[role], org.token_ids[role] = made.token, made.token_id


def build_org(db: Database, label: str) -> Org:
    org = Org(label)
    _places(db, org)
    _money(db, org)
    _preset_and_quarantine(db, org)
    _devices_and_control(db, org)
    _people(db, org)
    return org


@dataclass
class World:
    db: Database
    clock: FakeClock
    api: FastAPI
    client: TestClient
    alpha: Org
    bravo: Org


def make_world(
    engine: Engine, data_dir: Path, orgs: tuple[Org, Org] | None = None
) -> Iterator[World]:
    """A world on ``engine``: built there, or (``orgs`` given) already in its database."""
    clock = FakeClock(T0)
    db = Database(engine=engine, clock=clock)
    alpha, bravo = orgs or (build_org(db, "Alpha"), build_org(db, "Bravo"))
    clock.advance(timedelta(hours=1))
    app = App(settings=Settings(data_dir=data_dir), db=db, ingestor=Ingestor(db))
    api = create_app(app, config=API_CONFIG)
    with TestClient(api) as client:
        yield World(db, clock, api, client, alpha, bravo)


def unreachable(world: World) -> tuple[int, int]:
    """An SMS alarm for a new customer of Alpha without a phone: (the customer, the failed row
    that says so, with an empty address)."""
    db, org = world.db, world.alpha
    bare = sites.create_customer(db, organisation_id=org.id, name="Alpha No Phone")
    config = {"access_key_id": "id", "sign_name": "s", "templates": {}}
    configuration.configure_channel(
        db, organisation_id=org.id, channel="sms", provider="aliyun", config=config, actor="t"
    )
    notifications.enqueue(
        db,
        organisation_id=org.id,
        event="alarm_level_1",
        key="control:bare:1:alarm:1:0",
        params={"balance": "12.30", "threshold": "20.00", "level": 1},
        customer_id=bare,
    )
    answer = world.client.get("/api/v1/notifications?channel=sms", headers=org.auth("readonly"))
    (failed,) = answer.json()["items"]
    assert (failed["status"], failed["address"]) == ("failed", "")
    return bare, int(failed["id"])


DATABASE_FILE = "api.sqlite3"


def sqlite_engine(directory: Path) -> Engine:
    engine = build_engine(f"sqlite:///{directory / DATABASE_FILE}")
    load_all_tables().create_all(engine)
    return engine


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Org, Org]:
    """The two organisations built once in a SQLite file that each test copies."""
    directory = tmp_path_factory.mktemp("template")
    engine = sqlite_engine(directory)
    db = Database(engine=engine, clock=FakeClock(T0))
    alpha, bravo = build_org(db, "Alpha"), build_org(db, "Bravo")
    engine.dispose()  # the last connection closing checkpoints the WAL into the file
    return directory / DATABASE_FILE, alpha, bravo


@pytest.fixture
def world(template: tuple[Path, Org, Org], tmp_path: Path) -> Iterator[World]:
    """Two organisations on SQLite (the common case; see test_postgres.py for PostgreSQL)."""
    source, alpha, bravo = template
    for suffix in ("", "-wal"):
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", tmp_path / f"{DATABASE_FILE}{suffix}")
    engine = build_engine(f"sqlite:///{tmp_path / DATABASE_FILE}")
    yield from make_world(engine, tmp_path, (copy.deepcopy(alpha), copy.deepcopy(bravo)))
    engine.dispose()


@pytest.fixture
def any_world(engine: Engine, tmp_path: Path) -> Iterator[World]:
    """Two organisations on SQLite and on PostgreSQL (the root conftest's ``engine``)."""
    yield from make_world(engine, tmp_path)


@pytest.fixture
def client(world: World) -> TestClient:
    return world.client


@pytest.fixture
def alpha(world: World) -> Org:
    return world.alpha


@pytest.fixture
def bravo(world: World) -> Org:
    return world.bravo


def key(name: str) -> dict[str, str]:
    return {"Idempotency-Key": name}


def error_code(response: Any) -> str:
    return str(response.json()["error"]["code"])
