"""The scheduler process: its parts, started in order and stopped in reverse."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import grpc
import redis.asyncio as redis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from spillway.v1 import scheduler_pb2, scheduler_pb2_grpc

from scheduler.auth import ApiKeys
from scheduler.config import SchedulerConfig
from scheduler.dispatcher import Dispatcher, DispatcherConfig
from scheduler.events import EventHub
from scheduler.metrics import MetricsServer, SchedulerMetrics
from scheduler.pools.base import Pool
from scheduler.pools.factory import build_spill_pool
from scheduler.pools.inhouse import InhousePool
from scheduler.service import SchedulerService
from scheduler.spillover import Spillover
from scheduler.storage import ObjectStore, S3ObjectStore
from scheduler.store import JobStore

log = logging.getLogger(__name__)

SERVICE_NAME = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name


class SchedulerServer:
    """Owns every long-lived part of one scheduler replica.

    `start()` brings them up in dependency order; `stop()` reports NOT_SERVING, stops
    dispatching, lets RPCs finish within the grace period, hands unfinished jobs back,
    then closes clients in reverse order, logging (not raising) what fails.
    """

    def __init__(
        self,
        config: SchedulerConfig,
        *,
        objects: ObjectStore | None = None,
        spill: Pool | None = None,
        tmp_dir: Path | None = None,
    ) -> None:
        self.config = config
        self._objects = objects
        self._spill = spill
        self._tmp_dir = tmp_dir
        self.port = 0
        self._stopped = False

    @property
    def address(self) -> str:
        host = self.config.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        cfg = self.config
        self.redis = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
        await self.redis.ping()
        self.store = JobStore(
            self.redis,
            retention_s=cfg.retention_s,
            events_maxlen=cfg.events_maxlen,
            max_attempts=cfg.max_attempts,
            max_queued=cfg.policy.max_queued,
        )
        self.hub = EventHub(self.redis)
        await self.hub.start()
        if self._objects is None:
            self._objects = await S3ObjectStore.connect(cfg.s3)
        self.pool = InhousePool(cfg.inhouse, timeout_s=cfg.render_timeout_s, tmp_dir=self._tmp_dir)
        if self._spill is None:
            self._spill = build_spill_pool(cfg, self._tmp_dir)
        spill_name = self._spill.name if self._spill else None
        self.metrics = SchedulerMetrics(
            cfg.policy, pools=(self.pool.name, *((spill_name,) if spill_name else ()))
        )
        self.spillover = Spillover(
            self.redis,
            cfg.policy,
            inhouse_pool=self.pool.name,
            inhouse_slots=sum(e.slots for e in cfg.inhouse),
            spill_pool=self._spill.name if self._spill else None,
        )
        self.dispatcher = Dispatcher(
            self.store,
            self.hub,
            self.spillover,
            self.metrics,
            self.pool,
            self._spill,
            self._objects,
            DispatcherConfig(
                replica_id=cfg.replica_id,
                lease_s=cfg.lease_s,
                shutdown_grace_s=cfg.shutdown_grace_s,
                autoscale_interval_s=cfg.spill.autoscale_interval_s,
            ),
        )
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(
            SchedulerService(
                self.store,
                self.hub,
                self._objects,
                ApiKeys(cfg.api_keys),
                self.spillover,
                self.dispatcher.spillover_status,
                self.metrics,
                models=cfg.models,
                presign_expires_s=cfg.s3.presign_expires_s,
            ),
            self.server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = self.server.add_insecure_port(cfg.listen)
        if self.port == 0:
            raise OSError(f"could not bind the scheduler to {cfg.listen}")
        await self.server.start()
        self.metrics_server: MetricsServer | None = None
        if cfg.metrics_listen:
            host, _, port = cfg.metrics_listen.rpartition(":")
            self.metrics_server = MetricsServer(self.metrics, host, int(port))
            self.metrics_port = await asyncio.to_thread(self.metrics_server.start)
        await self.dispatcher.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("scheduler %s listening on %s", cfg.replica_id, self.address)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.shutdown_grace_s
        await self.health.enter_graceful_shutdown()
        steps = [
            ("dispatcher", self.dispatcher.stop()),
            ("grpc server", self.server.stop(grace)),
            *(
                [("metrics endpoint", asyncio.to_thread(self.metrics_server.stop))]
                if self.metrics_server
                else []
            ),
            ("in-house pool", self.pool.close()),
            *([("spill pool", self._spill.close())] if self._spill else []),
            ("event hub", self.hub.stop()),
            ("redis", self.redis.aclose()),
        ]
        for name, step in steps:
            try:
                await step
            except Exception:
                log.exception("stopping the %s failed", name)
        log.info("scheduler %s stopped", self.config.replica_id)


async def serve(config: SchedulerConfig) -> None:
    """Runs one replica until SIGINT or SIGTERM."""
    server = SchedulerServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
