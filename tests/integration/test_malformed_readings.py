"""A reading whose registers cannot be real is quarantined as malformed, alone.

Before, such a reading either failed its whole batch (more decimal places than a register has,
an unknown band name) or was accepted and then failed every later batch of its meter (a negative
first reading: the next interval's consumption is negative). Each kind below goes to the
quarantine with its reason while the rest of its batch is billed, and later batches go on.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from builders import (
    ACTOR,
    make_meter,
    minutes,
    one_meter_account,
    open_account,
    quarantined,
    reading,
    stored_readings,
    wallet,
)
from sqlalchemy import select

from meterdesk.billing import corrections
from meterdesk.billing.ingest import IncomingReading, Ingestor
from meterdesk.db.database import Database
from meterdesk.metering.tables import quarantine
from meterdesk.shared.errors import ConflictError

pytestmark = pytest.mark.integration

D = Decimal


@pytest.mark.parametrize(
    ("total", "bands", "reason"),
    [
        ("-5", None, "register total is negative (-5)"),
        ("1000000", None, "register total 1000000 is not below the meter's modulus 1000000"),
        ("1001.00001", None, "register total 1001.00001 has more than 4 decimal places"),
        ("NaN", None, "register total is not a number (NaN)"),
        ("1001", {"sharp": "-1"}, "register sharp is negative (-1)"),
        ("1001", {"noon": "1"}, "bands: unknown band(s) ['noon']"),
    ],
)
def test_an_impossible_register_is_quarantined_and_the_batch_goes_on(
    db: Database, total: str, bands: dict[str, str] | None, reason: str
) -> None:
    setup = one_meter_account(db, opening="1000")
    org = setup.org
    other = make_meter(db, org, "M2")
    open_account(db, org, "A-2", [(other, setup.tariff_id, "50")])
    bad = IncomingReading(
        setup.meter_id,
        minutes(15),
        D(total),
        None if bands is None else {k: D(v) for k, v in bands.items()},
    )
    report = Ingestor(db).ingest([bad, reading(other, minutes(15), "60")])
    assert (report.accepted, report.quarantined) == (1, 1)
    [item] = quarantined(db, org)
    assert item["reason_code"] == "malformed"
    assert item["reason"].startswith(reason)
    assert wallet(db, setup.account) == D("100")  # nothing billed for the bad one
    # the meter goes on from its last good reading
    Ingestor(db).ingest([reading(setup.meter_id, minutes(30), "1010")])
    assert wallet(db, setup.account) == D("93.46")  # 10 kWh × 0.6537


def test_a_negative_first_reading_no_longer_blocks_the_meter(db: Database) -> None:
    """A new meter's first reading is negative. Accepted, it became the reading an account
    opened on (opening reading "the meter's latest"), and every later batch holding the meter
    failed with a negative consumption."""
    setup = one_meter_account(db, opening="1000")
    org = setup.org
    fresh = make_meter(db, org, "M3")
    ingestor = Ingestor(db)
    first = ingestor.ingest(
        [reading(fresh, minutes(15), "-3"), reading(setup.meter_id, minutes(15), "1001")]
    )
    assert (first.accepted, first.quarantined) == (1, 1)
    ingestor.ingest([reading(fresh, minutes(30), "2")])
    opened = open_account(db, org, "A-3", [(fresh, setup.tariff_id, None)], ingestor=ingestor)
    ingestor.ingest([reading(fresh, minutes(45), "12")])
    assert [r[3] for r in stored_readings(db, fresh)] == [D("2"), D("12")]
    assert wallet(db, opened) == D("93.46")  # 10 kWh × 0.6537


def test_an_unknown_meter_with_unknown_band_names_is_quarantined_as_unknown(db: Database) -> None:
    setup = one_meter_account(db, opening="1000")
    stranger = IncomingReading(99_999, minutes(15), D("5"), {"noon": D("5")})
    report = Ingestor(db).ingest([stranger, reading(setup.meter_id, minutes(15), "1001")])
    assert (report.accepted, report.quarantined) == (1, 1)
    with db.read() as conn:
        [row] = conn.execute(select(quarantine.c.reason_code, quarantine.c.payload)).all()
    assert row[0] == "unknown_meter"
    assert json.loads(row[1])["bands_as_sent"] == {"noon": "5"}  # kept as sent


def test_a_malformed_reading_can_be_discarded_but_not_released(db: Database) -> None:
    setup = one_meter_account(db, opening="1000")
    Ingestor(db).ingest([reading(setup.meter_id, minutes(15), "-1")])
    [item] = quarantined(db, setup.org)
    with pytest.raises(ConflictError, match="cannot be released, only discarded"):
        corrections.release(db, organisation_id=setup.org.id, quarantine_id=item["id"], actor=ACTOR)
    assert stored_readings(db, setup.meter_id)[-1][3] == D("1000")  # nothing accepted
