"""The start gate of a spilled render: one entry in a `modal.Dict`, written once, by
whichever side comes first. The container writes `STARTED` before any GPU work; the
scheduler writes `RECALLED` to take a job back that has not started. Both write with
`put(key, value, skip_if_exists=True)`, which tells the writer whether it wrote, so
exactly one side wins: a recalled input never renders, and a started one is never
recalled.

The key is the job id and the lease the input was spawned under, so that the job's
next placement, under a new lease, has a gate of its own. Entries are never deleted:
Modal drops a Dict entry after 7 days without reads or writes (modal 1.6.4, `Dict`'s
docstring), long after any input could still run.

Standard library only, like `renderer.remote`: the scheduler and the container both
import it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)

STARTED = "started"
RECALLED = "recalled"
CONTAINER_TIMEOUT_S = 10.0
"""How long the container waits for the gate before it renders anyway."""


class _Put(Protocol):
    async def aio(self, key: Any, value: Any, /, *, skip_if_exists: bool = False) -> bool: ...


class _Get(Protocol):
    async def aio(self, key: Any, default: Any | None = None, /) -> Any: ...


class GateDict(Protocol):
    """The parts of a `modal.Dict` the gate uses, in their `.aio` forms."""

    @property
    def put(self) -> _Put: ...
    @property
    def get(self) -> _Get: ...


def gate_key(job_id: str, lease: int) -> str:
    return f"{job_id}:{lease}"


async def may_start(gate: GateDict, key: str) -> bool:
    """The container's side: whether this input may render. It may once it wrote
    `STARTED`, or found it there (Modal ran the input again after its container was
    lost, and the scheduler had already lost the race to its first run). It may not
    once the scheduler wrote `RECALLED`.

    A gate that fails or does not answer within `CONTAINER_TIMEOUT_S` lets the input
    render: the job must not be lost to a gate outage, and should the scheduler have
    recalled it meanwhile, the store refuses the recalled attempt's result, so only a
    render's GPU time is wasted."""
    try:
        async with asyncio.timeout(CONTAINER_TIMEOUT_S):
            if await gate.put.aio(key, STARTED, skip_if_exists=True):
                return True
            return bool(await gate.get.aio(key) != RECALLED)
    except Exception:
        log.exception("the start gate %s failed; rendering without it", key)
        return True
