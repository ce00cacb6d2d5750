"""The scheduler's configuration, read once from an environment mapping.

Every variable is a constant below with its default; a bad value stops startup with a
message naming the variable and the value.
"""

from __future__ import annotations

import math
import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from scheduler.policy import PolicyConfig
    from scheduler.spill_config import SpillConfig

REDIS_URL = "REDIS_URL"
"""Redis holding all state. Default redis://127.0.0.1:6379/0."""
LISTEN = "SPILLWAY_SCHEDULER_LISTEN"
"""host:port the gRPC server binds. Default 127.0.0.1:50051 (port 0 picks a free one)."""
API_KEYS = "SPILLWAY_API_KEYS"
"""Comma-separated `key=tenant` pairs: bootstrap keys of the tenant scope. Keys created
with `spillway keys` live in Redis. This or SPILLWAY_OPERATOR_KEYS is required."""
OPERATOR_KEYS = "SPILLWAY_OPERATOR_KEYS"
"""Comma-separated `key=tenant` pairs: bootstrap keys of the operator scope (spillover
status, `spillway keys`, operator controls; a tenant's calls too)."""
TENANT_WEIGHTS = "SPILLWAY_TENANT_WEIGHTS"
"""Comma-separated `tenant=weight` pairs: a tenant's share of claims when several have
work queued (default 1 each; weight 2 is served twice as often). Written to Redis at
startup, so the replica started last sets them for all."""
TENANT_BUDGET_SPLIT = "SPILLWAY_TENANT_BUDGET_SPLIT"
"""1 splits the monthly spill budget between tenants by weight: a tenant's jobs spill only
while what its jobs spent on the second fleet this month is under budget x its weight /
the sum of the weights in SPILLWAY_TENANT_WEIGHTS (a tenant not named there weighs 1);
past its share they wait for in-house slots. Needs SPILLWAY_TENANT_WEIGHTS. Default 0:
one budget for all."""
METRICS_TENANTS = "SPILLWAY_METRICS_TENANTS"
"""Tenants, besides those named in SPILLWAY_TENANT_WEIGHTS, that get a `tenant` label of
their own on the per-tenant metrics, first come first served on each replica; the rest
count as `other`, so a caller inventing tenants cannot grow the series. Default 20."""
TENANT_MAX_QUEUED = "SPILLWAY_TENANT_MAX_QUEUED"
"""Jobs one tenant may have queued; more are refused with 429 / RESOURCE_EXHAUSTED
(`tenant_queue_full`) and Retry-After. Default 0: only SPILLWAY_MAX_QUEUED bounds it."""
TENANT_SUBMIT_RATE_PER_S = "SPILLWAY_TENANT_SUBMIT_RATE_PER_S"
"""Submits a second one tenant may make, a token bucket in Redis shared by every
replica; faster ones are refused (`rate_limited`) with Retry-After. Default 0: no limit."""
TENANT_SUBMIT_BURST = "SPILLWAY_TENANT_SUBMIT_BURST"
"""Submits one tenant may make at once under its rate. Default 100."""
KEY_CACHE_S = "SPILLWAY_KEY_CACHE_S"
"""How long a replica trusts what it looked up about a stored key: a revoked key stops
working everywhere within this long. Default 2."""
INHOUSE_RENDERERS = "SPILLWAY_INHOUSE_RENDERERS"
"""Comma-separated `host:port=slots` in-house renderer endpoints. Default 127.0.0.1:50061=2.
It seeds the fleet in Redis, which `spillway fleet` edits at run time; a replica starting
with a value not seeded before adds its endpoints."""
MODELS = "SPILLWAY_MODELS"
"""Comma-separated model names accepted on submit; the first is the default."""
S3_BUCKET = "SPILLWAY_S3_BUCKET"
"""Bucket for finished MP4s. Default spillway-videos."""
S3_ENDPOINT_URL = "SPILLWAY_S3_ENDPOINT_URL"
"""S3 endpoint; empty for AWS. Credentials come from boto3's usual AWS_* variables."""
S3_PUBLIC_ENDPOINT_URL = "SPILLWAY_S3_PUBLIC_ENDPOINT_URL"
"""Endpoint that presigned URLs name, when callers reach S3 by another address."""
S3_REGION = "SPILLWAY_S3_REGION"
"""Default us-east-1."""
S3_KEY_PREFIX = "SPILLWAY_S3_KEY_PREFIX"
"""Object key is `<prefix><job id>.mp4`. Default videos/."""
S3_MULTIPART_THRESHOLD_BYTES = "SPILLWAY_S3_MULTIPART_THRESHOLD_BYTES"
"""Uploads at least this large go multipart. Default 8 MiB."""
S3_PART_BYTES = "SPILLWAY_S3_PART_BYTES"
"""Multipart part size. Default 8 MiB (S3's minimum is 5 MiB)."""
S3_THREADS = "SPILLWAY_S3_THREADS"
"""Threads for S3 calls (uploads, deletes, checks), apart from the scheduler's others, so
an S3 outage cannot starve them. Default 8."""
S3_LIFECYCLE_DAYS = "SPILLWAY_S3_LIFECYCLE_DAYS"
"""N > 0 puts a bucket lifecycle rule at startup that deletes objects under the key
prefix N days after they were written: a backstop to the expiry sweep, at least the
retention. A store that does not support lifecycle rules logs a warning. Default 0
(the bucket's lifecycle is left alone)."""
PRESIGN_EXPIRES_S = "SPILLWAY_PRESIGN_EXPIRES_S"
"""Lifetime of a content URL. Default 3600."""
RETENTION_S = "SPILLWAY_RETENTION_S"
"""How long a finished job (and its idempotency key) is kept. Default 86400."""
LEASE_S = "SPILLWAY_LEASE_S"
"""A dispatched job is reclaimed when its replica fails to renew it for this long. Default 30."""
MAX_ATTEMPTS = "SPILLWAY_MAX_ATTEMPTS"
"""Dispatches per job before it fails (renderer lost, replica died). Default 3."""
EVENTS_MAXLEN = "SPILLWAY_EVENTS_MAXLEN"
"""Approximate cap on each job's event stream. Default 256."""
RENDER_TIMEOUT_S = "SPILLWAY_RENDER_TIMEOUT_S"
"""Longest one render may take before it is retried. Default 900."""
SHUTDOWN_GRACE_S = "SPILLWAY_SHUTDOWN_GRACE_S"
"""On shutdown, running jobs get this long to finish before they are requeued. Default 30."""
METRICS_LISTEN = "SPILLWAY_METRICS_LISTEN"
"""host:port of the Prometheus endpoint (`/metrics`). Default 127.0.0.1:9464; empty turns
it off; port 0 picks a free one."""
REDIS_MAX_CONNECTIONS = "SPILLWAY_REDIS_MAX_CONNECTIONS"
"""Connections this replica may open to Redis for commands; a call finding them all busy
waits for one (up to `SPILLWAY_REDIS_POOL_WAIT_S`) instead of failing. Blocking waits and
the event feed have connections of their own on top. Default 64."""
REDIS_POOL_WAIT_S = "SPILLWAY_REDIS_POOL_WAIT_S"
"""How long a Redis call waits for a free connection before it fails. Default 10."""
REDIS_TIMEOUT_S = "SPILLWAY_REDIS_TIMEOUT_S"
"""Socket timeout of a Redis command (blocking waits get the wait plus this). Default 5."""
FLEET_PROBE_INTERVAL_S = "SPILLWAY_FLEET_PROBE_INTERVAL_S"
"""How often the in-house renderers are health-probed (by one replica at a time), and so
how soon an ejected one that serves again is re-admitted. Default 2."""
FLEET_EJECT_AFTER = "SPILLWAY_FLEET_EJECT_AFTER"
"""Consecutive failures (a render that could not connect, a failed probe) that eject an
in-house renderer. Default 1: a job that could not reach one goes elsewhere at once, and
the probe re-admits it as soon as it serves."""
UPLOAD_RETRY_S = "SPILLWAY_UPLOAD_RETRY_S"
"""How long a finished render's upload is retried through an S3 outage before its job
fails (`upload_failed`). The render is never redone for an S3 error. Default 3600."""
GRPC_MAX_STREAMS = "SPILLWAY_GRPC_MAX_STREAMS"
"""Concurrent RPCs (WatchJob streams included) the scheduler serves per HTTP/2
connection. Default 10000."""
EXPIRY_INTERVAL_S = "SPILLWAY_EXPIRY_INTERVAL_S"
"""How often a finished job's MP4 is looked for past its `expires_at` (the job's
retention) and deleted, by one replica at a time. Default 60."""
WEBHOOK_ALLOW_LOCAL = "SPILLWAY_WEBHOOK_ALLOW_LOCAL"
"""1 lets webhook endpoints use plain http and loopback, private or link-local addresses
(the local stack sets it). Default 0: https to public addresses only."""
WEBHOOK_TIMEOUT_S = "SPILLWAY_WEBHOOK_TIMEOUT_S"
"""Longest one webhook POST may take. Default 10."""
WEBHOOK_BACKOFF_S = "SPILLWAY_WEBHOOK_BACKOFF_S"
"""Delay before a failed webhook delivery's first retry; it doubles per retry, jittered.
Default 5."""
WEBHOOK_BACKOFF_MAX_S = "SPILLWAY_WEBHOOK_BACKOFF_MAX_S"
"""Longest delay between two retries of a webhook delivery. Default 3600."""
WEBHOOK_RETRY_WINDOW_S = "SPILLWAY_WEBHOOK_RETRY_WINDOW_S"
"""How long after its first attempt a webhook delivery is retried. Default 259200 (72 h)."""
WEBHOOK_CONCURRENCY = "SPILLWAY_WEBHOOK_CONCURRENCY"
"""Webhook deliveries one replica sends at once. Default 32."""
WEBHOOK_PER_ENDPOINT = "SPILLWAY_WEBHOOK_PER_ENDPOINT"
"""Webhook deliveries one replica sends to one endpoint at once. Default 4."""
WEBHOOK_POLL_S = "SPILLWAY_WEBHOOK_POLL_S"
"""How often an idle replica looks for webhook deliveries that are due. Default 0.5."""
REPLICA_ID = "SPILLWAY_REPLICA_ID"
"""This replica's name in leases and logs. Default host-pid-random."""

_ENDPOINT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
_TENANT = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_MODEL = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_MIB = 1024 * 1024


class ConfigError(ValueError):
    """A configuration value is missing or malformed."""


@dataclass(frozen=True)
class RendererEndpoint:
    address: str
    slots: int


@dataclass(frozen=True)
class S3Config:
    bucket: str
    endpoint_url: str | None
    public_endpoint_url: str | None
    region: str
    key_prefix: str
    multipart_threshold_bytes: int
    part_bytes: int
    presign_expires_s: int
    threads: int
    lifecycle_days: int


@dataclass(frozen=True)
class DeliveryConfig:
    """How webhook deliveries are sent (`scheduler.dispatch.webhook_delivery`)."""

    timeout_s: float
    """Longest one POST may take, connect to last byte."""
    backoff_s: float
    """Delay before the first retry; each further retry doubles it, with jitter."""
    backoff_max_s: float
    retry_window_s: float
    """How long after its first attempt a delivery is retried."""
    concurrency: int
    """Deliveries this replica sends at once."""
    per_endpoint: int
    """Deliveries this replica sends to one endpoint at once."""
    poll_s: float
    """How often an idle replica looks for due deliveries."""

    @property
    def visibility_s(self) -> float:
        """How long a claimed delivery is this replica's before another may send it."""
        return 2 * self.timeout_s + 5


@dataclass(frozen=True)
class TenantQuota:
    """Per-tenant limits on submits (`scheduler.store.jobstore`)."""

    max_queued: int = 0
    """Jobs one tenant may have queued; 0: only the queue's own bound."""
    submits_per_s: float = 0.0
    """0: no limit."""
    burst: int = 100


@dataclass(frozen=True)
class SchedulerConfig:
    redis_url: str
    listen: str
    api_keys: Mapping[str, str]
    operator_keys: Mapping[str, str]
    key_cache_s: float
    tenant_weights: Mapping[str, float]
    tenant_budget_split: bool
    metrics_tenants: int
    quota: TenantQuota
    inhouse: tuple[RendererEndpoint, ...]
    models: tuple[str, ...]
    s3: S3Config
    retention_s: int
    lease_s: float
    max_attempts: int
    events_maxlen: int
    render_timeout_s: float
    shutdown_grace_s: float
    replica_id: str
    metrics_listen: str
    redis_max_connections: int
    redis_pool_wait_s: float
    redis_timeout_s: float
    fleet_probe_interval_s: float
    fleet_eject_after: int
    upload_retry_s: float
    grpc_max_streams: int
    expiry_interval_s: float
    webhook_allow_local: bool
    webhooks: DeliveryConfig
    policy: PolicyConfig
    spill: SpillConfig

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SchedulerConfig:
        # Imported here: spill_config builds on the parsers of this module.
        from scheduler.spill_config import policy_from_env, spill_from_env

        env = os.environ if environ is None else environ
        s3 = S3Config(
            bucket=get(env, S3_BUCKET, "spillway-videos", _nonempty),
            endpoint_url=env.get(S3_ENDPOINT_URL) or None,
            public_endpoint_url=env.get(S3_PUBLIC_ENDPOINT_URL) or None,
            region=get(env, S3_REGION, "us-east-1", _nonempty),
            key_prefix=env.get(S3_KEY_PREFIX, "videos/"),
            multipart_threshold_bytes=get(
                env, S3_MULTIPART_THRESHOLD_BYTES, str(8 * _MIB), int_at_least(1)
            ),
            part_bytes=get(env, S3_PART_BYTES, str(8 * _MIB), int_at_least(5 * _MIB)),
            presign_expires_s=get(env, PRESIGN_EXPIRES_S, "3600", int_in(1, 604800)),
            threads=get(env, S3_THREADS, "8", int_in(1, 256)),
            lifecycle_days=get(env, S3_LIFECYCLE_DAYS, "0", int_in(0, 36500)),
        )
        retention_s = get(env, RETENTION_S, "86400", int_at_least(60))
        tenant_weights = get(env, TENANT_WEIGHTS, "", _weights)
        budget_split = get(env, TENANT_BUDGET_SPLIT, "0", flag)
        if budget_split and not tenant_weights:
            raise ConfigError(
                f"{TENANT_BUDGET_SPLIT}=1 splits the budget by weight: set {TENANT_WEIGHTS}"
            )
        operator_keys = get(env, OPERATOR_KEYS, "", _api_keys)
        api_keys = get(env, API_KEYS, None if not operator_keys else "", _api_keys)
        if set(api_keys) & set(operator_keys):
            raise ConfigError(f"a key is in both {API_KEYS} and {OPERATOR_KEYS}")
        if 0 < s3.lifecycle_days * 86400 < retention_s:
            raise ConfigError(
                f"{S3_LIFECYCLE_DAYS}={s3.lifecycle_days}: the rule would delete videos "
                f"before their jobs expire ({RETENTION_S}={retention_s}); make it at least "
                f"{math.ceil(retention_s / 86400)}"
            )
        return cls(
            redis_url=get(env, REDIS_URL, "redis://127.0.0.1:6379/0", _redis_url),
            listen=get(env, LISTEN, "127.0.0.1:50051", parse_address),
            api_keys=api_keys,
            operator_keys=operator_keys,
            key_cache_s=get(env, KEY_CACHE_S, "2", float_at_least(0)),
            tenant_weights=tenant_weights,
            tenant_budget_split=budget_split,
            metrics_tenants=get(env, METRICS_TENANTS, "20", int_at_least(0)),
            quota=TenantQuota(
                max_queued=get(env, TENANT_MAX_QUEUED, "0", int_at_least(0)),
                submits_per_s=get(env, TENANT_SUBMIT_RATE_PER_S, "0", float_at_least(0)),
                burst=get(env, TENANT_SUBMIT_BURST, "100", int_at_least(1)),
            ),
            inhouse=get(env, INHOUSE_RENDERERS, "127.0.0.1:50061=2", _renderers),
            models=get(env, MODELS, "sora-2,sora-2-pro", _models),
            s3=s3,
            retention_s=retention_s,
            lease_s=get(env, LEASE_S, "30", float_at_least(0.5)),
            max_attempts=get(env, MAX_ATTEMPTS, "3", int_at_least(1)),
            events_maxlen=get(env, EVENTS_MAXLEN, "256", int_at_least(16)),
            render_timeout_s=get(env, RENDER_TIMEOUT_S, "900", float_at_least(1)),
            shutdown_grace_s=get(env, SHUTDOWN_GRACE_S, "30", float_at_least(0)),
            replica_id=env.get(REPLICA_ID) or _default_replica_id(),
            metrics_listen=_metrics_listen(env.get(METRICS_LISTEN, "127.0.0.1:9464")),
            redis_max_connections=get(env, REDIS_MAX_CONNECTIONS, "64", int_in(4, 100_000)),
            redis_pool_wait_s=get(env, REDIS_POOL_WAIT_S, "10", float_at_least(0.1)),
            redis_timeout_s=get(env, REDIS_TIMEOUT_S, "5", float_at_least(0.1)),
            fleet_probe_interval_s=get(env, FLEET_PROBE_INTERVAL_S, "2", float_at_least(0.1)),
            fleet_eject_after=get(env, FLEET_EJECT_AFTER, "1", int_at_least(1)),
            upload_retry_s=get(env, UPLOAD_RETRY_S, "3600", float_at_least(0)),
            grpc_max_streams=get(env, GRPC_MAX_STREAMS, "10000", int_at_least(100)),
            expiry_interval_s=get(env, EXPIRY_INTERVAL_S, "60", float_at_least(0.1)),
            webhook_allow_local=get(env, WEBHOOK_ALLOW_LOCAL, "0", flag),
            webhooks=DeliveryConfig(
                timeout_s=get(env, WEBHOOK_TIMEOUT_S, "10", float_at_least(0.1)),
                backoff_s=get(env, WEBHOOK_BACKOFF_S, "5", float_at_least(0.01)),
                backoff_max_s=get(env, WEBHOOK_BACKOFF_MAX_S, "3600", float_at_least(0.01)),
                retry_window_s=get(env, WEBHOOK_RETRY_WINDOW_S, "259200", float_at_least(0)),
                concurrency=get(env, WEBHOOK_CONCURRENCY, "32", int_in(1, 1024)),
                per_endpoint=get(env, WEBHOOK_PER_ENDPOINT, "4", int_in(1, 1024)),
                poll_s=get(env, WEBHOOK_POLL_S, "0.5", float_at_least(0.01)),
            ),
            policy=policy_from_env(env),
            spill=spill_from_env(env),
        )


T = TypeVar("T")


def get(env: Mapping[str, str], key: str, default: str | None, cast: Callable[[str], T]) -> T:
    raw = env.get(key)
    if raw is None or raw == "":
        if default is None:
            raise ConfigError(f"{key} is required")
        raw = default
    try:
        return cast(raw)
    except ValueError as exc:
        raise ConfigError(f"{key}={raw!r}: {exc}") from None


def flag(raw: str) -> bool:
    if raw not in ("0", "1"):
        raise ValueError("must be 0 or 1")
    return raw == "1"


def _metrics_listen(raw: str) -> str:
    if raw and not _ENDPOINT.match(raw):
        raise ConfigError(f"{METRICS_LISTEN}={raw!r}: expected host:port, or empty for none")
    return raw


def _nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return raw


def parse_address(raw: str) -> str:
    if not _ENDPOINT.match(raw):
        raise ValueError("expected host:port")
    return raw


def int_at_least(low: int) -> Callable[[str], int]:
    def cast(raw: str) -> int:
        value = int(raw)
        if value < low:
            raise ValueError(f"must be at least {low}")
        return value

    return cast


def int_in(low: int, high: int) -> Callable[[str], int]:
    def cast(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return cast


def float_at_least(low: float) -> Callable[[str], float]:
    def cast(raw: str) -> float:
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        if not value >= low:
            raise ValueError(f"must be at least {low}")
        return value

    return cast


def _pairs(raw: str) -> list[tuple[str, str]]:
    pairs = []
    for item in raw.split(","):
        left, sep, right = item.strip().rpartition("=")
        if not sep or not left or not right:
            raise ValueError(f"expected comma-separated left=right pairs, got {item.strip()!r}")
        pairs.append((left, right))
    return pairs


def _api_keys(raw: str) -> Mapping[str, str]:
    keys: dict[str, str] = {}
    if not raw:
        return keys
    for key, tenant in _pairs(raw):
        if len(key) < 8:
            raise ValueError("each API key must be at least 8 characters")
        if not _TENANT.match(tenant):
            raise ValueError(f"tenant {tenant!r} must be 1-64 of A-Z a-z 0-9 _ -")
        if key in keys:
            raise ValueError("an API key appears twice")
        keys[key] = tenant
    return keys


def _weights(raw: str) -> Mapping[str, float]:
    weights: dict[str, float] = {}
    for tenant, weight in _pairs(raw) if raw else ():
        if not _TENANT.match(tenant):
            raise ValueError(f"tenant {tenant!r} must be 1-64 of A-Z a-z 0-9 _ -")
        value = float(weight)
        if not (math.isfinite(value) and 0.01 <= value <= 1000):
            raise ValueError(f"weight of {tenant} must be between 0.01 and 1000")
        weights[tenant] = value
    return weights


def _renderers(raw: str) -> tuple[RendererEndpoint, ...]:
    endpoints = []
    for address, slots in _pairs(raw):
        parse_address(address)
        endpoints.append(RendererEndpoint(address, int_at_least(1)(slots)))
    return tuple(endpoints)


def _models(raw: str) -> tuple[str, ...]:
    models = tuple(m.strip() for m in raw.split(","))
    for model in models:
        if not _MODEL.match(model):
            raise ValueError(f"model name {model!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    return models


def _default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
