"""Every Redis key spillway uses, in one place.

One Redis primary holds all state (no Redis Cluster), so the Lua scripts may touch keys
they derive from ids they discover (a popped queue entry); they derive them from the
prefixes below, passed in as arguments, never from literals of their own.
"""

from __future__ import annotations

NAMESPACE = "spw:"

JOB_PREFIX = f"{NAMESPACE}job:"
"""Hash per job: its fields as strings (see `scheduler.jobs`)."""

EVENTS_PREFIX = f"{NAMESPACE}ev:"
"""Capped stream per job: one entry per status or progress change, field `d` is JSON."""

CHANNEL_PREFIX = f"{NAMESPACE}evc:"
"""Pub/sub channel per job: each event again, as `<stream id> <json>`, for live watchers."""

QUEUE = f"{NAMESPACE}queue"
"""Sorted set of queued job ids; the score orders by priority, then submission."""

SEQ = f"{NAMESPACE}seq"
"""Counter giving each queued job its place in line."""

LEASES = f"{NAMESPACE}leases"
"""Sorted set of dispatched job ids scored by lease deadline (Redis server ms)."""

WAKE = f"{NAMESPACE}wake"
"""List holding at most one token while the queue may be non-empty; idle dispatchers
block on it instead of polling."""

HUB_CHANNEL = f"{NAMESPACE}hub"
"""A channel no one publishes to: it keeps each replica's pub/sub connection subscribed."""


def job(job_id: str) -> str:
    return JOB_PREFIX + job_id


def events(job_id: str) -> str:
    return EVENTS_PREFIX + job_id


def channel(job_id: str) -> str:
    return CHANNEL_PREFIX + job_id


def tenant_jobs(tenant: str) -> str:
    """Sorted set of a tenant's job ids, all scored 0: ids sort by creation time, so
    lexical ranges page through them stably while jobs come and go."""
    return f"{NAMESPACE}tenant:{tenant}:jobs"


def idempotency_prefix(tenant: str) -> str:
    return f"{NAMESPACE}idem:{tenant}:"


def idempotency(tenant: str, key: str) -> str:
    """String holding the job id that an idempotency key created, per tenant."""
    return idempotency_prefix(tenant) + key
