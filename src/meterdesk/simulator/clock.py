"""Simulation time: real time by default, accelerated for the demo, and the host's zone.

``AcceleratedClock`` shows ``start + speed × (real time elapsed)``; with ``speed = 1`` and
``start = now`` it is real time (measured on the monotonic clock, so a wall-clock step on the
host does not make the simulation jump). Every clock here is a ``meterdesk.shared.time.Clock``
(a callable returning an aware UTC instant) with a ``speed`` that the gateway uses to turn
simulated intervals into real sleeps.

The meters' default zone is the host's own: a meter's clock is set by whoever installed it,
and a master on the same machine (like the independent DL/T 645 peer) writes command deadlines
in the host's local wall time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class SimulationClock(Protocol):
    speed: float

    def __call__(self) -> datetime: ...


class AcceleratedClock:
    """``start + speed × elapsed``; ``AcceleratedClock()`` is real time."""

    def __init__(
        self,
        start: datetime | None = None,
        speed: float = 1.0,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.start = datetime.now(UTC) if start is None else start.astimezone(UTC)
        self.speed = speed
        self._monotonic = monotonic
        self._real_start = monotonic()

    def __call__(self) -> datetime:
        elapsed = self._monotonic() - self._real_start
        return self.start + timedelta(seconds=elapsed * self.speed)

    def real_seconds(self, simulated_s: float) -> float:
        return simulated_s / self.speed


def _zone_named(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name.removeprefix(":"))
    except (ZoneInfoNotFoundError, ValueError):
        return None


def host_zone() -> tzinfo:
    """The host's IANA zone (``TZ``, ``/etc/localtime``, ``/etc/timezone``), else its offset."""
    candidates = [os.environ.get("TZ", "")]
    localtime = Path("/etc/localtime")
    if localtime.is_symlink():
        candidates.append(str(localtime.resolve()).partition("zoneinfo/")[2])
    timezone_file = Path("/etc/timezone")
    if timezone_file.is_file():
        candidates.append(timezone_file.read_text(encoding="utf-8").strip())
    for name in candidates:
        if name and (zone := _zone_named(name)) is not None:
            return zone
    local = datetime.now(UTC).astimezone().tzinfo
    return local if local is not None else UTC
