"""Every Redis key spillway uses, in one place.

One Redis primary holds all state (no Redis Cluster), so the Lua scripts may touch keys
they derive from ids they discover (a popped queue entry); they derive them from the
prefixes below (passed in as arguments, or as the `K_*` constants that
`scheduler.store.jobstore` generates from this module), never from literals of their own.
"""

from __future__ import annotations

NAMESPACE = "spw:"

JOB_PREFIX = f"{NAMESPACE}job:"
"""Hash per job: its fields as strings (see `scheduler.store.jobs`)."""

EVENTS_PREFIX = f"{NAMESPACE}ev:"
"""Capped stream per job: one entry per status or progress change, field `d` is JSON."""

CHANNEL_PREFIX = f"{NAMESPACE}evc:"
"""Pub/sub channel per job: each event again, as `<stream id> <json>`, for live watchers.
Every replica holds one pattern subscription to all of them (`scheduler.store.events`)."""

QUEUE = f"{NAMESPACE}queue"
"""Sorted set of queued job ids; the score orders by priority, then submission."""

SEQ = f"{NAMESPACE}seq"
"""Counter giving each queued job its place in line."""

LEASES = f"{NAMESPACE}leases"
"""Sorted set of dispatched job ids scored by lease deadline (Redis server ms)."""

WAKE = f"{NAMESPACE}wake"
"""List holding at most one token while the queue may be non-empty; idle dispatchers
block on it instead of polling."""

QUEUED_AT = f"{NAMESPACE}queued_at"
"""Sorted set of queued interactive job ids scored by when they (last) entered the queue
(Redis server ms): the queue timeout and the policy's view of waiting times read it."""

BATCH_QUEUED_AT = f"{NAMESPACE}queued_at:batch"
"""As `QUEUED_AT`, for the jobs of the batch class: kept apart so their waits never
count toward spilling, and the queue timeout never sheds them."""

RUNNING_PREFIX = f"{NAMESPACE}running:"
"""Set per pool of the job ids it runs: its size is the pool's in-flight count across
all replicas, which the claim script checks against the pool's cap."""

DISPATCHED = f"{NAMESPACE}dispatched"
"""Hash: pool name -> jobs dispatched to it, and `since` -> when counting began (ms)."""

POLICY = f"{NAMESPACE}policy"
"""Hash: `state` (the spillover policy's state, JSON) and `version` (for compare-and-set
by whichever replica decides next)."""

TRANSITIONS = f"{NAMESPACE}policy:transitions"
"""Capped stream of spillover mode changes, field `d` is JSON."""

AUTOSCALER_LEASE = f"{NAMESPACE}autoscaler:lease"
"""String: the replica that applies autoscaler settings, with a TTL it keeps renewing."""

AUTOSCALE = f"{NAMESPACE}autoscaler:applied"
"""Hash: the autoscaler settings last applied, by which replica and when."""

FLEET_SLOTS = f"{NAMESPACE}fleet:slots"
"""Hash: in-house renderer address -> its slots. The fleet's membership: operators edit
it at run time (`spillway fleet`); `SPILLWAY_INHOUSE_RENDERERS` seeds it."""

FLEET_DRAINING = f"{NAMESPACE}fleet:draining"
"""Set of in-house addresses that take no new work; what runs there finishes."""

FLEET_DOWN = f"{NAMESPACE}fleet:down"
"""Hash: ejected in-house address -> why (the last failure). Ejected endpoints get no
work and count for no capacity until a health probe re-admits them."""

FLEET_FAILS = f"{NAMESPACE}fleet:fails"
"""Hash: in-house address -> consecutive failures (connect or probe) since its last
success; reaching the ejection threshold ejects it."""

FLEET_SEED = f"{NAMESPACE}fleet:seed"
"""String: the `SPILLWAY_INHOUSE_RENDERERS` value last seeded into the fleet, so that a
replica restarting with the same value does not undo an operator's edits."""

FLEET_LEASE = f"{NAMESPACE}fleet:lease"
"""String: the replica that health-probes the in-house fleet, with a TTL it renews."""

ENDPOINT_PREFIX = f"{NAMESPACE}ep:"
"""Set per in-house address of the job ids it runs, across replicas: the claim script
gives a job the endpoint with the most free slots and adds it here."""


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


def running(pool: str) -> str:
    return RUNNING_PREFIX + pool


def endpoint(address: str) -> str:
    return ENDPOINT_PREFIX + address


def samples(pool: str, kind: str) -> str:
    """List of the latest observed durations (ms) of a kind (`render`, `cold`) on a pool,
    newest first, capped: the policy plans with their quantiles."""
    return f"{NAMESPACE}samples:{pool}:{kind}"


def spend(month: str) -> str:
    """Float (USD) metered on the second fleet in a calendar month (UTC, `YYYY-MM`)."""
    return f"{NAMESPACE}spend:{month}"


SPEND_KEPT_S = 40 * 86_400
"""How long a month's spend keys outlive their last write: past the month's end."""


METER = f"{NAMESPACE}meter"
"""String: the spend meter's state (`scheduler.dispatch.meter`), JSON: the second fleet's
containers as metered, the container-ms charged to `spend` so far, and how far it has
read `METER_RENDERS`."""

METER_RENDERS = f"{NAMESPACE}meter:renders"
"""Stream, capped: one entry per render on the second fleet (`c` container id, `b` its
boot start ms if cold or the render's start if warm, `e` the render's end ms, Redis
time, `k` 1 if cold), which the spend meter reads."""

METER_RENDERS_KEPT = 10_000

METER_LEASE = f"{NAMESPACE}meter:lease"
"""String: the replica that meters the second fleet's bill, with a TTL it renews."""


def tenant_spend(month: str) -> str:
    """Hash: tenant -> USD of `spend(month)` its jobs were metered, which the spill claim
    checks against the tenant's share when the budget is split by weight."""
    return f"{NAMESPACE}spend:{month}:tenants"


OBJECT_EXPIRY = f"{NAMESPACE}objects:expiry"
"""Sorted set: S3 key of a finished job's MP4 -> when it expires (ms, Redis time), the
job's `expires_at`; the expiry sweeper deletes each object then."""

EXPIRY_LEASE = f"{NAMESPACE}objects:expiry:lease"
"""String: the replica that sweeps expired objects, with a TTL it renews."""

DEADLINES = f"{NAMESPACE}deadlines"
"""Sorted set: job id -> its deadline (ms, Redis time), for queued jobs submitted with
one. The deadline script drops an entry when due (failing the job if still queued);
a job requeued after a failed attempt is entered again."""

WEBHOOK_ENDPOINT_PREFIX = f"{NAMESPACE}wh:ep:"
"""Hash per webhook endpoint: tenant, name, url, event types (comma-separated), secrets,
times, and why it is disabled if it is."""

WEBHOOK_OUTBOX = f"{NAMESPACE}wh:outbox"
"""Sorted set: `<event id> <endpoint id>` -> when the delivery is next due (ms, Redis
time). The terminal step of a job adds its deliveries in the same Lua call; a replica
claiming one moves it a visibility timeout ahead, so a replica that dies mid-delivery
leaves it to another."""

WEBHOOK_EVENT_PREFIX = f"{NAMESPACE}wh:evt:"
"""Hash per webhook event: `body`, the exact JSON every delivery of it sends, and
`pending`, its deliveries not yet ended; the last one to end deletes the event."""

WEBHOOK_DELIVERY_PREFIX = f"{NAMESPACE}wh:dlv:"
"""Hash per pending delivery (`<event id> <endpoint id>`): attempts made and when the
first was due, which bounds the retry window."""

WEBHOOK_SEQ = f"{NAMESPACE}wh:seq"
"""Counter that makes webhook event ids unique."""


def webhook_endpoint(endpoint_id: str) -> str:
    return WEBHOOK_ENDPOINT_PREFIX + endpoint_id


TENANT_WEBHOOKS_PREFIX = f"{NAMESPACE}wh:tenant:"


def tenant_webhooks(tenant: str) -> str:
    """Sorted set of a tenant's webhook endpoint ids, all scored 0 (ids sort by creation
    time)."""
    return TENANT_WEBHOOKS_PREFIX + tenant


WEBHOOK_LOG_PREFIX = f"{NAMESPACE}wh:log:"


def webhook_log(endpoint_id: str) -> str:
    """Capped stream per webhook endpoint: one entry (field `d`, JSON) per attempt."""
    return WEBHOOK_LOG_PREFIX + endpoint_id


API_KEYS = f"{NAMESPACE}apikeys"
"""Hash: sha256 (hex) of an API key -> its record (JSON: id, tenant, scope, name,
created and expiry ms, the key's last characters). The key itself is never stored."""

API_KEY_IDS = f"{NAMESPACE}apikeys:ids"
"""Hash: API key id (`key_...`) -> the digest it is stored under, for revoking by id."""

TENANT_QUEUE_PREFIX = f"{NAMESPACE}tq:"
"""Sorted set per tenant of its queued job ids, scored as in `QUEUE`: the claim takes the
head of the tenant whose turn it is."""

FAIR = f"{NAMESPACE}fair"
"""Sorted set: tenant with queued work -> its virtual time, which grows by 1/weight per
job it is served. The claim serves the lowest, so tenants take turns by weight and one
tenant's burst waits behind the others' next jobs, not in front of them."""

FAIR_VT = f"{NAMESPACE}fair:vt"
"""Hash: tenant -> its virtual time when its queue last emptied; a tenant with work
again starts at no less than the lowest waiting tenant's (no credit banked while idle)."""

TENANT_WEIGHTS = f"{NAMESPACE}tenant:weights"
"""Hash: tenant -> its weight in the fair share (default 1); set from
`SPILLWAY_TENANT_WEIGHTS` at startup."""


BATCH_TENANT_QUEUE_PREFIX = f"{NAMESPACE}tqb:"
BATCH_FAIR = f"{NAMESPACE}fair:batch"
BATCH_FAIR_VT = f"{NAMESPACE}fair:batch:vt"
"""As `TENANT_QUEUE_PREFIX`, `FAIR` and `FAIR_VT`, for the batch class: a claim serves
the batch line only when the interactive one has nothing for it, and tenants take turns
within each line."""


def tenant_queue(tenant: str) -> str:
    return TENANT_QUEUE_PREFIX + tenant


SUBMIT_BUCKET_PREFIX = f"{NAMESPACE}submits:"
"""Hash per tenant: its submit token bucket (`tokens`, `at` ms), while it has a rate."""

CONTROL_CHANGES = f"{NAMESPACE}controls:changes"
"""Capped stream of operator control changes, field `d` is JSON: who, when, and the
controls that call set (`spill`, `dispatch`, `batch`)."""

CONTROLS = f"{NAMESPACE}controls"
"""Hash: the operator controls (`spill`: auto, off or force; `dispatch`: running or
paused; `batch`: inhouse or spill) and who set them when (`by`, `at_ms`); read with
the policy's signal."""
