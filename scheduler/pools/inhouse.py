"""The in-house fleet: gRPC `Renderer` endpoints, each with a number of slots."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
from spillway.v1 import renderer_pb2_grpc

from scheduler.config import RendererEndpoint
from scheduler.jobs import Job
from scheduler.pools.base import Pool, PoolStats, Rendered, RenderHooks, Slot
from scheduler.pools.stream import CHANNEL_OPTIONS, stream_render


@dataclass
class _Endpoint:
    address: str
    slots: int
    stub: renderer_pb2_grpc.RendererStub
    channel: grpc.aio.Channel
    busy: int = 0


@dataclass
class _InhouseSlot(Slot):
    endpoint: _Endpoint
    pool: InhousePool
    released: bool = field(default=False)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.pool._give_back(self.endpoint)


class InhousePool(Pool):
    name = "inhouse"

    def __init__(
        self, endpoints: tuple[RendererEndpoint, ...], *, timeout_s: float, tmp_dir: Path | None
    ) -> None:
        self._endpoints = []
        for e in endpoints:
            channel = grpc.aio.insecure_channel(e.address, options=CHANNEL_OPTIONS)
            stub = renderer_pb2_grpc.RendererStub(channel)
            self._endpoints.append(_Endpoint(e.address, e.slots, stub, channel))
        self._timeout_s = timeout_s
        self._tmp_dir = tmp_dir or Path(tempfile.gettempdir())
        self._freed = asyncio.Event()

    async def stats(self) -> PoolStats:
        """Every endpoint counts as an up container; all its slots are ready."""
        return PoolStats(
            containers=len(self._endpoints),
            ready_slots=sum(e.slots for e in self._endpoints),
        )

    async def acquire(self) -> Slot:
        while True:
            endpoint = max(self._endpoints, key=lambda e: e.slots - e.busy)
            if endpoint.busy < endpoint.slots:
                endpoint.busy += 1
                return _InhouseSlot(endpoint, self)
            self._freed.clear()
            await self._freed.wait()

    def _give_back(self, endpoint: _Endpoint) -> None:
        endpoint.busy -= 1
        self._freed.set()

    async def render(self, slot: Slot, job: Job, hooks: RenderHooks) -> Rendered:
        assert isinstance(slot, _InhouseSlot)
        endpoint = slot.endpoint
        rendered = await stream_render(
            endpoint.stub,
            job,
            hooks,
            address=endpoint.address,
            timeout_s=self._timeout_s,
            tmp_dir=self._tmp_dir,
        )
        # A renderer calls the first render after its own start cold; but in-house
        # renderers are up before any job is sent to them, so no input waits for a boot
        # (Modal's meaning of cold, which the policy's estimates and the traces use).
        info = replace(rendered.info, cold_start=False, boot_s=0.0, restore_s=0.0)
        return replace(rendered, info=info)

    async def close(self) -> None:
        for endpoint in self._endpoints:
            await endpoint.channel.close()
