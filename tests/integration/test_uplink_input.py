"""Malformed text in gateway messages (MQTT uplink) is refused and quarantined message by
message, on SQLite and PostgreSQL; it never fails the group commit it arrived in."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from builders import T0
from sqlalchemy import select
from test_mqtt_ingest_broker import make_site, report

from meterdesk.db.database import Database
from meterdesk.devices.mqtt_rows import receive
from meterdesk.devices.mqtt_store import UplinkStore
from meterdesk.devices.uplink import up_topic
from meterdesk.metering.tables import quarantine

pytestmark = pytest.mark.integration
ADDR = "000000000001"


@pytest.mark.parametrize(
    ("msgid", "addr", "said"),
    [
        ("m\x00", ADDR, "msgid: a control character (U+0000)"),
        ("m-2", "0000\x00", "reported.meters.0.addr: a control character (U+0000)"),
    ],
)
def test_a_nul_in_a_report_quarantines_that_report_alone(
    db: Database, msgid: str, addr: str, said: str
) -> None:
    # PostgreSQL cannot store a NUL: the uplink or quarantine row raised DataError and the
    # whole group commit failed, the good report beside it included (SQLite stored the NUL).
    site = make_site(db, (ADDR,))
    topic = up_topic(site.product_key, site.serial)
    at = T0 + timedelta(minutes=15)
    batch = [
        receive(topic, report(msgid, [(addr, at, "1001")]), time.monotonic()),
        receive(topic, report("good", [(ADDR, at, "1001")]), time.monotonic()),
    ]

    outcome = UplinkStore(db).commit(batch)

    assert (outcome.stats.rejected, outcome.stats.accepted) == (1, 1)
    with db.read() as conn:
        held = conn.execute(select(quarantine.c.reason_code, quarantine.c.reason)).all()
    assert [(code, reason[: len(said)]) for code, reason in held] == [("malformed", said)]
