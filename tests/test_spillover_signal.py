"""What the spillover shell reads into the policy's signal, against a real redis-server."""

from __future__ import annotations

import redis.asyncio as aredis

from scheduler.config import RendererEndpoint
from scheduler.dispatch.fleet import Fleet
from scheduler.dispatch.spillover import Spillover
from scheduler.policy import PolicyConfig
from scheduler.pools.base import PoolStats


async def test_the_signal_carries_ready_and_starting_slots_apart(
    redis_client: aredis.Redis,
) -> None:
    """The second fleet's ready and starting slots, as its pool reports them, reach the
    policy apart: starting containers are not counted as ready."""
    fleet = Fleet(redis_client, eject_after=1)
    await fleet.seed([RendererEndpoint("127.0.0.1:1", 2)])
    spillover = Spillover(
        redis_client, PolicyConfig(), inhouse_pool="inhouse", spill_pool="modal", fleet=fleet
    )
    stats = PoolStats(containers=3, ready_slots=2, starting_slots=4)
    _, _, signal, _ = await spillover.read(stats, True)
    assert (signal.modal_ready_slots, signal.modal_starting_slots) == (2, 4)
    _, _, idle, _ = await spillover.read(None, True)
    assert (idle.modal_ready_slots, idle.modal_starting_slots) == (0, 0)
