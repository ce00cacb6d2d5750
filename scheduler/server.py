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
from spillway.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)

from scheduler.api.admin_service import AdminService
from scheduler.api.auth import ApiKeys
from scheduler.api.grpc_input import DecodeRequests
from scheduler.api.service import SchedulerService
from scheduler.api.webhook_service import WebhookService
from scheduler.config import SchedulerConfig
from scheduler.dispatch.dispatcher import Dispatcher, DispatcherConfig
from scheduler.dispatch.fleet import Fleet, FleetMonitor
from scheduler.dispatch.meter import SpendMeter
from scheduler.dispatch.spillover import Spillover
from scheduler.dispatch.webhook_delivery import Sender, WebhookDelivery
from scheduler.pools.base import Pool
from scheduler.pools.factory import build_spill_pool
from scheduler.pools.inhouse import InhousePool
from scheduler.store import keys
from scheduler.store.events import EventHub
from scheduler.store.expiry import ObjectExpiry
from scheduler.store.jobstore import JobStore
from scheduler.store.storage import ObjectStore, S3ObjectStore
from scheduler.store.webhooks import Targets, WebhookStore
from scheduler.tasks import cancel_and_wait
from scheduler.telemetry.metrics import MetricsServer, SchedulerMetrics, TenantLabels
from scheduler.telemetry.outage import Outage

log = logging.getLogger(__name__)

SERVICE_NAME = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name
WEBHOOKS_SERVICE_NAME = webhooks_pb2.DESCRIPTOR.services_by_name["Webhooks"].full_name
ADMIN_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name
_READINESS_INTERVAL_S = 2.0
_READINESS_TIMEOUT_S = 5.0
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def redis_clients(config: SchedulerConfig) -> tuple[redis.Redis, redis.Redis, redis.Redis]:
    """The replica's Redis connection budget: a bounded pool for commands, where a call
    finding every connection busy waits its turn instead of failing; one connection for
    the dispatcher's blocking wait, whose socket timeout outlasts the wait; and one for
    the event feed's subscriptions, which may be silent for as long as no job changes."""
    # from_pool: the client owns the pool and closes it with itself.
    commands = redis.Redis.from_pool(
        redis.BlockingConnectionPool.from_url(
            config.redis_url,
            decode_responses=True,
            max_connections=config.redis_max_connections,
            timeout=config.redis_pool_wait_s,
            socket_timeout=config.redis_timeout_s,
            socket_connect_timeout=config.redis_timeout_s,
        )
    )
    waits = redis.Redis.from_url(
        config.redis_url,
        decode_responses=True,
        max_connections=1,
        socket_timeout=config.lease_s + config.redis_timeout_s,
        socket_connect_timeout=config.redis_timeout_s,
    )
    events = redis.Redis.from_url(
        config.redis_url,
        decode_responses=True,
        socket_timeout=None,
        socket_connect_timeout=config.redis_timeout_s,
        health_check_interval=30,
    )
    return commands, waits, events


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
        self.redis, self._redis_waits, self._redis_events = redis_clients(cfg)
        await self.redis.ping()
        self.store = JobStore(
            self.redis,
            retention_s=cfg.retention_s,
            events_maxlen=cfg.events_maxlen,
            max_attempts=cfg.max_attempts,
            max_queued=cfg.policy.max_queued,
            waiter=self._redis_waits,
            quota=cfg.quota,
        )
        if cfg.tenant_weights:
            weights = {t: str(w) for t, w in cfg.tenant_weights.items()}
            await self.redis.hset(keys.TENANT_WEIGHTS, mapping=weights)  # type: ignore[arg-type]
        self.hub = EventHub(self._redis_events)
        await self.hub.start()
        if self._objects is None:
            self._objects = await S3ObjectStore.connect(cfg.s3)
        self.fleet = Fleet(self.redis, eject_after=cfg.fleet_eject_after)
        if await self.fleet.seed(cfg.inhouse):
            log.info("seeded the in-house fleet: %s", ", ".join(e.address for e in cfg.inhouse))
        self.pool = InhousePool(timeout_s=cfg.render_timeout_s, tmp_dir=self._tmp_dir)
        self.fleet_monitor = FleetMonitor(
            self.fleet,
            self.pool.check,
            owner=cfg.replica_id,
            interval_s=cfg.fleet_probe_interval_s,
        )
        self.object_expiry = ObjectExpiry(
            self.redis,
            self._objects,
            owner=cfg.replica_id,
            interval_s=cfg.expiry_interval_s,
        )
        if self._spill is None:
            self._spill = build_spill_pool(cfg, self._tmp_dir)
        spill_name = self._spill.name if self._spill else None
        self.spend_meter = (
            SpendMeter(
                self.redis,
                self._spill,
                cfg.policy,
                owner=cfg.replica_id,
                interval_s=cfg.spill.meter_interval_s,
                bill_check_s=cfg.spill.modal_bill_check_s,
            )
            if self._spill
            else None
        )
        self.metrics = SchedulerMetrics(
            cfg.policy,
            pools=(self.pool.name, *((spill_name,) if spill_name else ())),
            tenants=TenantLabels(cfg.tenant_weights, cfg.metrics_tenants),
        )
        self.spillover = Spillover(
            self.redis,
            cfg.policy,
            inhouse_pool=self.pool.name,
            spill_pool=self._spill.name if self._spill else None,
            fleet=self.fleet,
        )
        self.dispatcher = Dispatcher(
            self.store,
            self.hub,
            self.spillover,
            self.fleet,
            self.metrics,
            self.pool,
            self._spill,
            self._objects,
            DispatcherConfig(
                replica_id=cfg.replica_id,
                lease_s=cfg.lease_s,
                shutdown_grace_s=cfg.shutdown_grace_s,
                autoscale_interval_s=cfg.spill.autoscale_interval_s,
                upload_retry_s=cfg.upload_retry_s,
                budget_weights=cfg.tenant_weights if cfg.tenant_budget_split else None,
            ),
        )
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(
            interceptors=[DecodeRequests()],
            options=[
                ("grpc.so_reuseport", 0),
                # Thousands of WatchJob streams may open at once: gRPC's defaults (100
                # streams per connection, 1,000 calls waiting to be picked up) would
                # refuse or cancel a burst of them.
                ("grpc.max_concurrent_streams", cfg.grpc_max_streams),
                ("grpc.server.max_pending_requests", cfg.grpc_max_streams),
                ("grpc.server.max_pending_requests_hard_limit", 2 * cfg.grpc_max_streams),
            ],
        )
        api_keys = ApiKeys(self.redis, cfg.api_keys, cfg.operator_keys, cache_s=cfg.key_cache_s)
        admin_pb2_grpc.add_AdminServicer_to_server(
            AdminService(api_keys, self.spillover, self.store), self.server
        )
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(
            SchedulerService(
                self.store,
                self.hub,
                self._objects,
                api_keys,
                self.spillover,
                self.dispatcher.spillover_status,
                self.metrics,
                models=cfg.models,
                presign_expires_s=cfg.s3.presign_expires_s,
            ),
            self.server,
        )
        self.webhooks = WebhookStore(self.redis)
        targets = Targets(allow_local=cfg.webhook_allow_local)
        # Tests send from the RPC handler; deliveries have their own client, closed with them.
        self._test_sender = Sender(targets, cfg.webhooks.timeout_s)
        webhooks_pb2_grpc.add_WebhooksServicer_to_server(
            WebhookService(self.webhooks, api_keys, targets, self._test_sender),
            self.server,
        )
        self.webhook_delivery = WebhookDelivery(
            self.webhooks, Sender(targets, cfg.webhooks.timeout_s), cfg.webhooks, self.metrics
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                WEBHOOKS_SERVICE_NAME,
                ADMIN_SERVICE_NAME,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            ),
            self.server,
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
        self.fleet_monitor.start()
        self.object_expiry.start()
        if self.spend_meter:
            self.spend_meter.start()
        self.webhook_delivery.start()
        self._ready: bool | None = None
        await self._set_ready(True)
        self._readiness = asyncio.create_task(self._watch_readiness(), name="readiness")
        log.info("scheduler %s listening on %s", cfg.replica_id, self.address)

    async def _set_ready(self, ready: bool) -> None:
        if ready != self._ready:
            self._ready = ready
            for name in ("", SERVICE_NAME):
                await self.health.set(name, _SERVING if ready else _NOT_SERVING)

    async def _watch_readiness(self) -> None:
        """Reports NOT_SERVING over gRPC health while Redis or S3 does not answer, so
        load balancers and the gateway's `/readyz` send callers elsewhere; SERVING again
        once both do."""
        assert self._objects is not None
        outage = Outage("readiness check (Redis and S3)", log, expected=(Exception,))
        while True:
            try:
                async with asyncio.timeout(_READINESS_TIMEOUT_S):
                    await self.redis.ping()
                    await self._objects.check()
            except Exception as exc:
                outage.failed(exc)
                await self._set_ready(False)
            else:
                outage.ok()
                await self._set_ready(True)
            await asyncio.sleep(_READINESS_INTERVAL_S)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.shutdown_grace_s
        await self.health.enter_graceful_shutdown()
        steps = [
            ("readiness check", cancel_and_wait(self._readiness)),
            ("fleet monitor", self.fleet_monitor.stop()),
            ("object expiry", self.object_expiry.stop()),
            *([("spend meter", self.spend_meter.stop())] if self.spend_meter else []),
            ("dispatcher", self.dispatcher.stop()),
            ("webhook delivery", self.webhook_delivery.stop()),
            ("grpc server", self.server.stop(grace)),
            ("webhook test sender", self._test_sender.close()),
            *(
                [("metrics endpoint", asyncio.to_thread(self.metrics_server.stop))]
                if self.metrics_server
                else []
            ),
            ("in-house pool", self.pool.close()),
            *([("spill pool", self._spill.close())] if self._spill else []),
            ("event hub", self.hub.stop()),
            ("object store", self._objects.close() if self._objects else asyncio.sleep(0)),
            ("redis", self.redis.aclose()),
            ("redis waits", self._redis_waits.aclose()),
            ("redis events", self._redis_events.aclose()),
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
