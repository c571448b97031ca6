"""Wrong HJ212 passwords are limited per MN and per remote address, on real TCP sockets: the
argon2 verifications are counted by wrapping the hasher, the limiter's clock is moved by hand."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest
from argon2 import PasswordHasher
from builders import ACTOR
from hj212_world import A1, PASSWORD, SERIAL, Gateway, make_site, packet, running

from meterdesk.db.database import Database
from meterdesk.devices import service as devices
from meterdesk.devices.hj212.limit import PasswordLimiter
from meterdesk.devices.hj212.server import Hj212Server
from meterdesk.devices.hj212.store import Hj212Store

pytestmark = pytest.mark.integration
SERIAL2 = "HJ212GW0000000000000002"
LOCAL_0815 = "20261102081500"


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__()
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified += 1
        return super().verify(hash, password)


class Seconds:
    """The limiter's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limited_store(db: Database, clock: Seconds, **limits: int) -> tuple[Hj212Store, CountingHasher]:
    hasher = CountingHasher()
    limiter = PasswordLimiter(window_s=600, lockout_s=(60, 3600), clock=clock, **limits)
    return Hj212Store(db, hasher=hasher, limiter=limiter), hasher


def data(qn: str, *, pw: str = PASSWORD, mn: str = SERIAL) -> bytes:
    return packet(qn, LOCAL_0815, {f"{A1}-Cou": "1010"}, pw=pw, mn=mn)


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.02)


async def refused(server: Hj212Server, gateway: Gateway, payload: bytes) -> None:
    """Send one packet that gets no answer and wait until its batch has committed."""
    before = server.stats.messages
    await gateway.write(payload)
    await until(lambda: server.stats.messages > before, "the packet was committed")


def second_gateway(db: Database, site_org_id: int, site_id: int) -> None:
    devices.create_gateway(
        db,
        organisation_id=site_org_id,
        site_id=site_id,
        serial=SERIAL2,
        name="second HJ212 gateway",
        uplink="hj212",
        access_password=PASSWORD,
        actor=ACTOR,
    )


def test_the_guess_past_the_limit_is_not_verified_and_the_lockout_ends(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    make_site(db, (A1,))
    clock = Seconds()
    store, hasher = limited_store(db, clock, per_mn=3, per_address=100)
    caplog.set_level(logging.WARNING, logger="meterdesk.devices.hj212.limit")

    async def scenario() -> None:
        async with running(db, store=store) as server:
            port = server.port or 0
            async with Gateway(port) as guesser:
                for i in range(3):
                    await refused(server, guesser, data(f"w{i}", pw=f"guess{i}"))
                await asyncio.wait_for(guesser.closed.wait(), 5)  # it hit the limit: closed
            assert hasher.verified == 3
            async with Gateway(port) as guesser:  # a new connection, a new guess: unverified
                await refused(server, guesser, data("w3", pw="guess3"))
                await asyncio.wait_for(guesser.closed.wait(), 5)
                async with Gateway(port) as gateway:  # the right password, never verified yet
                    await refused(server, gateway, data("r0"))
                    await asyncio.wait_for(gateway.closed.wait(), 5)
            assert hasher.verified == 3
            assert (server.connection_stats.lockouts.lockouts, store.limiter.stats.refused) == (
                1,
                2,
            )
            clock.now += 61  # the lock-out (60 s) is over: the corrected gateway recovers
            async with Gateway(port) as gateway:
                await gateway.send(data("r1"), "r1")
            assert hasher.verified == 4

    asyncio.run(scenario())
    lockouts = [r.getMessage() for r in caplog.records if "locked out" in r.getMessage()]
    assert lockouts == [
        f"HJ212: gateway locked out for 60 s after wrong passwords: MN '{SERIAL}' from 127.0.0.1"
    ]


def test_a_right_password_before_the_limit_resets_the_count(db: Database) -> None:
    make_site(db, (A1,))
    store, hasher = limited_store(db, Seconds(), per_mn=3, per_address=100)

    async def scenario() -> None:
        async with running(db, store=store) as server, Gateway(server.port or 0) as gateway:
            for i in range(2):
                await refused(server, gateway, data(f"w{i}", pw=f"guess{i}"))
            await gateway.send(data("r0"), "r0")
            for i in range(2, 4):
                await refused(server, gateway, data(f"w{i}", pw=f"guess{i}"))
            await gateway.send(data("r1"), "r1")  # still open, still answered
            assert not gateway.closed.is_set()
            assert server.connection_stats.lockouts.lockouts == 0
            assert hasher.verified == 5  # the right one once, then remembered

    asyncio.run(scenario())


def test_a_locked_mn_leaves_other_gateways_alone(db: Database) -> None:
    site = make_site(db, (A1,))
    second_gateway(db, site.org.id, site.org.site_id)
    store, hasher = limited_store(db, Seconds(), per_mn=3, per_address=100)

    async def scenario() -> None:
        async with running(db, store=store) as server:
            port = server.port or 0
            async with Gateway(port) as guesser:
                for i in range(3):
                    await refused(server, guesser, data(f"w{i}", pw=f"guess{i}"))
            async with Gateway(port, source="127.0.0.2") as gateway:  # the MN, from anywhere
                await refused(server, gateway, data("r0"))
                await asyncio.wait_for(gateway.closed.wait(), 5)
            assert hasher.verified == 3
            async with Gateway(port) as gateway:  # another MN, from the guesser's address
                await gateway.send(data("s0", mn=SERIAL2), "s0")
            assert hasher.verified == 4

    asyncio.run(scenario())


def test_a_locked_address_leaves_other_addresses_alone(db: Database) -> None:
    site = make_site(db, (A1,))
    second_gateway(db, site.org.id, site.org.site_id)
    store, hasher = limited_store(db, Seconds(), per_mn=3, per_address=4)

    async def scenario() -> None:
        async with running(db, store=store) as server:
            port = server.port or 0
            async with Gateway(port, source="127.0.0.2") as guesser:  # 2 guesses at each MN
                for i, mn in enumerate((SERIAL, SERIAL2, SERIAL, SERIAL2)):
                    await refused(server, guesser, data(f"w{i}", pw=f"guess{i}", mn=mn))
                await asyncio.wait_for(guesser.closed.wait(), 5)
            async with Gateway(port, source="127.0.0.2") as gateway:  # any MN from there
                await refused(server, gateway, data("r0"))
                await asyncio.wait_for(gateway.closed.wait(), 5)
            assert hasher.verified == 4
            async with Gateway(port) as gateway:  # neither MN is locked, 127.0.0.1 is not
                await gateway.send(data("r1"), "r1")
                await gateway.send(data("s1", mn=SERIAL2), "s1")
            assert server.connection_stats.lockouts.lockouts == 1

    asyncio.run(scenario())
