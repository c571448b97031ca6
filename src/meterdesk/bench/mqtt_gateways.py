"""Virtual gateways for ``meterdesk bench mqtt``: the report stream and the publisher processes.

The stream: every meter's true readings, round by round, 10 meters per report, grouped by
gateway (``METERS_PER_GATEWAY`` meters each). Like a real store-and-forward gateway after short
outages, ``HISTORY_DUPLICATE`` of the reports are sent again later as HISTORY under a new msgid
(overlap: the core drops them as duplicates) and ``HISTORY_ONLY`` are held back and arrive only
as HISTORY several rounds late (out of order: the core re-prices after them).

A publisher process acts for a share of the gateways over one MQTT connection: it publishes
QoS 1 reports (as fast as allowed, or paced to a rate), keeps at most ``max_outstanding``
unanswered, re-sends a report unanswered after ``resend_after_s`` with the same msgid, and
records each report's publish → ``report_reply`` time.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import aiomqtt

from meterdesk.bench.workload import Workload
from meterdesk.devices.uplink import down_topic, parse_report_reply, up_topic

READINGS_PER_REPORT = 10
METERS_PER_GATEWAY = 50
HISTORY_DUPLICATE = 0.05
HISTORY_ONLY = 0.02


@dataclass(frozen=True, slots=True)
class Outgoing:
    serial: str
    msgid: str
    payload: bytes
    readings: int


@dataclass(frozen=True)
class PublisherJob:
    host: str
    port: int
    product_key: str
    serials: list[str]
    messages: list[Outgoing]
    rate_per_s: float | None  # reports per second; None: as fast as max_outstanding allows
    max_outstanding: int
    resend_after_s: float = 20.0
    give_up_after_s: float = 120.0


@dataclass
class PublisherResult:
    reports: int = 0
    readings: int = 0
    resends: int = 0
    rejected: int = 0  # answered res 0
    unanswered: int = 0
    first_publish: float = 0.0  # monotonic (system-wide on Linux)
    last_reply: float = 0.0
    cpu_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)


def gateway_of(meter_index: int) -> str:
    return f"GW{meter_index // METERS_PER_GATEWAY:05d}"


def build_rounds(workload: Workload) -> dict[int, list[Outgoing]]:
    """Each round's reports (REALTIME), before faults are added."""
    by_round: dict[int, list[Outgoing]] = {}
    grouped: dict[tuple[datetime, str], list[tuple[int, datetime, Decimal]]] = {}
    for item in workload.truth:
        grouped.setdefault((item[1], gateway_of(item[0])), []).append(item)
    numbers = {at: n for n, at in enumerate(sorted({at for at, _ in grouped}), start=1)}
    for (at, serial), items in sorted(grouped.items()):
        number = numbers[at]
        for start in range(0, len(items), READINGS_PER_REPORT):
            chunk = items[start : start + READINGS_PER_REPORT]
            msgid = f"{serial}-{number}-{start // READINGS_PER_REPORT}"
            by_round.setdefault(number, []).append(
                Outgoing(serial, msgid, _payload(serial, msgid, "REALTIME", chunk), len(chunk))
            )
    return by_round


def with_faults(rounds: dict[int, list[Outgoing]], *, seed: int) -> list[Outgoing]:
    """The rounds in order, with HISTORY duplicates and held-back reports arriving late."""
    rng = random.Random(seed)
    stream: list[Outgoing] = [m for number in sorted(rounds) for m in rounds[number]]
    per_round = max(1, len(stream) // max(1, len(rounds)))
    result: list[Outgoing | None] = list(stream)
    late: list[tuple[int, Outgoing]] = []
    for position, message in enumerate(stream):
        draw = rng.random()
        if draw < HISTORY_ONLY:
            result[position] = None
            late.append((position + per_round * rng.randint(3, 6), _as_history(message, "h")))
        elif draw < HISTORY_ONLY + HISTORY_DUPLICATE:
            late.append((position + rng.randint(50, 500), _as_history(message, "d")))
    for position, message in sorted(late, key=lambda p: p[0], reverse=True):
        result.insert(min(position, len(result)), message)
    return [m for m in result if m is not None]


def _as_history(message: Outgoing, tag: str) -> Outgoing:
    document = json.loads(message.payload)
    document["msgid"] = f"{message.msgid}-{tag}"
    document["reported"]["source"] = "HISTORY"
    payload = json.dumps(document, separators=(",", ":")).encode()
    return Outgoing(message.serial, document["msgid"], payload, message.readings)


def _payload(
    serial: str, msgid: str, source: str, items: list[tuple[int, datetime, Decimal]]
) -> bytes:
    meters = [
        {
            "addr": f"{index + 1:012d}",
            "time": int(at.timestamp() * 1000),
            "state": "ONLINE",
            "energy_kwh": f"{total:f}",
            "power_kw": "1.234",
            "relay": "closed",
        }
        for index, at, total in items
    ]
    sent = meters[-1]["time"]
    document = {
        "msgid": msgid,
        "method": "report",
        "sn": serial,
        "timestamp": sent,
        "reported": {"source": source, "meters": meters},
    }
    return json.dumps(document, separators=(",", ":")).encode()


def publish_phase(job: PublisherJob) -> PublisherResult:
    """Run in a publisher process: publish the job's reports and wait for their replies."""
    cpu = time.process_time()
    result = asyncio.run(_Publisher(job).run())
    result.cpu_s = time.process_time() - cpu
    return result


class _Publisher:
    def __init__(self, job: PublisherJob) -> None:
        self.job = job
        self.result = PublisherResult()
        # msgid → (first publish, last publish, report)
        self.outstanding: dict[str, tuple[float, float, Outgoing]] = {}
        self.slots = asyncio.Semaphore(job.max_outstanding)
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> PublisherResult:
        job = self.job
        client = aiomqtt.Client(
            job.host,
            job.port,
            identifier=f"bench-gw-{os.getpid()}",
            max_inflight_messages=1000,
            timeout=60,
        )
        client.pending_calls_threshold = 1_000_000
        async with client:
            await client.subscribe([(down_topic(job.product_key, s), 1) for s in job.serials])
            reader = asyncio.create_task(self._read(client))
            resender = asyncio.create_task(self._resend(client))
            await self._send_all(client)
            deadline = time.monotonic() + job.give_up_after_s
            while self.outstanding and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            for task in (reader, resender):
                task.cancel()
            await asyncio.gather(reader, resender, *self.tasks, return_exceptions=True)
        self.result.unanswered = len(self.outstanding)
        return self.result

    async def _send_all(self, client: aiomqtt.Client) -> None:
        start = time.monotonic()
        self.result.first_publish = start
        for number, message in enumerate(self.job.messages):
            await self.slots.acquire()
            if self.job.rate_per_s:
                delay = start + number / self.job.rate_per_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            now = time.monotonic()
            self.outstanding[message.msgid] = (now, now, message)
            self._publish(client, message)
            self.result.reports += 1
            self.result.readings += message.readings

    def _publish(self, client: aiomqtt.Client, message: Outgoing) -> None:
        topic = up_topic(self.job.product_key, message.serial)
        task = asyncio.create_task(client.publish(topic, message.payload, qos=1))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for incoming in client.messages:
            assert isinstance(incoming.payload, bytes)
            answer = parse_report_reply(incoming.payload)
            sent = self.outstanding.pop(answer.msgid, None)
            if sent is None:
                continue  # the answer to a re-send already answered
            now = time.monotonic()
            self.result.latencies_s.append(now - sent[0])
            self.result.last_reply = now
            self.result.rejected += int(answer.res == 0)
            self.slots.release()

    async def _resend(self, client: aiomqtt.Client) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for msgid, (first, last, message) in list(self.outstanding.items()):
                if now - last > self.job.resend_after_s:
                    self.outstanding[msgid] = (first, now, message)  # latency from the first
                    self._publish(client, message)
                    self.result.resends += 1


async def run_publishers(
    pool: ProcessPoolExecutor,
    broker: tuple[str, int],
    product_key: str,
    stream: list[Outgoing],
    *,
    count: int,
    rate: int | None,
    window: int,
) -> list[PublisherResult]:
    """Split the stream by gateway over ``count`` publisher processes (order kept per gateway)
    and run them at once; ``rate`` is readings/s over all of them (None: as fast as the window
    of unanswered reports allows)."""
    shares: list[list[Outgoing]] = [[] for _ in range(count)]
    for message in stream:
        shares[int(message.serial[2:]) % count].append(message)
    reports_per_s = None if rate is None else rate / READINGS_PER_REPORT / count
    jobs = [
        PublisherJob(
            broker[0],
            broker[1],
            product_key,
            sorted({m.serial for m in share}),
            share,
            reports_per_s,
            max(1, window // count),
        )
        for share in shares
        if share
    ]
    loop = asyncio.get_running_loop()
    return list(
        await asyncio.gather(*(loop.run_in_executor(pool, publish_phase, job) for job in jobs))
    )
