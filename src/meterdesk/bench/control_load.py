"""The background load of ``meterdesk bench control``: gateways publishing the seeded ingest
workload (:mod:`meterdesk.bench.mqtt_gateways` builds the reports: 10 readings each, QoS 1, with
HISTORY overlaps and late reports) at a target rate for a fixed time, in publisher processes.

Unlike ``bench mqtt``'s publishers, which send a whole stream, these send from ``start_at`` to
``stop_at`` (monotonic seconds, the same clock in every process on Linux) at the target rate,
keep at most ``max_outstanding`` reports unanswered (so a slower ingest slows them down instead
of flooding the broker), then wait for the last replies. The pace counts readings, so the load
offered is the rate. What the platform sustained is read on the answering side: readings
answered per second between the first and the last answer (``control_report.load_figures``).
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import aiomqtt

from meterdesk.bench.mqtt_gateways import Outgoing
from meterdesk.devices.uplink import down_topic, parse_report_reply, up_topic


@dataclass(frozen=True)
class LoadJob:
    host: str
    port: int
    product_key: str
    serials: list[str]
    messages: list[Outgoing]
    readings_per_s: float  # this publisher's share of the rate
    max_outstanding: int
    start_at: float  # monotonic
    stop_at: float  # monotonic: no new report after this
    drain_s: float = 30.0
    resend_after_s: float = 20.0


@dataclass
class LoadResult:
    reports: int = 0
    readings: int = 0
    answered_readings: int = 0  # readings in reports answered res 1
    rejected: int = 0
    unanswered: int = 0
    resends: int = 0
    first_publish: float = 0.0
    last_publish: float = 0.0
    first_reply: float = 0.0
    last_reply: float = 0.0
    cpu_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)


def publish_load(job: LoadJob) -> LoadResult:
    """In a publisher process: publish until ``stop_at``, then wait for the replies."""
    cpu = time.process_time()
    result = asyncio.run(_Load(job).run())
    result.cpu_s = time.process_time() - cpu
    return result


class _Load:
    def __init__(self, job: LoadJob) -> None:
        self.job = job
        self.result = LoadResult()
        self.outstanding: dict[str, tuple[float, float, Outgoing]] = {}  # first, last, report
        self.slots = asyncio.Semaphore(job.max_outstanding)
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> LoadResult:
        job = self.job
        client = aiomqtt.Client(
            job.host,
            job.port,
            identifier=f"bench-control-load-{os.getpid()}",
            max_inflight_messages=1000,
            timeout=60,
        )
        client.pending_calls_threshold = 1_000_000
        async with client:
            await client.subscribe([(down_topic(job.product_key, s), 1) for s in job.serials])
            reader = asyncio.create_task(self._read(client))
            resender = asyncio.create_task(self._resend(client))
            await self._send(client)
            deadline = time.monotonic() + job.drain_s
            while self.outstanding and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            for task in (reader, resender):
                task.cancel()
            await asyncio.gather(reader, resender, *self.tasks, return_exceptions=True)
        self.result.unanswered = len(self.outstanding)
        return self.result

    async def _send(self, client: aiomqtt.Client) -> None:
        job = self.job
        await asyncio.sleep(max(0.0, job.start_at - time.monotonic()))
        self.result.first_publish = time.monotonic()
        published = 0  # readings: the pace counts readings, as the rate does, not reports
        for message in job.messages:
            due = job.start_at + published / job.readings_per_s
            if due >= job.stop_at:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await self.slots.acquire()
            now = time.monotonic()
            if now >= job.stop_at:
                self.slots.release()
                break
            self.outstanding[message.msgid] = (now, now, message)
            self._publish(client, message)
            self.result.reports += 1
            self.result.readings += message.readings
            self.result.last_publish = now
            published += message.readings

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
            self.result.first_reply = self.result.first_reply or now
            self.result.last_reply = now
            if answer.res == 1:
                self.result.answered_readings += sent[2].readings
            else:
                self.result.rejected += 1
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


@dataclass(frozen=True)
class LoadPlan:
    broker: tuple[str, int]
    product_key: str
    rate: int  # readings/s over all publishers
    start_at: float
    stop_at: float
    window: int  # unanswered reports over all publishers


async def run_load(
    pool: ProcessPoolExecutor, plan: LoadPlan, stream: list[Outgoing], publishers: int
) -> list[LoadResult]:
    """Split the stream by gateway over the publisher processes (order kept per gateway)."""
    shares: list[list[Outgoing]] = [[] for _ in range(publishers)]
    for message in stream:
        shares[int(message.serial[2:]) % publishers].append(message)
    readings_per_s = plan.rate / publishers
    jobs = [
        LoadJob(
            plan.broker[0],
            plan.broker[1],
            plan.product_key,
            sorted({m.serial for m in share}),
            share,
            readings_per_s,
            max(1, plan.window // publishers),
            plan.start_at,
            plan.stop_at,
        )
        for share in shares
        if share
    ]
    loop = asyncio.get_running_loop()
    return list(
        await asyncio.gather(*(loop.run_in_executor(pool, publish_load, job) for job in jobs))
    )
