"""The in-house fleet: gRPC `Renderer` endpoints, each with a number of slots.

Which endpoint runs a job is decided in Redis, by the claim script, across every
replica (see `scheduler.dispatch.fleet`): a claimed job arrives here with its `endpoint`, and the
pool only keeps one long-lived channel per address and streams the render.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from spillway.v1 import renderer_pb2_grpc

from scheduler.pools.base import Pool, PoolStats, Rendered, RenderError, RenderHooks, Slot
from scheduler.pools.stream import CHANNEL_OPTIONS, stream_render
from scheduler.store.jobs import Job


class _NoSlot(Slot):
    """The claim already reserved the job's slot on its endpoint, in Redis."""

    def release(self) -> None:
        pass


class InhousePool(Pool):
    name = "inhouse"

    def __init__(self, *, timeout_s: float, tmp_dir: Path | None) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._timeout_s = timeout_s
        self._tmp_dir = tmp_dir or Path(tempfile.gettempdir())

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels[address] = channel
        return channel

    async def stats(self) -> PoolStats:
        """Capacity lives in Redis (`Fleet.view`); the status RPC reads it there."""
        return PoolStats(containers=0, ready_slots=0)

    async def acquire(self) -> Slot:
        return _NoSlot()

    async def render(self, slot: Slot, job: Job, hooks: RenderHooks) -> Rendered:
        del slot
        if not job.endpoint:
            raise RenderError(
                f"job {job.id} was claimed for the in-house fleet without an endpoint",
                retryable=True,
                charge_attempt=False,
            )
        stub = renderer_pb2_grpc.RendererStub(self._channel(job.endpoint))
        rendered = await stream_render(
            stub,
            job,
            hooks,
            address=job.endpoint,
            timeout_s=self._timeout_s,
            tmp_dir=self._tmp_dir,
        )
        # A renderer calls the first render after its own start cold; but in-house
        # renderers are up before any job is sent to them, so no input waits for a boot
        # (Modal's meaning of cold, which the policy's estimates and the traces use).
        info = replace(rendered.info, cold_start=False, boot_s=0.0, restore_s=0.0)
        return replace(rendered, info=info)

    async def check(self, address: str, timeout_s: float) -> str:
        """Asks the endpoint's standard gRPC health service whether it serves. Returns ""
        if it does, else why not. Waits for the channel to connect (within the timeout)
        rather than failing at once while it backs off from an earlier failure, so a
        renderer that came back is seen as soon as it listens."""
        stub = health_pb2_grpc.HealthStub(self._channel(address))
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            return f"health check: {exc.code().name}: {exc.details()}"
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            return (
                f"health check: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
            )
        return ""

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
