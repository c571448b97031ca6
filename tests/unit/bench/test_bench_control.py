"""The pure parts of ``meterdesk bench control``: which reading exhausted the credit, the
reference bill, which frames the simulated meters record, how credits and the background load
are sized, and the simulator configuration the bench starts."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from meterdesk.bench.control_load import LoadResult
from meterdesk.bench.control_report import load_figures
from meterdesk.bench.control_results import (
    Controlled,
    _trip_then_close,
    crossing,
    percentile,
    reference_fen,
)
from meterdesk.bench.control_setup import FEN_PER_S, background_workload, credit_for
from meterdesk.bench.control_sim import CLOSE, TRIP, Records, SimJob, config
from meterdesk.devices.codecs import dlt645 as d
from meterdesk.devices.uplink import MeterReport, Report, Reported
from meterdesk.simulator.config import parse_config

ROOM = Controlled("000000900001", 7, 70, 100, Decimal("1000.00"), Decimal("1.2000"))
JOB = SimJob(
    meters=23, first_address=900_001, rated_kw=Decimal(720), energy_kwh=Decimal("1000.00"),
    broker=("127.0.0.1", 1883), product_key="pk", seed=3,
)  # fmt: skip


def test_the_reference_bill_rounds_half_up_to_the_fen() -> None:
    assert reference_fen(ROOM, Decimal("1000.00")) == 0
    assert reference_fen(ROOM, Decimal("1000.01")) == 1  # 1.2 fen
    assert reference_fen(ROOM, Decimal("1000.05")) == 6  # 6.0 fen
    assert reference_fen(ROOM, Decimal("1000.0125")) == 2  # 1.5 fen → 2


def test_the_crossing_is_the_first_reading_at_which_the_credit_is_used_up() -> None:
    # 1.00 credit at 1.20/kWh: 0.82 kWh cost 0.98; 0.83 kWh cost 0.996 → 1.00: "balance ≤ 0"
    stored = [(1_000, Decimal("1000.00")), (2_000, Decimal("1000.50")), (3_000, Decimal("1000.82"))]
    assert crossing(ROOM, stored) is None
    stored += [(4_000, Decimal("1000.83")), (5_000, Decimal("1001.00"))]
    assert crossing(ROOM, stored) == 4_000
    exact = Controlled("a", 1, 1, 120, Decimal(0), Decimal(1))
    assert crossing(exact, [(1, Decimal("1.19")), (2, Decimal("1.20"))]) == 2  # exactly zero


def test_percentiles_take_the_value_at_or_above_the_rank() -> None:
    values = [float(x) for x in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99)) == (51.0, 100.0)
    assert percentile([3.0], 0.99) == 3.0
    assert percentile([], 0.99) != percentile([], 0.99)  # NaN when nothing was measured


def frame(address: str, action: d.RelayAction) -> d.Dlt645Frame:
    return d.relay_control_request(
        address, action, deadline=datetime(2026, 12, 1, tzinfo=UTC), zone=UTC,
        password=d.Password(2, "000000"), operator_code="00000000",
    )  # fmt: skip


def test_records_keep_relay_frames_and_the_first_publish_of_each_reading() -> None:
    records = Records()
    records.observe_frame(frame("000000900001", d.RelayAction.TRIP))
    records.observe_frame(d.read_request("000000900001", 0))  # not a command: ignored
    records.observe_frame(frame("000000900001", d.RelayAction.CLOSE_DIRECT))
    assert [(a, k) for a, k, _, _ in records.frames] == [
        ("000000900001", TRIP),
        ("000000900001", CLOSE),
    ]
    entry = MeterReport(addr="000000900001", time=5_000, state="ONLINE", energy_kwh=Decimal(1))
    reported = Reported(source="REALTIME", meters=[entry])
    report = Report(msgid="m1", sn="GWC000", timestamp=5_000, reported=reported)
    records.observe_report(report)
    first = records.published[("000000900001", 5_000)]
    records.observe_report(report)  # a resend keeps the first publish
    assert records.published[("000000900001", 5_000)] == first
    history = report.model_copy(update={"reported": Reported(source="HISTORY", meters=[entry])})
    records.observe_report(history)
    assert len(records.published) == 1


def test_a_trip_must_be_followed_by_a_close_on_the_meters_line() -> None:
    records = Records()
    records.frames = [("a", CLOSE, 1.0, 1.0), ("a", TRIP, 2.0, 2.0), ("b", CLOSE, 3.0, 3.0)]
    assert not _trip_then_close(records, "a")  # the close came before the trip
    records.frames.append(("a", CLOSE, 4.0, 4.0))
    assert _trip_then_close(records, "a") and not _trip_then_close(records, "b")


def test_credits_run_out_one_after_the_other_inside_the_spread() -> None:
    credits = [credit_for(k, 10, 4.0, 12.0) for k in range(10)]
    assert credits == sorted(credits) and len(set(credits)) == 10
    seconds = [c * 100 / FEN_PER_S for c in credits]
    assert seconds[0] >= 4 and seconds[-1] <= 16


def test_the_background_workload_covers_the_rate_for_the_whole_load() -> None:
    workload = background_workload(seed=1, rate=2_000, load_s=10)
    assert len(workload.truth) >= 2_000 * 10
    assert workload.rounds <= 60  # so no background account outruns its credit


def test_the_simulator_runs_ten_meters_per_line_each_reported_every_second() -> None:
    parsed = parse_config(config(JOB))
    assert [bus.name for bus in parsed.buses] == ["C000", "C001", "C002"]
    assert [g.interval_s for g in parsed.gateways] == [1.0, 1.0, 1.0]
    addresses = [entry.spec.address for entry in parsed.meters]
    assert addresses[0] == 900_001 and addresses[-1] == 900_023 and len(addresses) == 23
    assert JOB.address(22) == "000000900023"
    assert (parsed.start, parsed.speed) == (None, 1.0)  # real time, from now


def load(
    publishing: tuple[float, float], answering: tuple[float, float], answered: int
) -> LoadResult:
    return LoadResult(
        readings=answered, answered_readings=answered, first_publish=publishing[0],
        last_publish=publishing[1], first_reply=answering[0], last_reply=answering[1],
    )  # fmt: skip


def test_a_platform_that_keeps_up_sustains_the_offered_rate_whatever_its_answers_latency() -> None:
    # 10,000 readings/s offered for 80 s over two publishers, each answer 1 s after its publish
    kept_up = [load((0.0, 80.0), (1.0, 81.0), 400_000), load((0.0, 80.0), (1.0, 81.0), 400_000)]
    figures = load_figures(kept_up, controlled=100, window_s=80.0)
    assert figures["background_readings_per_s"] == 10_000
    assert figures["background_offered_readings_per_s"] == 10_000


def test_a_platform_that_falls_behind_sustains_only_its_own_pace() -> None:
    # the publishers wait for answers: 80 s of publishing, answered at 8,000/s until 100 s
    behind = [load((0.0, 80.0), (1.0, 100.0), 396_000), load((0.0, 80.0), (1.0, 100.0), 396_000)]
    figures = load_figures(behind, controlled=100, window_s=80.0)
    assert figures["background_readings_per_s"] == 8_000
    assert figures["background_offered_readings_per_s"] == 9_900
