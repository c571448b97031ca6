"""Places and customers as the CLI creates them (``meterdesk room create``, ``customer create``
call these services as they are), on SQLite and PostgreSQL: a value longer than its column is a
clear error, never a database error."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from builders import Org, make_org
from sqlalchemy import func, select

from meterdesk.db.database import Database
from meterdesk.shared.errors import ValidationError
from meterdesk.sites import service as sites
from meterdesk.sites.tables import customers, floors, rooms

pytestmark = pytest.mark.integration


def long_room(db: Database, org: Org) -> None:
    with db.read() as conn:
        floor = conn.execute(select(floors.c.id).where(floors.c.organisation_id == org.id))
        floor_id = int(floor.scalar_one())
    sites.create_room(db, organisation_id=org.id, floor_id=floor_id, name="R" * 150, kind="shop")


def long_phone(db: Database, org: Org) -> None:
    sites.create_customer(db, organisation_id=org.id, name="Wei", phone="1" * 41)


def long_openid(db: Database, org: Org) -> None:
    change = sites.CustomerChange(wechat_openid="o" * 101)
    sites.update_customer(
        db, organisation_id=org.id, customer_id=org.customer_id, change=change, actor="test"
    )


@pytest.mark.parametrize(
    ("make", "said"),
    [
        # String(100) and String(40) columns took 200 characters, any phone, any openid:
        # PostgreSQL's DataError (a CLI traceback), stored as it was on SQLite
        (long_room, "name: at most 100 characters"),
        (long_phone, r"phone: '1{41}' is not a phone number \(too long\)"),
        (long_openid, "wechat_openid: at most 100 characters"),
    ],
)
def test_a_value_longer_than_its_column_is_refused(
    db: Database, make: Callable[[Database, Org], None], said: str
) -> None:
    org = make_org(db)
    before = counts(db)

    with pytest.raises(ValidationError, match=said):
        make(db, org)

    assert counts(db) == before


def counts(db: Database) -> list[object]:
    with db.read() as conn:
        rows = [conn.execute(select(func.count()).select_from(t)).scalar_one() for t in (rooms,)]
        openids = conn.execute(select(func.count()).where(customers.c.wechat_openid.is_not(None)))
        return [*rows, conn.execute(select(func.count()).select_from(customers)).scalar_one(),
                openids.scalar_one()]  # fmt: skip
