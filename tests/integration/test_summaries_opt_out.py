"""A tenant who asked for no deduction summaries (扣费通知) gets none, while another tenant of the
same organisation still gets theirs; asking for them again brings them back. SQLite and
PostgreSQL (the ``db`` fixture)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from builders import ACTOR, make_meter, open_account
from test_deduction_summaries import Park, a_day_of_use

from meterdesk.billing import summaries
from meterdesk.db.database import Database
from meterdesk.shared.time import FakeClock
from meterdesk.sites import service as sites

pytestmark = pytest.mark.integration


def choose(park: Park, customer_id: int, *, summaries_wanted: bool) -> None:
    sites.update_customer(
        park.db,
        organisation_id=park.org.id,
        customer_id=customer_id,
        change=sites.CustomerChange(summaries=summaries_wanted),
        actor=ACTOR,
    )


def test_an_opted_out_tenant_gets_no_summary_while_another_does(
    db: Database, clock: FakeClock
) -> None:
    park = Park(db, clock)  # Li Lei
    other = sites.create_customer(db, organisation_id=park.org.id, name="Han Meimei")
    meter = make_meter(db, park.org, "W2", utility="water")
    second = open_account(
        db, replace(park.org, customer_id=other), "A-2", [(meter, park.water_tariff, "50")]
    )
    a_day_of_use(park)
    park.read(meter, "2026-11-02 21:00", "52")  # Han Meimei used 2 m³
    choose(park, park.org.customer_id, summaries_wanted=False)  # Li Lei: "stop the texts"
    park.summaries_on()

    report = park.send_at("2026-11-03 01:00")

    assert (report.queued, report.skipped) == (1, 0)
    assert [m["account_id"] for m in park.queued()] == [second.account_id]

    choose(park, park.org.customer_id, summaries_wanted=True)  # changed their mind
    again = summaries.send(db, organisation_id=park.org.id, period="2026-11-02")
    assert (again.queued, again.already) == (1, 1)
    assert {m["account_id"] for m in park.queued()} == {
        park.account.account_id,
        second.account_id,
    }
