"""Stopping asyncio tasks for certain, on Python 3.11.

Python 3.11's ``asyncio.wait_for`` (used inside libraries such as aiomqtt) returns the inner
result and *swallows* a cancellation that lands in the same loop iteration as that result
(CPython gh-86296, fixed in 3.12). A task cancelled once can therefore go on running — seen as a
simulated gateway that kept publishing after its test had stopped it, and the test hanging in
its teardown. :func:`cancel_and_wait` cancels again until every task has really finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

#: How often a task that swallowed its cancellation is cancelled again.
RECANCEL_S = 0.1


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]]) -> None:
    """Cancel ``tasks`` and wait until each is done (cancelled, failed or finished)."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)


async def until_first_ends(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Run ``tasks`` until one of them ends, stop the others for certain, and raise the error an
    ended one raised (a gateway's session: its send loop, its receive loop, an uplink cut)."""
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(tasks)
    for task in done:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error
