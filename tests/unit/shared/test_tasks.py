"""cancel_and_wait stops a task even when its first cancellation is swallowed (as Python 3.11's
asyncio.wait_for can do inside libraries)."""

from __future__ import annotations

import asyncio

from meterdesk.shared.tasks import cancel_and_wait


def test_a_task_that_swallows_its_first_cancellation_is_still_stopped() -> None:
    swallowed = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.append(True)  # carries on, as a swallowed cancellation does
        await asyncio.sleep(3600)

    async def scenario() -> asyncio.Task[None]:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        await asyncio.wait_for(cancel_and_wait([task]), timeout=5)
        return task

    task = asyncio.run(scenario())
    assert swallowed == [True] and task.cancelled()


def test_finished_tasks_and_no_tasks_are_fine() -> None:
    async def scenario() -> None:
        done = asyncio.create_task(asyncio.sleep(0))
        await done
        await cancel_and_wait([done])
        await cancel_and_wait([])

    asyncio.run(scenario())
