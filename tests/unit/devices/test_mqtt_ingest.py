"""MQTT ingest without a broker or a database: payload → reading conversion, refusals, meter
choice, and the group commit (window, size limit, replies after commit, retries, flush on stop)
with a fake commit and a fake reply sender."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiomqtt
import pytest

from meterdesk.devices.mqtt_commit import CommitBatch, GroupCommitter
from meterdesk.devices.mqtt_ingest import MqttIngestService, MqttSettings, parse_broker
from meterdesk.devices.mqtt_rows import (
    MAX_RAW_CHARS,
    Inbound,
    KnownGateway,
    KnownMeter,
    Reply,
    choose_meter,
    entry_reading,
    loose_msgid,
    receive,
    refused_item,
    reply,
)
from meterdesk.devices.mqtt_store import BatchOutcome, BatchStats
from meterdesk.devices.uplink import MeterReport, Topic, UplinkRejected, parse_report_reply
from meterdesk.metering.model import QuarantineReason, ReadingSource
from meterdesk.shared.errors import ValidationError

D = Decimal
AT_MS = 1764028800000  # 2025-11-25T00:00:00Z
ELECTRICITY = KnownMeter(id=7, organisation_id=1, utility="electricity", gateway_id=3)
WATER = KnownMeter(id=8, organisation_id=1, utility="water", gateway_id=3)
GATEWAY = KnownGateway(id=3, organisation_id=1, serial="GW0001", product_key="pk")


def entry(**values: Any) -> MeterReport:
    return MeterReport.model_validate(
        {"addr": "000000000001", "time": AT_MS, "state": "ONLINE", **values}
    )


def payload(msgid: str = "m-1", meters: int = 1, **fields: Any) -> bytes:
    document = {
        "msgid": msgid,
        "method": "report",
        "sn": "GW0001",
        "timestamp": AT_MS,
        "reported": {
            "source": "REALTIME",
            "meters": [
                {"addr": f"{i:012d}", "time": AT_MS, "state": "ONLINE", "energy_kwh": "1.00"}
                for i in range(meters)
            ],
        },
    }
    document.update(fields)
    return json.dumps(document).encode()


# --- one meter entry → one reading ----------------------------------------------------------------


def test_an_electricity_entry_gives_its_total_and_band_registers_at_the_utc_time() -> None:
    reading = entry_reading(
        entry(
            energy_kwh="1234.56",
            energy_sharp_kwh="100.00",
            energy_peak_kwh="400.00",
            energy_flat_kwh="500.00",
            energy_valley_kwh="234.56",
            voltage_v="220.1",
        ),
        ELECTRICITY,
        ReadingSource.REALTIME,
    )
    assert reading is not None
    assert (reading.meter_id, reading.total, reading.source) == (
        7,
        D("1234.56"),
        ReadingSource.REALTIME,
    )
    assert reading.measured_at == datetime(2025, 11, 25, tzinfo=UTC)
    assert reading.bands == {
        "sharp": D("100.00"),
        "peak": D("400.00"),
        "flat": D("500.00"),
        "valley": D("234.56"),
    }


def test_a_water_entry_gives_its_volume_and_a_history_entry_keeps_its_source() -> None:
    reading = entry_reading(entry(volume_m3="12.345", valve="open"), WATER, ReadingSource.HISTORY)
    assert reading is not None
    assert (reading.total, reading.bands, reading.source) == (
        D("12.345"),
        None,
        ReadingSource.HISTORY,
    )


def test_an_entry_without_registers_is_status_only() -> None:
    assert (
        entry_reading(
            entry(relay="open", remaining_money="1.00"), ELECTRICITY, ReadingSource.REALTIME
        )
        is None
    )


@pytest.mark.parametrize(
    ("meter", "values", "reason"),
    [
        (WATER, {"energy_kwh": "1.0"}, "energy registers reported for water meter"),
        (ELECTRICITY, {"volume_m3": "1.0"}, "a water volume reported for electricity meter"),
        (ELECTRICITY, {"energy_peak_kwh": "1.0"}, "band registers without energy_kwh"),
        (ELECTRICITY, {"energy_kwh": "1.00001"}, "more than 4 decimal places"),
        (ELECTRICITY, {"energy_kwh": "-1.0"}, "outside 0"),
        (ELECTRICITY, {"energy_kwh": "1000000000000"}, "outside 0"),
    ],
)
def test_an_entry_that_contradicts_its_meter_or_the_registers_is_refused_with_a_reason(
    meter: KnownMeter, values: dict[str, str], reason: str
) -> None:
    with pytest.raises(UplinkRejected, match=reason):
        entry_reading(entry(**values), meter, ReadingSource.REALTIME)


# --- which meter an address means ---------------------------------------------------------------


def meter(meter_id: int, gateway_id: int | None) -> KnownMeter:
    return KnownMeter(meter_id, 1, "electricity", gateway_id)


def test_an_address_means_the_meter_on_this_gateway_before_one_on_no_gateway() -> None:
    assert choose_meter([meter(1, None), meter(2, 3)], 3, "a") == meter(2, 3)
    assert choose_meter([meter(1, None), meter(2, 4)], 3, "a") == meter(1, None)


@pytest.mark.parametrize(
    ("candidates", "reason"),
    [
        ([], "no meter with address 'a'"),
        ([meter(1, 4)], "on another gateway's bus"),
        ([meter(1, 3), meter(2, 3)], "2 meters have address 'a'"),
    ],
)
def test_an_unknown_or_ambiguous_address_gives_a_reason(
    candidates: list[KnownMeter], reason: str
) -> None:
    found = choose_meter(candidates, 3, "a")
    assert isinstance(found, str) and reason in found


# --- receiving, refusing, replying -----------------------------------------------------------------


def test_a_report_is_parsed_once_on_arrival() -> None:
    inbound = receive("data/up/pk/GW0001", payload(meters=3), 1.5)
    assert inbound.report is not None and inbound.readings == 3 and inbound.msgid == "m-1"


def test_a_refused_payload_keeps_its_reason_and_when_possible_its_msgid() -> None:
    contract = receive("data/up/pk/GW0001", payload(timestamp="yesterday"), 0.0)
    assert contract.report is None and contract.msgid == "m-1" and contract.readings == 0
    assert contract.reason is not None and "timestamp" in contract.reason
    garbage = receive("data/up/pk/GW0001", b"\xff\xfe", 0.0)
    assert garbage.msgid is None and garbage.reason is not None
    assert loose_msgid(b'{"msgid": 12}') is None and loose_msgid(b"[1]") is None


def test_a_reply_goes_to_the_gateways_down_topic_with_res() -> None:
    answer = reply(Topic("up", "pk", "GW0001"), "m-9", ok=False)
    assert answer.topic == "data/down/pk/GW0001"
    parsed = parse_report_reply(answer.payload)
    assert (parsed.msgid, parsed.method, parsed.res) == ("m-9", "report_reply", 0)


def test_a_refused_payload_is_quarantined_raw_and_a_huge_one_truncated() -> None:
    big = b'{"x": "' + b"a" * (MAX_RAW_CHARS + 10) + b'"}'
    item = refused_item(receive("data/up/pk/GW0001", big, 0.0), GATEWAY, "too big")
    assert item.reason_code is QuarantineReason.MALFORMED and item.organisation_id == 1
    assert len(str(item.payload["raw"])) == MAX_RAW_CHARS
    assert item.payload["truncated_from_chars"] == len(big)
    unknown = refused_item(receive("data/up/pk/GW9", payload(), 0.0), None, "unknown gateway")
    assert unknown.reason_code is QuarantineReason.UNKNOWN_METER and unknown.organisation_id is None


def test_a_broker_address_is_host_and_port() -> None:
    assert parse_broker("10.0.0.5:1884") == ("10.0.0.5", 1884)
    assert parse_broker("broker") == ("broker", 1883)
    with pytest.raises(ValidationError, match="HOST:PORT"):
        parse_broker("broker:mqtt")
    assert MqttSettings(share_group="ingest").subscription == "$share/ingest/data/up/+/+"


# --- group commit -------------------------------------------------------------------------------


class FakeSender:
    def __init__(self, log: list[str], fail: bool = False) -> None:
        self.log, self.fail = log, fail
        self.sent: list[Reply] = []

    async def send(self, replies: Sequence[Reply]) -> None:
        self.log.append(f"reply {len(replies)}")
        if self.fail:
            raise aiomqtt.MqttError("not connected")
        self.sent.extend(replies)


class FakeStore:
    """Commits by writing to a log; fails while ``failures`` > 0."""

    def __init__(self, log: list[str], failures: int = 0, poison: str | None = None) -> None:
        self.log, self.failures, self.poison = log, failures, poison
        self.batches: list[list[str]] = []

    def commit(self, batch: list[Inbound]) -> BatchOutcome:
        ids = [i.msgid or "?" for i in batch]
        if self.failures > 0 or self.poison in ids:
            self.failures -= 1
            self.log.append(f"fail {len(ids)}")
            raise RuntimeError("database unavailable")
        self.batches.append(ids)
        self.log.append(f"commit {len(ids)}")
        replies = [Reply("data/down/pk/GW0001", i.encode()) for i in ids]
        return BatchOutcome(replies, BatchStats(messages=len(ids)))


async def inline(
    function: Callable[[list[Inbound]], BatchOutcome], batch: list[Inbound]
) -> BatchOutcome:
    await asyncio.sleep(0.01)  # a commit takes a moment; messages keep arriving meanwhile
    return function(batch)


def committer(store: FakeStore, sender: FakeSender, **options: Any) -> GroupCommitter:
    options = {"window_s": 0.05, "max_batch_readings": 20, "backoff_s": (0.001, 0.002)} | options
    return GroupCommitter(store.commit, sender, run_sync=inline, **options)


def message(msgid: str, readings: int = 10) -> Inbound:
    return receive("data/up/pk/GW0001", payload(msgid, meters=readings), time.monotonic())


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


async def eventually(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    """Wait until ``condition`` holds (a loaded machine may be slow; the logic is not timed)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def test_messages_within_the_window_are_committed_together_and_answered_after_the_commit() -> None:
    log: list[str] = []
    store, sender = FakeStore(log), FakeSender(log)

    async def scenario() -> None:
        group = committer(store, sender, window_s=0.5, max_batch_readings=2000)
        task = asyncio.create_task(group.run())
        for msgid in ("a", "b", "c"):
            group.add(message(msgid, 1))
        await eventually(lambda: len(sender.sent) == 3)
        assert store.batches == [["a", "b", "c"]]
        assert log == ["commit 3", "reply 3"]
        group.stop()
        await task

    run(scenario)
    assert [r.payload for r in sender.sent] == [b"a", b"b", b"c"]


def test_a_full_batch_is_committed_without_waiting_for_the_window() -> None:
    log: list[str] = []
    store = FakeStore(log)

    async def scenario() -> None:
        group = committer(store, FakeSender(log), window_s=60.0, max_batch_readings=20)
        task = asyncio.create_task(group.run())
        for msgid in ("a", "b", "c", "d", "e"):
            group.add(message(msgid))
        await eventually(lambda: len(store.batches) == 2)
        assert store.batches == [["a", "b"], ["c", "d"]]  # "e" waits for its window or a stop
        group.stop()
        await task
        assert store.batches[-1] == ["e"]  # flushed on stop

    run(scenario)


def test_messages_arriving_during_a_commit_form_the_next_batch() -> None:
    log: list[str] = []
    store = FakeStore(log)

    async def scenario() -> None:
        started, release = asyncio.Event(), asyncio.Event()

        async def held(function: CommitBatch, batch: list[Inbound]) -> BatchOutcome:
            started.set()
            await release.wait()
            return function(batch)

        group = GroupCommitter(store.commit, FakeSender(log), window_s=0.001, run_sync=held)
        task = asyncio.create_task(group.run())
        group.add(message("first", 1))
        await started.wait()  # the first commit is under way …
        for index in range(5):
            group.add(message(f"m{index}", 1))  # … while these arrive
        release.set()
        group.stop()
        await task

    run(scenario)
    assert store.batches == [["first"], ["m0", "m1", "m2", "m3", "m4"]]


def test_a_failed_commit_sends_no_reply_and_is_retried_message_by_message() -> None:
    log: list[str] = []
    store, sender = FakeStore(log, failures=1), FakeSender(log)

    async def scenario() -> None:
        group = committer(store, sender, window_s=0.001)
        task = asyncio.create_task(group.run())
        group.add(message("a", 1))
        group.add(message("b", 1))
        await eventually(lambda: len(sender.sent) == 2)
        group.stop()
        await task
        assert group.stats.failed_batches == 1 and group.stats.dropped == 0

    run(scenario)
    assert log[0] == "fail 2"  # and no reply for it
    assert store.batches == [["a"], ["b"]]  # once failed, each is retried alone
    assert [r.payload for r in sender.sent] == [b"a", b"b"]


def test_a_poison_message_is_given_up_after_its_attempts_without_blocking_the_others() -> None:
    log: list[str] = []
    store, sender = FakeStore(log, poison="bad"), FakeSender(log)

    async def scenario() -> None:
        group = committer(store, sender, window_s=0.001, max_attempts=3)
        task = asyncio.create_task(group.run())
        for msgid in ("ok-1", "bad", "ok-2"):
            group.add(message(msgid, 1))
        await eventually(lambda: group.stats.dropped == 1 and len(sender.sent) == 2)
        group.stop()
        await task

    run(scenario)
    assert sorted(r.payload for r in sender.sent) == [b"ok-1", b"ok-2"]


def test_replies_that_cannot_be_sent_are_counted_and_the_committer_goes_on() -> None:
    log: list[str] = []
    store, sender = FakeStore(log), FakeSender(log, fail=True)

    async def scenario() -> None:
        group = committer(store, sender, window_s=0.001)
        task = asyncio.create_task(group.run())
        group.add(message("a", 1))
        await eventually(lambda: group.stats.replies_failed == 1)
        group.add(message("b", 1))
        group.stop()
        await task
        assert group.stats.replies_failed == 2 and group.stats.batches == 2

    run(scenario)


def test_a_control_reply_on_the_up_topic_goes_to_its_handler_not_to_the_quarantine() -> None:
    seen: list[tuple[str, str]] = []
    log: list[str] = []

    async def scenario() -> None:
        service = MqttIngestService(
            FakeStore(log).commit,
            MqttSettings(),
            on_control_reply=lambda sn, r: seen.append((sn, r.msgid)),
        )
        answer = b'{"msgid": "c-1", "method": "control_reply", "addr": "000000000001", "res": 1}'
        service._accept(aiomqtt.Message("data/up/pk/GW0001", answer, 1, False, 1, None))
        service._accept(aiomqtt.Message("data/up/pk/GW0001", b"{}", 1, False, 2, None))
        assert service.committer.pending == 1  # only the refused payload

    run(scenario)
    assert seen == [("GW0001", "c-1")]
