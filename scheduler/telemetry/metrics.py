"""Prometheus metrics of one scheduler replica, and the HTTP endpoint that serves them.

`SchedulerMetrics` owns its own `CollectorRegistry` (never the global one: several
replicas share a test process) and offers one small method per thing that happens; the
dispatcher calls them and nothing else touches the metric objects. Names carry the
`spillway_` prefix and base units; labels are bounded (pools, statuses, a closed set of
failure reasons, policy enums, and tenants through `TenantLabels`), never job ids.

Gauges fed by `decision` describe shared Redis state (queue, in-flight, spend), so every
replica reports the same values: aggregate them with `max`, and counters with `sum`.
`ops/prometheus/alerts.yml` and `ops/grafana/spillway.json` use these names; the tests
check that they only use names defined here.
"""

from __future__ import annotations

import re
import socket
import threading
from collections import Counter as Tally
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from scheduler.dispatch.fleet import ENDPOINT_STATES, Endpoint
from scheduler.policy.config import PolicyConfig
from scheduler.policy.model import Mode, Plan, Signal, SpillControl
from scheduler.policy.recall import RecallReason
from scheduler.pools.base import RenderInfo

INHOUSE_POOL: Final = "inhouse"
NO_POOL: Final = "none"
"""The pool label of a job that ended without being dispatched (shed, cancelled while
queued)."""

JOB_STATUSES: Final = ("completed", "failed", "cancelled")
FAILURE_REASONS: Final = ("timeout", "crash", "oom", "full", "unavailable", "invalid", "other")
SHED_REASONS: Final = ("queue_full", "queue_timeout", "expired")
WEBHOOK_OUTCOMES: Final = ("delivered", "retrying", "disabled", "dropped", "gave_up")

RENDER_BUCKETS_S: Final = (
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 450.0,
    600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
)  # fmt: skip
"""Renders take seconds (the CPU stand-in) to tens of minutes (long videos on a GPU)."""
JOB_BUCKETS_S: Final = (*RENDER_BUCKETS_S, 5400.0, 7200.0)
"""End to end adds the queue wait, up to the queue timeout (30 min by default)."""
COLD_START_BUCKETS_S: Final = (
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0,
    120.0, 180.0, 300.0,
)  # fmt: skip
"""A snapshot restore takes seconds; a first boot of SGLang after a deploy, minutes."""
UPLOAD_BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_POLL_INTERVAL_S: Final = 0.05
"""How often the metrics server's loop checks whether it should stop."""

_REASON_PATTERNS: Final = (
    ("oom", re.compile(r"out of memory|outofmemory|\boom|cuda", re.IGNORECASE)),
    (
        "timeout",
        re.compile(r"timeout|timed out|deadline|did not finish within", re.IGNORECASE),
    ),
    ("full", re.compile(r"\bfull\b|resource_exhausted|\bbusy\b", re.IGNORECASE)),
    ("unavailable", re.compile(r"unavailable", re.IGNORECASE)),
)
_CRASH_PATTERN: Final = re.compile(
    r"crash|died|\bdead\b|\bgone\b|exited|killed|segmentation fault|sigsegv|sigkill",
    re.IGNORECASE,
)


OTHER_TENANT: Final = "other"


class TenantLabels:
    """The `tenant` label of a tenant: its name if the weights name it, or if it is one
    of the first `limit` others this replica has seen; else `other`. So the per-tenant
    series stay bounded however many tenants callers bring."""

    def __init__(self, named: Iterable[str], limit: int) -> None:
        self._known = set(named)
        self._room = limit

    def __call__(self, tenant: str) -> str:
        if tenant in self._known:
            return tenant
        if self._room > 0:
            self._room -= 1
            self._known.add(tenant)
            return tenant
        return OTHER_TENANT


def failure_reason(message: str, retryable: bool) -> str:
    """The bounded `reason` label for a `RenderError`: `oom`, `timeout`, `full` or
    `unavailable` when the message says so (in that order, so a CUDA OOM reported as a
    timeout still counts as an OOM), else `invalid` when no retry can help, `crash` when
    the renderer or its container died, and `other` for everything else."""
    for reason, pattern in _REASON_PATTERNS:
        if pattern.search(message):
            return reason
    if not retryable:
        return "invalid"
    if _CRASH_PATTERN.search(message):
        return "crash"
    return "other"


class SchedulerMetrics:
    """The metrics of one scheduler replica, in a registry of its own.

    `policy` gives the values that only configuration knows (the monthly budget, the
    queue bound, the second fleet's capacity). `pools` names the pools this replica
    dispatches to, so that their counters exist at zero before the first event and
    `rate()` sees the first failure.
    """

    def __init__(
        self,
        policy: PolicyConfig,
        *,
        pools: Iterable[str] = (),
        tenants: TenantLabels | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._policy = policy
        self._tenant = tenants or TenantLabels((), 0)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

        # Jobs
        self._submitted = Counter(
            "spillway_jobs_submitted_total", "Jobs accepted into the queue.", registry=r
        )
        self._finished = Counter(
            "spillway_jobs_finished_total",
            "Jobs that reached a terminal status, by the pool of their last attempt "
            "('none' if never dispatched).",
            ["pool", "status"],
            registry=r,
        )
        self._job_latency = Histogram(
            "spillway_job_latency_seconds",
            "End-to-end time of completed jobs, from creation to completion.",
            ["pool"],
            buckets=JOB_BUCKETS_S,
            registry=r,
        )
        self._dispatched = Counter(
            "spillway_jobs_dispatched_total", "Jobs dispatched to a pool.", ["pool"], registry=r
        )
        self._queue_wait = Histogram(
            "spillway_queue_wait_seconds",
            "Time from entering the queue to dispatch, per attempt, by the pool that took "
            "the job and why: the wait spillover exists to cut.",
            ["pool", "reason"],
            buckets=JOB_BUCKETS_S,
            registry=r,
        )
        # Tenants (bounded: `TenantLabels`)
        self._tenant_submitted = Counter(
            "spillway_tenant_jobs_submitted_total",
            "Jobs accepted into the queue, by tenant and priority class.",
            ["tenant", "priority"],
            registry=r,
        )
        self._tenant_refused = Counter(
            "spillway_tenant_submits_refused_total",
            "Submits refused by a bound (queue_full, tenant_queue_full, rate_limited), by tenant.",
            ["tenant", "reason"],
            registry=r,
        )
        self._tenant_queue_wait = Histogram(
            "spillway_tenant_queue_wait_seconds",
            "Time from entering the queue to dispatch, per attempt, by tenant and priority "
            "class: what fair share and the classes divide.",
            ["tenant", "priority"],
            buckets=JOB_BUCKETS_S,
            registry=r,
        )
        self._webhooks = Counter(
            "spillway_webhook_deliveries_total",
            "Webhook delivery attempts by what came of them: delivered, retrying, disabled "
            "(410), dropped (endpoint gone or target refused), gave_up (retry window over).",
            ["outcome"],
            registry=r,
        )
        for outcome in WEBHOOK_OUTCOMES:
            self._webhooks.labels(outcome)
        self._webhook_seconds = Histogram(
            "spillway_webhook_delivery_seconds",
            "Time of one webhook delivery attempt, target check and POST.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self._recalled = Counter(
            "spillway_jobs_recalled_total",
            "Spilled jobs taken back before their render started, and placed again: "
            "not_started_in_time or inhouse_sooner.",
            ["pool", "reason"],
            registry=r,
        )
        self._shed = Counter(
            "spillway_jobs_shed_total",
            "Jobs refused at submit (queue_full), failed after waiting (queue_timeout) or past "
            "their deadline in the queue (expired).",
            ["reason"],
            registry=r,
        )

        # Renders
        self._render = Histogram(
            "spillway_render_seconds",
            "Wall time of successful renders as the scheduler saw them, cold start included.",
            ["pool"],
            buckets=RENDER_BUCKETS_S,
            registry=r,
        )
        self._cold = Histogram(
            "spillway_cold_start_seconds",
            "Boot plus snapshot restore of renders that met a cold container.",
            ["pool"],
            buckets=COLD_START_BUCKETS_S,
            registry=r,
        )
        self._gpu = Counter(
            "spillway_render_gpu_seconds_total",
            "GPU-seconds of successful renders: render time plus cold boot and restore, "
            "per input (inputs sharing a container each count their own time).",
            ["pool"],
            registry=r,
        )
        self._video = Counter(
            "spillway_rendered_video_seconds_total",
            "Seconds of video rendered successfully.",
            ["pool"],
            registry=r,
        )
        self._render_failures = Counter(
            "spillway_render_failures_total",
            "Render attempts that produced no MP4, by a bounded reason.",
            ["pool", "reason"],
            registry=r,
        )

        # Uploads
        self._upload = Histogram(
            "spillway_upload_seconds",
            "Time to upload one MP4 to object storage.",
            buckets=UPLOAD_BUCKETS_S,
            registry=r,
        )
        self._upload_bytes = Counter(
            "spillway_upload_bytes_total", "Bytes of MP4 uploaded.", registry=r
        )
        self._upload_failures = Counter(
            "spillway_upload_failures_total", "Uploads that failed.", registry=r
        )

        # The spillover policy's view, set at each decision
        self._queue_depth = Gauge(
            "spillway_queue_depth", "Jobs waiting in the control-plane queue.", registry=r
        )
        self._queue_oldest = Gauge(
            "spillway_queue_oldest_wait_seconds",
            "How long the oldest queued job has waited.",
            registry=r,
        )
        self._queue_limit = Gauge(
            "spillway_queue_limit",
            "Queue bound past which submits are refused.",
            registry=r,
        )
        self._inflight = Gauge(
            "spillway_pool_inflight", "Jobs rendering on each pool.", ["pool"], registry=r
        )
        self._capacity = Gauge(
            "spillway_pool_capacity",
            "Most jobs each pool may render at once (in-house slots; second fleet "
            "max_containers x concurrency).",
            ["pool"],
            registry=r,
        )
        self._ready_slots = Gauge(
            "spillway_pool_ready_slots",
            "Inputs the second fleet's booted containers take without a cold start.",
            ["pool"],
            registry=r,
        )
        self._spill_control = Gauge(
            "spillway_spill_control",
            "Operator spill control: 1 for the one in force (auto, off, force).",
            ["control"],
            registry=r,
        )
        self._dispatch_paused = Gauge(
            "spillway_dispatch_paused",
            "1 while an operator has paused dispatch.",
            registry=r,
        )
        self._mode = Gauge(
            "spillway_spillover_mode", "Spillover mode: 0 normal, 1 spill.", registry=r
        )
        self._mode_info = Gauge(
            "spillway_spillover_mode_info",
            "1 for the current spillover mode, 0 for the others.",
            ["mode"],
            registry=r,
        )
        self._transitions = Counter(
            "spillway_spillover_transitions_total",
            "Spillover mode changes this replica decided.",
            ["from", "to"],
            registry=r,
        )
        self._spend = Gauge(
            "spillway_spill_spend_usd",
            "Second-fleet spend metered so far this UTC month.",
            registry=r,
        )
        self._budget = Gauge(
            "spillway_spill_budget_usd", "Monthly second-fleet budget.", registry=r
        )
        self._budget_left = Gauge(
            "spillway_spill_budget_left_usd",
            "Budget left this month after spend and in-flight work.",
            registry=r,
        )
        self._est_render = Gauge(
            "spillway_estimate_render_seconds",
            "Render time the policy assumes for each pool.",
            ["pool"],
            registry=r,
        )
        self._est_cold = Gauge(
            "spillway_estimate_cold_start_seconds",
            "Cold start the policy assumes for the second fleet (a high quantile).",
            ["pool"],
            registry=r,
        )
        self._min_containers = Gauge(
            "spillway_spill_min_containers",
            "Containers the policy wants the second fleet to keep warm (pre-warm).",
            ["pool"],
            registry=r,
        )
        self._buffer_containers = Gauge(
            "spillway_spill_buffer_containers",
            "Idle containers the policy wants the second fleet to keep beyond demand.",
            ["pool"],
            registry=r,
        )
        self._available = Gauge(
            "spillway_spill_available",
            "1 while the second fleet takes work, 0 while it is failing or backing off.",
            ["pool"],
            registry=r,
        )
        self._endpoints = Gauge(
            "spillway_inhouse_endpoints",
            "In-house renderer endpoints by state: active (takes work), draining (no new "
            "work) and ejected (failing; no work, no capacity, until a probe passes).",
            ["state"],
            registry=r,
        )
        self._decision_jobs = Gauge(
            "spillway_policy_decision_jobs",
            "Queued jobs by where the latest decision sent them and why.",
            ["target", "reason"],
            registry=r,
        )
        self._decision_keys: set[tuple[str, str]] = set()

        for state in ENDPOINT_STATES:
            self._endpoints.labels(state)
        self._queue_limit.set(policy.max_queued)
        self._budget.set(policy.budget_usd_month)
        for reason in SHED_REASONS:
            self._shed.labels(reason)
        self._transitions.labels(Mode.NORMAL.value, Mode.SPILL.value)
        self._transitions.labels(Mode.SPILL.value, Mode.NORMAL.value)
        for status in JOB_STATUSES:
            self._finished.labels(NO_POOL, status)
        for pool in pools:
            self._dispatched.labels(pool)
            self._render.labels(pool)
            self._gpu.labels(pool)
            for status in JOB_STATUSES:
                self._finished.labels(pool, status)
            for reason in FAILURE_REASONS:
                self._render_failures.labels(pool, reason)

    def submitted(self, tenant: str, priority: str) -> None:
        self._submitted.inc()
        self._tenant_submitted.labels(self._tenant(tenant), priority).inc()

    def refused(self, tenant: str, reason: str) -> None:
        self._tenant_refused.labels(self._tenant(tenant), reason).inc()

    def job_finished(self, pool: str, status: str, latency_s: float | None) -> None:
        """A job reached `status` (completed, failed or cancelled) on `pool` ("" when it
        was never dispatched); `latency_s`, creation to now, counts for completed jobs."""
        if status not in JOB_STATUSES:
            raise ValueError(f"not a terminal job status: {status!r}")
        label = pool or NO_POOL
        self._finished.labels(label, str(status)).inc()
        if status == "completed" and latency_s is not None:
            self._job_latency.labels(label).observe(max(0.0, latency_s))

    def dispatched(
        self, pool: str, reason: str, queue_wait_s: float, *, tenant: str, priority: str
    ) -> None:
        waited = max(0.0, queue_wait_s)
        self._dispatched.labels(pool).inc()
        self._queue_wait.labels(pool, reason).observe(waited)
        self._tenant_queue_wait.labels(self._tenant(tenant), priority).observe(waited)

    def render_observed(self, pool: str, wall_s: float, info: RenderInfo) -> None:
        """A render succeeded on `pool` in `wall_s` as the scheduler saw it."""
        cold_s = info.boot_s + info.restore_s if info.cold_start else 0.0
        self._render.labels(pool).observe(max(0.0, wall_s))
        if info.cold_start:
            self._cold.labels(pool).observe(max(0.0, cold_s))
        self._gpu.labels(pool).inc(max(0.0, info.render_s + cold_s))
        self._video.labels(pool).inc(max(0.0, info.duration_s))

    def render_failed(self, pool: str, reason: str) -> None:
        """A render on `pool` failed; `reason` is one of `FAILURE_REASONS` (see
        `failure_reason`), anything else counts as `other`."""
        label = reason if reason in FAILURE_REASONS else "other"
        self._render_failures.labels(pool or NO_POOL, label).inc()

    def upload_observed(self, bytes_: int, seconds: float) -> None:
        self._upload.observe(max(0.0, seconds))
        self._upload_bytes.inc(max(0, bytes_))

    def upload_failed(self) -> None:
        self._upload_failures.inc()

    def webhook_delivery(self, outcome: str, seconds: float) -> None:
        """One delivery attempt ended with `outcome`, one of `WEBHOOK_OUTCOMES`."""
        self._webhooks.labels(outcome).inc()
        self._webhook_seconds.observe(seconds)

    def recalled(self, pool: str, reason: RecallReason) -> None:
        self._recalled.labels(pool, reason.value).inc()

    def shed(self, reason: str, count: int = 1) -> None:
        """`count` jobs were shed: `queue_full` (refused at submit), `queue_timeout`, or
        `expired` (their deadline passed in the queue)."""
        if reason not in SHED_REASONS:
            raise ValueError(f"not a shed reason: {reason!r}")
        if count > 0:
            self._shed.labels(str(reason)).inc(count)

    def transition(self, old: Mode, new: Mode) -> None:
        self._transitions.labels(old.value, new.value).inc()

    def fleet(self, endpoints: Iterable[Endpoint]) -> None:
        """Counts the in-house endpoints by state, as the latest decision read them."""
        states = Tally(e.state for e in endpoints)
        for state in ENDPOINT_STATES:
            self._endpoints.labels(state).set(states[state])

    def decision(self, plan: Plan, signal: Signal, spill_pool: str | None) -> None:
        """Sets the gauges from one spillover decision and the signal it was made on;
        the second fleet's gauges only when there is one (`spill_pool`)."""
        est = signal.estimates
        self._queue_depth.set(signal.queued)
        self._queue_oldest.set(max(signal.queue_ages_ms, default=0) / 1000)
        self._inflight.labels(INHOUSE_POOL).set(signal.inhouse_busy)
        self._capacity.labels(INHOUSE_POOL).set(signal.inhouse_slots)
        self._est_render.labels(INHOUSE_POOL).set(est.inhouse_render_ms / 1000)
        mode = plan.state.mode
        self._mode.set(1 if mode is Mode.SPILL else 0)
        for m in Mode:
            self._mode_info.labels(m.value).set(1 if m is mode else 0)
        for control in SpillControl:
            self._spill_control.labels(control.value).set(
                1 if control is signal.controls.spill else 0
            )
        self._dispatch_paused.set(1 if signal.controls.dispatch_paused else 0)
        self._spend.set(signal.spent_usd)
        self._budget_left.set(plan.budget_left_usd)
        if spill_pool:
            self._inflight.labels(spill_pool).set(signal.modal_inflight)
            self._capacity.labels(spill_pool).set(self._policy.modal_cap)
            self._ready_slots.labels(spill_pool).set(signal.modal_ready_slots)
            self._est_render.labels(spill_pool).set(est.modal_render_ms / 1000)
            self._est_cold.labels(spill_pool).set(est.cold_start_ms / 1000)
            self._min_containers.labels(spill_pool).set(plan.autoscale.min_containers)
            self._buffer_containers.labels(spill_pool).set(plan.autoscale.buffer_containers)
            self._available.labels(spill_pool).set(1 if signal.modal_available else 0)
        counts: dict[tuple[str, str], int] = {}
        for d in plan.decisions:
            key = (d.target.value, d.reason.value)
            counts[key] = counts.get(key, 0) + d.count
        for key in self._decision_keys - counts.keys():
            self._decision_jobs.labels(*key).set(0)
        for key, count in counts.items():
            self._decision_jobs.labels(*key).set(count)
        self._decision_keys |= counts.keys()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    """A scrape in flight does not hold up shutdown."""


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class MetricsServer:
    """Serves `/metrics` (Prometheus text format) from a daemon thread, so it never
    blocks the event loop. It does what `prometheus_client.start_http_server` does, with
    a short poll interval so that `stop` returns within about 50 ms.

    `start` returns the bound port (port 0 picks a free one) and is idempotent, as is
    `stop`, which closes the socket and joins the thread."""

    def __init__(self, source: CollectorRegistry | SchedulerMetrics, host: str, port: int) -> None:
        self._registry = source.registry if isinstance(source, SchedulerMetrics) else source
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int | None:
        """The bound port while serving."""
        server = self._server
        return server.server_port if server else None

    def start(self) -> int:
        with self._lock:
            if self._server is None:
                family, _, _, _, sockaddr = socket.getaddrinfo(
                    self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
                )[0]
                server_class = _Server6 if family == socket.AF_INET6 else _Server
                server = make_server(
                    str(sockaddr[0]),
                    self._port,
                    make_wsgi_app(self._registry),
                    server_class,
                    handler_class=_QuietHandler,
                )
                thread = threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": _POLL_INTERVAL_S},
                    name=f"metrics-http-{server.server_port}",
                    daemon=True,
                )
                thread.start()
                self._server, self._thread = server, thread
            return self._server.server_port

    def stop(self) -> None:
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
