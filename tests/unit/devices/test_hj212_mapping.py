"""The pure HJ212 mapping: CP items → meter readings, DataTime in the site's zone, the answer."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from meterdesk.devices.codecs.hj212 import Hj212Message, build_segment, parse_segment
from meterdesk.devices.hj212 import model
from meterdesk.devices.hj212.model import MeterValues, PacketRefused
from meterdesk.metering.model import ReadingSource
from meterdesk.metering.tables import REGISTER_PLACES

SHANGHAI, BERLIN = ZoneInfo("Asia/Shanghai"), ZoneInfo("Europe/Berlin")
D = Decimal


def upload(cp: str, flag: str = "5") -> Hj212Message:
    return parse_segment(f"QN=1;ST=22;CN=2051;PW=123456;MN=GW;Flag={flag};CP=&&{cp}&&")


def test_totals_and_bands_become_one_reading_per_meter_and_other_items_are_ignored() -> None:
    message = upload(
        "DataTime=20261102081500;000000000002-Cou=20.5,000000000002-Rtd=1.2,"
        "000000000001-Cou=1010.25,000000000001.peak-Cou=4,000000000001.deep_valley-Cou=1.0001;"
        "w01018-Flag=N"
    )
    at = datetime(2026, 11, 2, 0, 15, tzinfo=UTC)

    assert model.meter_values(message, SHANGHAI) == [
        MeterValues("000000000001", at, D("1010.25"), {"peak": D(4), "deep_valley": D("1.0001")}),
        MeterValues("000000000002", at, D("20.5")),
    ]


def test_data_time_is_the_site_zone_wall_clock() -> None:
    assert model.data_time("20261102011500", BERLIN) == datetime(2026, 11, 2, 0, 15, tzinfo=UTC)
    assert model.data_time("20260701021500", BERLIN) == datetime(2026, 7, 1, 0, 15, tzinfo=UTC)
    # the hour repeated when DST ends: the first of the two
    assert model.data_time("20261025023000", BERLIN) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cp", "reason"),
    [
        ("A-Cou=1", "CP has no DataTime"),
        ("DataTime=2026110208150;A-Cou=1", "DataTime '2026110208150' is not YYYYMMDDhhmmss"),
        ("DataTime=20260230081500;A-Cou=1", "DataTime '20260230081500' is not a date and time"),
        ("DataTime=20261102081500;A-Cou=-1", "A-Cou: '-1' is not a plain non-negative decimal"),
        ("DataTime=20261102081500;A-Cou=1.5e2", "A-Cou: '1.5e2' is not a plain non-negative"),
        ("DataTime=20261102081500;A-Cou=", "A-Cou: '' is not a plain non-negative decimal"),
        ("DataTime=20261102081500;A-Cou=1.00001", "A-Cou: 1.00001 has more than 4 decimal"),
        ("DataTime=20261102081500;A-Cou=1000000000000", "A-Cou: 1000000000000 is not below"),
        ("DataTime=20261102081500;A.peak-Cou=1", "band registers without the total (A-Cou)"),
        ("DataTime=20261102081500;A-Cou=2,A.noon-Cou=1", "A.noon-Cou: unknown band 'noon'"),
    ],
)
def test_a_malformed_cp_is_refused_with_a_reason(cp: str, reason: str) -> None:
    with pytest.raises(PacketRefused) as refused:
        model.meter_values(upload(cp), SHANGHAI)
    assert refused.value.reason.startswith(reason)


def test_the_scale_is_the_stored_registers_scale() -> None:
    assert model.PLACES == REGISTER_PLACES


def test_the_answer_bit_and_the_data_answer() -> None:
    assert model.wants_answer(upload("DataTime=20261102081500", flag="5"))
    assert not model.wants_answer(upload("DataTime=20261102081500", flag="4"))
    assert not model.wants_answer(upload("DataTime=20261102081500", flag="x"))
    answer = model.data_answer(upload("DataTime=20261102081500", flag="5"))
    assert build_segment(answer) == "QN=1;ST=91;CN=9014;PW=123456;MN=GW;Flag=4;CP=&&&&"


def test_real_time_data_is_realtime_and_the_stored_records_are_history() -> None:
    assert model.source_of("2011") is ReadingSource.REALTIME
    assert {model.source_of(cn) for cn in ("2051", "2061", "2031")} == {ReadingSource.HISTORY}


@pytest.mark.parametrize(
    ("wall", "instant"),
    [
        ("20261025023000", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),  # repeated: the first
        ("20260329023000", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),  # skipped: the jump
        ("20260329033000", datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),
    ],
)
def test_data_time_on_daylight_saving_days_reads_as_every_local_time_does(
    wall: str, instant: datetime
) -> None:
    assert model.data_time(wall, ZoneInfo("Europe/Berlin")) == instant
