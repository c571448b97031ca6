"""``meterdesk run``: the one long-running process that connects the platform to its meters.

It runs, side by side in one asyncio loop:

- the **poller** (:mod:`meterdesk.devices.poller`): every bus on its schedule, readings into the
  money core in batches. Its plans are reloaded when the meter-configuration change marker moves
  (a meter linked, unlinked or created), checked every ``reload_check_s``; the meters' online
  state carries over the reload.
- the **command executor** (:mod:`meterdesk.devices.commands.executor`): due commands go out
  through the *poller's* connection to the meter's bus, so a command and a poll never overlap on
  one line; MQTT-gateway meters get their commands through the MQTT ingest connection.
- **MQTT ingest** (:mod:`meterdesk.devices.mqtt_ingest`), when a broker is configured.
- **HJ212 server** (:mod:`meterdesk.devices.hj212.server`), when a listen address is given.
- the **notification dispatcher** (:mod:`meterdesk.notifications.dispatcher`).
- the **control tick** (:mod:`meterdesk.billing.control_tick`) every ``tick_interval_s``:
  deferred cuts after friendly hours, repeated alarms, days-of-credit forecasts, and the
  decision put back on meters that show otherwise (at most once per ``reassert_interval_s``).
- the **meter-billing check** every ``meter_billing_check_s``: a meter that bills itself gets the
  price table of its tariff in force today written to it (:mod:`meterdesk.devices.price_sync`),
  and one whose money or purchases differ from the ledger's is announced to the operators
  (:mod:`meterdesk.devices.money_watch`).
- the **deduction summaries** every ``summary_check_s``: for each organisation with summaries
  on, the latest complete local day or month is summarised to each tenant who used anything
  (:mod:`meterdesk.billing.summaries`); one query of an empty table while nobody has them on.
- the **gateway watchdog** (:mod:`meterdesk.devices.gateway_watchdog`), when MQTT ingest runs here,
  every ``gateway_check_s``: an MQTT gateway silent for ``gateway_silence_s`` (or 3 of its report
  intervals, when longer) is marked lost with its meters and announced (``gateway_offline``).
  While this process's own MQTT connection is down it waits: that silence is not the gateways'.
  With the HJ212 server, a second watchdog does the same for HJ212 gateways while it listens.

Time is injectable so tests and the demo can run all of it in accelerated time: ``clock`` gives
the instant (it must be the database's clock too), and ``speed`` turns simulated intervals into
real sleeps. One part failing (a broken bus, the broker away) is logged and retried; it never
stops the others. :meth:`Runtime.run` returns when ``stop`` is set, after the poller has flushed
what it read and the executor has finished the attempts in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from meterdesk.billing import control_tick, summaries
from meterdesk.db import counters
from meterdesk.db.database import Database
from meterdesk.devices import gateway_watchdog, money_watch, price_sync
from meterdesk.devices import service as devices
from meterdesk.devices.commands.executor import CommandExecutor, ExecutorConfig
from meterdesk.devices.commands.model import CommandTarget
from meterdesk.devices.hj212.gateways import HJ212
from meterdesk.devices.hj212.server import Hj212Server, Hj212Settings, make_server
from meterdesk.devices.mqtt_driver import ControlChannel, MqttGatewayDriver, device_status_snapshot
from meterdesk.devices.mqtt_ingest import MqttIngestService, MqttSettings
from meterdesk.devices.mqtt_store import UplinkStore
from meterdesk.devices.poller import (
    BusOpener,
    BusPlan,
    DatabaseSink,
    Poller,
    PollerSettings,
    ScaledPollClock,
    default_opener,
)
from meterdesk.devices.ports import BusUnavailableError, MeterAddress, MeterDriver, Snapshot
from meterdesk.devices.status import StatusBook
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.dispatcher import Dispatcher
from meterdesk.shared.time import Clock

log = logging.getLogger(__name__)
RESTART_DELAY_S = 5.0  # real seconds before a failed part is started again


@dataclass(frozen=True)
class RuntimeSettings:
    mqtt: MqttSettings | None = None  # None: no MQTT ingest (and no MQTT-gateway commands)
    hj212: Hj212Settings | None = None  # None: no HJ212 server
    tick_interval_s: float = 60.0
    reassert_interval_s: float = 3600.0  # a drifted meter gets at most one command per interval
    reload_check_s: float = 10.0
    gateway_check_s: float = 60.0  # how often the watchdogs look for silent MQTT/HJ212 gateways
    # an MQTT gateway silent this long (or 3 of its buses' poll_interval_s, when longer) is lost
    gateway_silence_s: float = 900.0
    # how often meters that bill themselves are given their tariff's prices of today and
    # compared with the ledger (differences go to the operators)
    meter_billing_check_s: float = 3600.0
    # how often the deduction summaries look for a newly complete day or month
    summary_check_s: float = 300.0
    dispatch_idle_s: float = 1.0
    poller: PollerSettings = field(default_factory=PollerSettings)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    speed: float = 1.0  # simulated seconds per real second (the clock's pace)


@dataclass
class RuntimeStats:
    ticks: int = 0
    tick_decisions: int = 0
    tick_reasserted: int = 0
    tick_errors: int = 0
    gateways_lost: int = 0  # MQTT and HJ212 gateways the watchdogs marked lost
    watchdog_errors: int = 0
    price_writes_queued: int = 0  # write_prices for meters that bill themselves (price_sync)
    money_differences: int = 0  # meter_money_differs queued or already told today
    meter_billing_errors: int = 0
    summaries_queued: int = 0  # deduction_summary messages queued
    summary_errors: int = 0
    poller_reloads: int = 0
    reads: int = 0
    read_failures: int = 0
    readings_stored: int = 0


class Runtime:
    """See the module docstring. ``registry`` builds the notification channels (tests and the
    demo override adapters there); ``opener`` opens a bus (tests may give fakes)."""

    def __init__(
        self,
        db: Database,
        settings: RuntimeSettings | None = None,
        *,
        clock: Clock | None = None,
        registry: ChannelRegistry | None = None,
        opener: BusOpener = default_opener,
    ) -> None:
        self.db = db
        self.settings = settings or RuntimeSettings()
        self.clock = clock or db.clock
        self.stats = RuntimeStats()
        self.poller: Poller | None = None
        self.mqtt: MqttIngestService | None = None
        self.hj212: Hj212Server | None = None  # the current one (a new one after a restart)
        self.poller_ready = asyncio.Event()  # the first poller has opened its buses
        self._opener = opener
        self._control: ControlChannel | None = None
        self.executor = CommandExecutor(
            db, self.driver_for, config=self.settings.executor, clock=self.clock, sleep=self.sleep
        )
        self.dispatcher = Dispatcher(db, registry or ChannelRegistry(clock=self.clock))

    async def sleep(self, simulated_s: float) -> None:
        await asyncio.sleep(max(simulated_s, 0.0) / self.settings.speed)

    async def run(self, stop: asyncio.Event) -> None:
        _enough_threads(self.settings.executor.concurrency + self.dispatcher.concurrency)
        parts: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("poller", lambda: self._poll(stop)),
            ("executor", lambda: self._execute(stop)),
            ("dispatcher", lambda: self.dispatcher.run(stop, idle_s=self.settings.dispatch_idle_s)),
            ("control tick", lambda: self._tick(stop)),
            ("meter billing", lambda: self._meter_billing(stop)),
            ("summaries", lambda: self._summaries(stop)),
        ]
        mqtt = self.settings.mqtt
        if mqtt is not None:
            service = MqttIngestService(UplinkStore(self.db).commit, mqtt)
            self.mqtt, self._control = service, ControlChannel(service.publish)
            service.on_control_reply = self._control.on_control_reply
            parts.append(("MQTT ingest", lambda: service.run(stop)))
            # Only a process that listens can tell a silent gateway from its own outage.
            parts.append(("gateway watchdog", lambda: self._watch_gateways(service.ready, stop)))
        if self.settings.hj212 is not None:
            parts.append(("HJ212 ingest", lambda: self._hj212(stop)))
        tasks = [asyncio.create_task(_supervised(name, part, stop)) for name, part in parts]
        try:
            await stop.wait()
        finally:
            stop.set()
            self.executor.stop()
            if self.poller is not None:
                self.poller.stop()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _hj212(self, stop: asyncio.Event) -> None:
        """The HJ212 server and, beside it, the watchdog of the gateways it listens to."""
        assert self.settings.hj212 is not None
        server = self.hj212 = make_server(self.db, self.settings.hj212)
        watching = asyncio.create_task(self._watch_gateways(server.ready, stop, uplink=HJ212))
        try:
            await server.run(stop)
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)

    # --- commands -------------------------------------------------------------------------

    def driver_for(self, target: CommandTarget) -> MeterDriver:
        """The driver of the poller's connection to the meter's bus; MQTT-gateway meters go
        through the ingest connection. Raises BusUnavailableError while a bus is (re)opening,
        LookupError when the meter can never be reached from here."""
        if target.bus_id is None:
            raise LookupError(f"meter {target.number} is on no bus")
        if target.transport == "mqtt":
            if self._control is None:
                raise LookupError(f"meter {target.number} is behind an MQTT gateway: no broker set")
            return MqttGatewayDriver(self._control, self._snapshot_of, clock=self.clock)
        poller = self.poller
        if poller is None or target.bus_id not in poller.connections:
            raise BusUnavailableError(f"bus {target.bus_id} of meter {target.number} not connected")
        return poller.connection(target.bus_id).driver

    async def _snapshot_of(self, meter: MeterAddress) -> Snapshot | None:
        return await asyncio.to_thread(device_status_snapshot, self.db, meter.meter_id)

    async def _execute(self, stop: asyncio.Event) -> None:
        # commands wait for the buses to open, so the first ones are not retried needlessly
        waiting = asyncio.create_task(self.poller_ready.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        stopping.cancel()
        if not stop.is_set():
            await self.executor.run()

    # --- polling --------------------------------------------------------------------------

    async def _poll(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            marker = await asyncio.to_thread(self._marker)
            plans = await asyncio.to_thread(devices.load_poll_plans, self.db)
            previous = self.poller
            status = await asyncio.to_thread(
                self.status_book, plans, previous.status if previous is not None else None
            )
            poller = Poller(
                plans,
                sink=DatabaseSink(self.db),
                clock=ScaledPollClock(self.clock, self.settings.speed),
                settings=self.settings.poller,
                status=status,
                opener=self._opener,
            )
            self.poller = poller
            running = asyncio.create_task(poller.run())
            await asyncio.sleep(0)  # run() opens the buses before its first await
            self.poller_ready.set()
            changed = await self._config_changed(marker, stop)
            poller.stop()
            await running
            self._count(poller)
            if changed:
                self.stats.poller_reloads += 1
                log.info("meter configuration changed: reloading the poller")

    def status_book(self, plans: list[BusPlan], book: StatusBook | None) -> StatusBook:
        """The previous poller's book (a reload), else one from the stored status."""
        return devices.stored_status_book(
            self.db, plans, lost_after=self.settings.poller.lost_after, previous=book
        )

    def _count(self, poller: Poller) -> None:
        self.stats.reads += poller.stats.reads
        self.stats.read_failures += poller.stats.failures
        self.stats.readings_stored += poller.stats.readings_flushed

    def _marker(self) -> int:
        with self.db.read() as conn:
            return counters.read(conn, counters.METER_CONFIG)

    async def _config_changed(self, marker: int, stop: asyncio.Event) -> bool:
        """Wait until the marker moves (True) or ``stop`` is set (False)."""
        while not await _wait(stop, self.settings.reload_check_s / self.settings.speed):
            try:
                if await asyncio.to_thread(self._marker) != marker:
                    return True
            except Exception:
                log.exception("runtime: reading the meter-configuration marker failed")
        return False

    # --- control tick ---------------------------------------------------------------------

    async def _tick(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                report = await asyncio.to_thread(
                    control_tick.tick,
                    self.db,
                    now=self.clock(),
                    reassert_interval=timedelta(seconds=self.settings.reassert_interval_s),
                )
            except Exception:
                self.stats.tick_errors += 1
                log.exception("control tick failed; trying again at the next one")
            else:
                self.stats.ticks += 1
                self.stats.tick_decisions += report.decisions
                self.stats.tick_reasserted += report.reasserted
            await _wait(stop, self.settings.tick_interval_s / self.settings.speed)

    # --- meters that bill themselves -------------------------------------------------------

    async def _meter_billing(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # Two steps, each on its own: prices that cannot be written must not keep the
            # operators from hearing about money that differs, nor the other way round.
            try:
                prices = await asyncio.to_thread(price_sync.sync_prices, self.db)
            except Exception:
                self.stats.meter_billing_errors += 1
                log.exception("price sync failed; trying again at the next check")
            else:
                self.stats.price_writes_queued += len(prices.queued)
            try:
                money = await asyncio.to_thread(money_watch.report_differences, self.db)
            except Exception:
                self.stats.meter_billing_errors += 1
                log.exception("meter-money comparison failed; trying again at the next check")
            else:
                self.stats.money_differences += len(money.differing)
            await _wait(stop, self.settings.meter_billing_check_s / self.settings.speed)

    # --- deduction summaries ---------------------------------------------------------------

    async def _summaries(self, stop: asyncio.Event) -> None:
        done: summaries.Done = set()  # periods this process has summarised: not read again
        while not stop.is_set():
            try:
                report = await asyncio.to_thread(
                    summaries.send_due, self.db, now=self.clock(), done=done
                )
            except Exception:
                self.stats.summary_errors += 1
                log.exception("deduction summaries failed; trying again at the next check")
            else:
                self.stats.summaries_queued += report.queued
                self.stats.summary_errors += report.failed
            await _wait(stop, self.settings.summary_check_s / self.settings.speed)

    # --- gateway watchdog -----------------------------------------------------------------

    async def _watch_gateways(
        self, listening: asyncio.Event, stop: asyncio.Event, *, uplink: str = "mqtt"
    ) -> None:
        def count(report: gateway_watchdog.WatchReport) -> None:
            self.stats.watchdog_errors += report.failed
            self.stats.gateways_lost += len(report.gateways)

        await gateway_watchdog.watch(
            self.db,
            listening=listening,
            stop=stop,
            clock=self.clock,
            check_s=self.settings.gateway_check_s,
            silence=timedelta(seconds=self.settings.gateway_silence_s),
            speed=self.settings.speed,
            on_report=count,
            uplink=uplink,
        )


_SIZED_LOOPS: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _enough_threads(workers: int) -> None:
    """Give the running loop a default thread pool with a thread for each of ``workers`` (command
    workers and notification sends) and the other parts, as each may be in the database at once.

    Every part does its database work through ``asyncio.to_thread``, and on SQLite a thread
    waiting for its writer turn (``db.database.WriterTurns``) holds its pool thread. The default
    pool has cores + 4 threads (6 on 2 cores): the writes of the command workers alone would
    fill it, and the MQTT group commit would then wait for a thread, not for the database."""
    loop = asyncio.get_running_loop()
    if loop in _SIZED_LOOPS:
        return
    threads = workers + _OTHER_THREADS
    loop.set_default_executor(ThreadPoolExecutor(threads, thread_name_prefix="meterdesk"))
    _SIZED_LOOPS.add(loop)


# the poller's writes, the MQTT and HJ212 group commits, the tick, the watchdogs, the checks
_OTHER_THREADS = 16


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop``; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(seconds, 0.0))
    return stop.is_set()


async def _supervised(name: str, part: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run ``part`` until ``stop``; restart it after RESTART_DELAY_S when it fails."""
    while not stop.is_set():
        try:
            await part()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("runtime: %s failed; restarting it in %g s", name, RESTART_DELAY_S)
            await _wait(stop, RESTART_DELAY_S)
        else:
            return


def run_until_stopped(
    runtime: Runtime, *, seconds: float | None = None, install_signals: bool = True
) -> RuntimeStats:
    """Run until SIGINT/SIGTERM (or ``seconds``), then stop cleanly and return the counters."""
    return asyncio.run(_run_until_stopped(runtime, seconds, install_signals))


async def _run_until_stopped(
    runtime: Runtime, seconds: float | None, install_signals: bool
) -> RuntimeStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if install_signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
    if seconds is not None:
        loop.call_later(seconds, stop.set)
    await runtime.run(stop)
    return runtime.stats
