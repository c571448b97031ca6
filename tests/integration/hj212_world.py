"""An HJ212 site (organisation, gateway with an access password, meters, accounts), a test-side
HJ212 gateway on a real TCP socket that builds its packets with the codec, and the server
running on 127.0.0.1 on a free port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from builders import ACTOR, Org, make_org, make_tariff, open_account
from sqlalchemy import func, select

from meterdesk.billing import accounts as account_service
from meterdesk.db.database import Database
from meterdesk.devices import service as devices
from meterdesk.devices.codecs.hj212 import Hj212Decoder, Hj212Message, encode_message
from meterdesk.devices.hj212.server import Hj212Server, Hj212Settings
from meterdesk.devices.hj212.store import Hj212Store, Packet
from meterdesk.devices.mqtt_store import BatchOutcome
from meterdesk.metering import service as metering

SERIAL = "HJ212GW0000000000000001"
PASSWORD = "123456"  # noqa: S105 - a test gateway's access password
A1, A2 = "000000000001", "000000000002"


@dataclass
class Site:
    org: Org
    gateway_id: int
    meter_ids: dict[str, int] = field(default_factory=dict)
    accounts: dict[str, account_service.OpenedAccount] = field(default_factory=dict)


def make_site(
    db: Database,
    addrs: tuple[str, ...] = (A1, A2),
    *,
    timezone: str = "Asia/Shanghai",
    definition: dict[str, Any] | None = None,
) -> Site:
    org = make_org(db, timezone=timezone)
    tariff_id = make_tariff(db, org, definition=definition)
    gateway_id = devices.create_gateway(
        db,
        organisation_id=org.id,
        site_id=org.site_id,
        serial=SERIAL,
        name="HJ212 gateway",
        uplink="hj212",
        access_password=PASSWORD,
        actor=ACTOR,
    )
    site = Site(org, gateway_id)
    for index, addr in enumerate(addrs):
        spec = metering.MeterSpec(
            number=f"M{index + 1}",
            utility="electricity",
            kind="single_phase",
            protocol="dlt645",  # read by the gateway, which pushes HJ212
            address=addr,
            room_id=org.room_id,
        )
        meter_id = metering.create_meter(db, organisation_id=org.id, spec=spec, actor=ACTOR)
        site.meter_ids[addr] = meter_id
        site.accounts[addr] = open_account(
            db, org, f"A-{index + 1}", [(meter_id, tariff_id, "1000")], credit="500"
        )
    return site


def packet(
    qn: str,
    data_time: str,
    items: dict[str, str],
    *,
    cn: str = "2051",
    pw: str | None = PASSWORD,
    mn: str = SERIAL,
    flag: str = "5",
) -> bytes:
    """A data upload; ``flag`` 5 = version 1 (2017) with the answer bit set."""
    fields = [("QN", qn), ("ST", "22"), ("CN", cn)]
    fields += [("PW", pw)] if pw is not None else []
    fields += [("MN", mn), ("Flag", flag)]
    cp = (
        ((("DataTime", data_time),), tuple(items.items()))
        if items
        else ((("DataTime", data_time),),)
    )
    return encode_message(Hj212Message(tuple(fields), cp))


class Gateway:
    """One TCP connection; collects the packets the server sends back, with their arrival."""

    def __init__(
        self,
        port: int,
        on_answer: Callable[[Hj212Message], None] | None = None,
        *,
        source: str | None = None,  # another loopback address (127.0.0.2): another remote
    ) -> None:
        self.port = port
        self.source = source
        self.answers: list[tuple[float, Hj212Message]] = []
        self.closed = asyncio.Event()
        self._on_answer = on_answer
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Gateway:
        local = None if self.source is None else (self.source, 0)
        reader, self._writer = await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=local
        )
        self._reader = asyncio.create_task(self._read(reader))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._writer is not None and self._reader is not None
        self._writer.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        decoder = Hj212Decoder()
        while data := await reader.read(4096):
            for message in decoder.feed(data):
                if self._on_answer is not None:
                    self._on_answer(message)  # sees the database as the answer arrives
                self.answers.append((time.monotonic(), message))
        self.closed.set()

    async def write(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)
        await self._writer.drain()

    def answered(self, qn: str) -> list[Hj212Message]:
        return [m for _, m in self.answers if m.qn == qn]

    async def answer(self, qn: str, *, count: int = 1, timeout: float = 10) -> Hj212Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.answered(qn)
            if len(found) >= count:
                return found[-1]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no answer #{count} to {qn} within {timeout} s: {self.answers}")

    async def send(self, data: bytes, qn: str, *, count: int = 1) -> Hj212Message:
        await self.write(data)
        return await self.answer(qn, count=count)


@asynccontextmanager
async def running(
    db: Database,
    *,
    commit: Callable[[list[Packet]], BatchOutcome] | None = None,
    idle_timeout_s: float = 30.0,
    store: Hj212Store | None = None,  # with its own hasher and limiter
) -> AsyncIterator[Hj212Server]:
    settings = Hj212Settings(port=0, idle_timeout_s=idle_timeout_s, window_s=0.02)
    if commit is None:
        store = store or Hj212Store(db)
        server = Hj212Server(store.commit, settings, limiter=store.limiter)
    else:
        server = Hj212Server(commit, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    await asyncio.wait_for(server.ready.wait(), 10)
    try:
        yield server
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def count(db: Database, table: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
