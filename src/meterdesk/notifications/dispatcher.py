"""The delivery worker: claims due outbox rows, waits out quiet hours, renders, sends through
the channel adapters, retries with backoff, and records every attempt.

Run one per process (``await Dispatcher(...).run(stop)``); on PostgreSQL several processes can
run side by side (rows are claimed with ``FOR UPDATE SKIP LOCKED``), on SQLite run one. Database
work runs in worker threads (``asyncio.to_thread``) so sends of one batch overlap, up to
``concurrency`` at a time — except one recipient's (channel and address), which leave one
after another in the order they were queued. A transaction of this process that queues messages wakes the
dispatcher when it commits (:mod:`meterdesk.db.commit_signals`), so an alarm or a "cut" message
leaves at once; the idle poll stays for rows queued by other processes and for retries.

Per message:
1. channel switched off (or removed) since it was queued → ``suppressed``; too little of the
   batch's lease left for a send (``send_timeout_s``) → back to ``pending`` at once, unsent and
   not counted, so no other worker can claim it while it is still being sent;
2. a normal-urgency message inside the organisation's quiet hours → back to ``pending`` until
   the window ends in the site's zone (not counted as an attempt);
3. render (a broken template fails the message with the error; fix it and retry it);
4. send with a timeout: success → ``sent`` with the provider's message id; a transient error →
   ``pending`` again after :func:`~meterdesk.notifications.model.retry_delay`, or ``failed``
   once ``max_attempts`` are used; a permanent error → ``failed`` at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from meterdesk.db import commit_signals
from meterdesk.db.database import Database
from meterdesk.notifications import model, outbox
from meterdesk.notifications.channels.base import (
    DeliveryError,
    OutgoingMessage,
    PermanentDeliveryError,
)
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.configuration import ChannelSetting, channel_settings, quiet_hours_of
from meterdesk.notifications.model import QuietHours, Urgency
from meterdesk.notifications.outbox import Claimed, Outcome
from meterdesk.notifications.rendering import Renderer, RenderError
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.time import zone


@dataclass(frozen=True)
class _Batch:
    claimed: list[Claimed]
    settings: Mapping[tuple[int, str], ChannelSetting]
    quiet: Mapping[int, QuietHours]
    lease_ends: datetime  # after this, another worker may claim (and send) the same rows


@dataclass
class Dispatcher:
    db: Database
    registry: ChannelRegistry = field(default_factory=ChannelRegistry)
    renderer: Renderer = field(default_factory=Renderer)
    batch_size: int = 50
    concurrency: int = 10
    lease: timedelta = timedelta(minutes=5)
    send_timeout_s: float = 60.0
    max_attempts: int = model.MAX_ATTEMPTS

    def __post_init__(self) -> None:
        # With less lease than one send, every message would be given back unsent, for ever.
        if self.lease <= timedelta(seconds=self.send_timeout_s):
            raise ValueError(f"lease {self.lease} must exceed send_timeout_s {self.send_timeout_s}")

    async def run(self, stop: asyncio.Event, *, idle_s: float = 1.0) -> None:
        """Deliver until ``stop`` is set. Whenever nothing was due, wait until a transaction of
        this process queues messages (it wakes us at commit), ``stop``, or ``idle_s`` (rows
        queued by other processes, retries falling due)."""
        wake = asyncio.Event()
        unsubscribe = commit_signals.wake_on_commit(
            self.db.engine, commit_signals.NOTIFICATIONS, wake
        )
        try:
            while not stop.is_set():
                wake.clear()
                if await self.run_once() == 0:
                    await _first_of(stop, wake, idle_s)
        finally:
            unsubscribe()

    async def run_once(self) -> int:
        """Claim one batch of due messages and deliver it; returns how many were claimed."""
        batch = await asyncio.to_thread(self._claim, self.db.clock())
        if not batch.claimed:
            return 0
        gate = asyncio.Semaphore(self.concurrency)

        async def one(claimed: Claimed) -> None:
            async with gate:
                try:
                    outcome = await self._attempt(claimed, batch)
                except Exception as error:  # a bug for one message must not stop the batch
                    why = f"unexpected {type(error).__name__}: {error}"
                    outcome = self._again(claimed, why, self.db.clock())
            await asyncio.to_thread(self._record, claimed, outcome)

        async def in_order(messages: list[Claimed]) -> None:
            for claimed in messages:
                await one(claimed)

        # One recipient's messages go one after another, in the order they were queued (a
        # tenant must not read the level 2 alarm before level 1 when a batch crossed both);
        # different recipients' go at once, up to the gate.
        by_recipient: dict[tuple[str, str], list[Claimed]] = {}
        for claimed in batch.claimed:  # claimed in id order
            by_recipient.setdefault((claimed.channel, claimed.address), []).append(claimed)
        await asyncio.gather(*(in_order(messages) for messages in by_recipient.values()))
        return len(batch.claimed)

    async def drain(self, *, rounds: int = 100) -> int:
        """Run until nothing is due now (tests, the demo); returns how many were handled."""
        handled = 0
        for _ in range(rounds):
            count = await self.run_once()
            if count == 0:
                break
            handled += count
        return handled

    def _claim(self, now: datetime) -> _Batch:
        with self.db.transaction() as conn:
            outbox.give_up_abandoned(conn, now=now, max_attempts=self.max_attempts)
            claimed = outbox.claim_due(conn, now=now, limit=self.batch_size, lease=self.lease)
            organisations = sorted({item.organisation_id for item in claimed})
            settings = {
                (setting.organisation_id, setting.channel.value): setting
                for organisation_id in organisations
                for setting in channel_settings(conn, organisation_id)
            }
            quiet = quiet_hours_of(conn, organisations) if organisations else {}
        return _Batch(claimed, settings, quiet, now + self.lease)

    def _record(self, claimed: Claimed, outcome: Outcome) -> None:
        with self.db.transaction() as conn:
            outbox.record(conn, claimed, outcome, now=self.db.clock())

    async def _attempt(self, claimed: Claimed, batch: _Batch) -> Outcome:
        now = self.db.clock()
        setting = batch.settings.get((claimed.organisation_id, claimed.channel))
        if setting is None or not setting.enabled:
            return Outcome("suppressed", error=f"channel {claimed.channel} is not enabled")
        if now + timedelta(seconds=self.send_timeout_s) > batch.lease_ends:
            # A batch waits for the concurrency gate: the last ones may start so late that their
            # claim runs out mid-send, when another worker may send them too. Give them back.
            return Outcome("deferred", error="claim ran out before sending", next_attempt_at=now)
        try:
            tz = zone(claimed.timezone)
        except ValidationError as error:  # a zone this system's tzdata lacks: no retry helps
            return Outcome("failed", error=str(error))
        quiet = batch.quiet.get(claimed.organisation_id)
        if claimed.urgency is Urgency.NORMAL and quiet is not None:
            ends = quiet.ends_at(now, tz)
            if ends is not None:
                return Outcome("deferred", error="quiet hours", next_attempt_at=ends)
        try:
            message = self._message(claimed)
            adapter = self.registry.adapter(setting)
            result = await asyncio.wait_for(adapter.send(message), self.send_timeout_s)
        except (RenderError, PermanentDeliveryError) as error:
            return Outcome("failed", error=str(error))
        except DeliveryError as error:
            return self._again(claimed, str(error), now)
        except TimeoutError:
            return self._again(claimed, f"no answer within {self.send_timeout_s:g} s", now)
        except Exception as error:  # an adapter bug must not stop the worker; try again later
            return self._again(claimed, f"unexpected {type(error).__name__}: {error}", now)
        return Outcome("sent", provider_message_id=result.provider_message_id, detail=result.detail)

    def _again(self, claimed: Claimed, error: str, now: datetime) -> Outcome:
        if model.gives_up(claimed.attempts, self.max_attempts):
            return Outcome("failed", error=f"gave up after {claimed.attempts} attempts: {error}")
        delay = model.retry_delay(claimed.attempts, seed=claimed.id)
        return Outcome("retry", error=error, next_attempt_at=now + delay)

    def _message(self, claimed: Claimed) -> OutgoingMessage:
        rendered = self.renderer.render(
            template=claimed.template_key,
            language=claimed.language,
            params=claimed.params,
            tz=zone(claimed.timezone),
        )
        return OutgoingMessage(
            outbox_id=claimed.id,
            organisation_id=claimed.organisation_id,
            event_kind=claimed.event_kind,
            template_key=claimed.template_key,
            channel=claimed.channel,
            address=claimed.address,
            language=claimed.language,
            subject=rendered.subject,
            text=rendered.text,
            voice_text=rendered.voice,
            html=rendered.html,
            values=rendered.values,
            params=claimed.params,
            created_at=claimed.created_at,
            attempt=claimed.attempts,
        )


async def _first_of(stop: asyncio.Event, wake: asyncio.Event, timeout_s: float) -> None:
    """Return when ``stop`` or ``wake`` is set, or after ``timeout_s``."""
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
