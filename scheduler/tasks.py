"""Helpers for the background tasks each component owns."""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)


def cancel_requested() -> bool:
    """Whether someone asked the current task to stop.

    A loop that logs and retries on errors must check this: redis-py can turn a
    cancellation that lands mid-command into a ConnectionError as it drops the
    connection, and retrying then would swallow the request to stop.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def cancel_and_wait(task: asyncio.Task[None], timeout_s: float = 5.0) -> None:
    """Cancels a task and waits for it, but not forever: shutdown must finish even if a
    library swallowed the cancellation, so an overrun is logged and left behind."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        log.error(
            "task %s did not stop within %.0f s of being cancelled", task.get_name(), timeout_s
        )
        return
    with contextlib.suppress(asyncio.CancelledError):
        task.result()
