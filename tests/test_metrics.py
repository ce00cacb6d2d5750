"""The scheduler's Prometheus metrics, their HTTP endpoint, and the ops files built on
them: alert rules, the Grafana dashboard and the sample scrape config.

The ops files are checked by parsing them for real (YAML, JSON) and matching every
metric and label their PromQL uses against live `SchedulerMetrics` and `GatewayMetrics`
registries. The PromQL itself is scanned with a small tokenizer, not a parser:
`promtool` is not installed here, so `promtool check rules` does not run in these
tests.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter

from gateway.metrics import GatewayMetrics
from scheduler.policy import (
    Autoscale,
    Decision,
    Estimates,
    Mode,
    Plan,
    PolicyConfig,
    PolicyState,
    Reason,
    RecallReason,
    Signal,
    Target,
)
from scheduler.pools.base import RenderInfo
from scheduler.telemetry.metrics import (
    FAILURE_REASONS,
    MetricsServer,
    SchedulerMetrics,
    TenantLabels,
    failure_reason,
)

OPS = Path(__file__).resolve().parent.parent / "ops"
ALERTS = OPS / "prometheus" / "alerts.yml"
SCRAPE = OPS / "prometheus" / "prometheus.yml"
DASHBOARD = OPS / "grafana" / "spillway.json"

POLICY = PolicyConfig(budget_usd_month=500.0, max_queued=100, max_containers=4, concurrency=2)

# Series Prometheus adds to every scrape, and the labels it attaches to each.
SCRAPE_SAMPLES: dict[str, frozenset[str]] = {"up": frozenset()}
TARGET_LABELS = frozenset({"job", "instance"})


def render_info(
    *, cold: bool = False, boot_s: float = 0.0, restore_s: float = 0.0, render_s: float = 1.0
) -> RenderInfo:
    return RenderInfo(
        container_id="c-1",
        cold_start=cold,
        boot_s=boot_s,
        restore_s=restore_s,
        render_s=render_s,
        bytes=1000,
        sha256="0" * 64,
        duration_s=4.0,
        frames=96,
        engine="standin",
    )


def signal(*, queued: int = 5, modal_available: bool = True, spent_usd: float = 120.0) -> Signal:
    return Signal(
        queued=queued,
        queue_ages_ms=(90_000, 30_000),
        inhouse_busy=3,
        inhouse_slots=4,
        modal_inflight=2,
        modal_ready_slots=6,
        modal_available=modal_available,
        spent_usd=spent_usd,
        estimates=Estimates(inhouse_render_ms=20_000, modal_render_ms=15_000, cold_start_ms=8_000),
    )


def plan(mode: Mode, *decisions: Decision, budget_left_usd: float = 370.0) -> Plan:
    return Plan(
        state=PolicyState(mode=mode),
        decisions=decisions,
        autoscale=Autoscale(
            min_containers=1, buffer_containers=2, max_containers=4, scaledown_window_s=300
        ),
        budget_left_usd=budget_left_usd,
    )


@pytest.fixture
def metrics() -> SchedulerMetrics:
    return SchedulerMetrics(POLICY, pools=("inhouse", "modal"))


def value(m: SchedulerMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


# Unit: the metrics move as the methods are called


def test_job_finished_counts_status_and_pool_and_times_completed_jobs(
    metrics: SchedulerMetrics,
) -> None:
    """Terminal jobs count by pool and status, never-dispatched ones under pool 'none',
    and only completed jobs feed the end-to-end latency histogram."""
    metrics.job_finished("modal", "completed", 42.0)
    metrics.job_finished("modal", "completed", 8.0)
    metrics.job_finished("inhouse", "failed", 5.0)
    metrics.job_finished("", "cancelled", None)

    assert value(metrics, "spillway_jobs_finished_total", pool="modal", status="completed") == 2
    assert value(metrics, "spillway_jobs_finished_total", pool="inhouse", status="failed") == 1
    assert value(metrics, "spillway_jobs_finished_total", pool="none", status="cancelled") == 1
    assert value(metrics, "spillway_job_latency_seconds_count", pool="modal") == 2
    assert value(metrics, "spillway_job_latency_seconds_sum", pool="modal") == 50.0
    assert value(metrics, "spillway_job_latency_seconds_bucket", pool="modal", le="10.0") == 1
    assert value(metrics, "spillway_job_latency_seconds_count", pool="inhouse") is None


def test_job_finished_refuses_a_status_that_is_not_terminal(metrics: SchedulerMetrics) -> None:
    """A non-terminal status is a caller bug and raises instead of minting a label."""
    with pytest.raises(ValueError, match="in_progress"):
        metrics.job_finished("inhouse", "in_progress", None)


def test_render_observed_records_latency_cold_start_gpu_seconds_and_video(
    metrics: SchedulerMetrics,
) -> None:
    """A warm render adds its wall time and render GPU-seconds; a cold one also adds
    its boot plus restore to the cold-start histogram and to the GPU-seconds."""
    metrics.render_observed("inhouse", 10.0, render_info(render_s=9.0))
    metrics.render_observed(
        "modal", 30.0, render_info(cold=True, boot_s=2.0, restore_s=3.0, render_s=20.0)
    )

    assert value(metrics, "spillway_render_seconds_count", pool="inhouse") == 1
    assert value(metrics, "spillway_render_seconds_sum", pool="inhouse") == 10.0
    assert value(metrics, "spillway_render_gpu_seconds_total", pool="inhouse") == 9.0
    assert value(metrics, "spillway_cold_start_seconds_count", pool="inhouse") is None
    assert value(metrics, "spillway_render_seconds_sum", pool="modal") == 30.0
    assert value(metrics, "spillway_cold_start_seconds_count", pool="modal") == 1
    assert value(metrics, "spillway_cold_start_seconds_sum", pool="modal") == 5.0
    assert value(metrics, "spillway_cold_start_seconds_bucket", pool="modal", le="5.0") == 1
    assert value(metrics, "spillway_cold_start_seconds_bucket", pool="modal", le="3.0") == 0
    assert value(metrics, "spillway_render_gpu_seconds_total", pool="modal") == 25.0
    assert value(metrics, "spillway_rendered_video_seconds_total", pool="modal") == 4.0


def test_render_failed_counts_by_pool_and_bounded_reason(metrics: SchedulerMetrics) -> None:
    """Failures count by pool and reason, and a reason outside the bounded set is
    counted as 'other' rather than becoming a new series."""
    metrics.render_failed("modal", "oom")
    metrics.render_failed("modal", "oom")
    metrics.render_failed("inhouse", "something new")

    assert value(metrics, "spillway_render_failures_total", pool="modal", reason="oom") == 2
    assert value(metrics, "spillway_render_failures_total", pool="inhouse", reason="other") == 1
    assert (
        value(metrics, "spillway_render_failures_total", pool="inhouse", reason="something new")
        is None
    )


@pytest.mark.parametrize(
    ("message", "retryable", "reason"),
    [
        ("Modal call fc-1 failed: RuntimeError: CUDA out of memory", True, "oom"),
        ("torch.OutOfMemoryError: tried to allocate 2 GiB", True, "oom"),
        ("container OOMKilled", True, "oom"),
        ("renderer 10.0.0.1:50061: INTERNAL: CUDA error: an illegal memory access", True, "oom"),
        ("Modal call fc-1 timed out in its container: 1800 s", True, "timeout"),
        ("Modal call fc-1 did not finish within 1800 s; cancelling it", True, "timeout"),
        ("renderer 10.0.0.1:50061: DEADLINE_EXCEEDED: Deadline Exceeded", True, "timeout"),
        ("upstream timeout", True, "timeout"),
        ("Modal is full (ResourceExhaustedError); the job waits for room", True, "full"),
        ("renderer 10.0.0.1:50061: RESOURCE_EXHAUSTED: no free slot", True, "full"),
        ("Modal call fc-1: renderer busy: 2 of 2 slots taken", True, "full"),
        ("Modal is unavailable (AuthError); not spilling to it for 30 s", True, "unavailable"),
        ("renderer 10.0.0.1:50061: UNAVAILABLE: connection refused", True, "unavailable"),
        ("seconds must be between 1 and 20", False, "invalid"),
        ("renderer 10.0.0.1:50061: INVALID_ARGUMENT: bad size", False, "invalid"),
        ("burst container b-3 is gone (exited with 1)", True, "crash"),
        ("renderer process died mid-stream", True, "crash"),
        ("worker crashed: Segmentation fault", True, "crash"),
        ("Modal call fc-1: its result expired", True, "other"),
        ("renderer 10.0.0.1:50061: MP4 arrived corrupted (10 bytes)", True, "other"),
    ],
)
def test_failure_reason_classifies_render_errors(
    message: str, retryable: bool, reason: str
) -> None:
    """Render error messages map onto the bounded reason set: GPU memory first, then
    timeouts, a full fleet, an unavailable one, bad input, crashes, and the rest."""
    assert failure_reason(message, retryable) == reason
    assert reason in FAILURE_REASONS


def test_uploads_count_bytes_time_and_failures(metrics: SchedulerMetrics) -> None:
    """Uploads add their bytes and duration; failed ones count on their own."""
    metrics.upload_observed(2_000_000, 0.3)
    metrics.upload_observed(1_000_000, 1.5)
    metrics.upload_failed()

    assert value(metrics, "spillway_upload_bytes_total") == 3_000_000
    assert value(metrics, "spillway_upload_seconds_count") == 2
    assert value(metrics, "spillway_upload_seconds_bucket", le="0.5") == 1
    assert value(metrics, "spillway_upload_failures_total") == 1


def test_shed_counts_refused_and_timed_out_jobs(metrics: SchedulerMetrics) -> None:
    """Refused submits and queue timeouts count by reason, several at once if need be,
    and an unknown reason raises."""
    metrics.shed("queue_full")
    metrics.shed(Reason.QUEUE_TIMEOUT, count=3)

    assert value(metrics, "spillway_jobs_shed_total", reason="queue_full") == 1
    assert value(metrics, "spillway_jobs_shed_total", reason="queue_timeout") == 3
    with pytest.raises(ValueError, match="budget"):
        metrics.shed("budget")


def test_transitions_dispatches_and_submits_count(metrics: SchedulerMetrics) -> None:
    """Mode transitions count by direction, dispatches by pool, submits in total."""
    metrics.transition(Mode.NORMAL, Mode.SPILL)
    metrics.dispatched("modal", "modal_faster", 1.0, tenant="acme", priority="interactive")
    metrics.dispatched("modal", "modal_faster", 1.0, tenant="acme", priority="interactive")
    for _ in range(5):
        metrics.submitted("acme", "interactive")

    transitions = "spillway_spillover_transitions_total"
    assert metrics.registry.get_sample_value(transitions, {"from": "normal", "to": "spill"}) == 1
    assert metrics.registry.get_sample_value(transitions, {"from": "spill", "to": "normal"}) == 0
    assert value(metrics, "spillway_jobs_dispatched_total", pool="modal") == 2
    assert value(metrics, "spillway_jobs_submitted_total") == 5


def test_declared_pools_start_at_zero(metrics: SchedulerMetrics) -> None:
    """Counters of the declared pools exist at zero before any event, so `rate()` and
    `increase()` see the very first failure or dispatch."""
    assert value(metrics, "spillway_render_failures_total", pool="modal", reason="oom") == 0
    assert value(metrics, "spillway_jobs_dispatched_total", pool="inhouse") == 0
    assert value(metrics, "spillway_jobs_finished_total", pool="none", status="failed") == 0
    assert value(metrics, "spillway_jobs_shed_total", reason="queue_timeout") == 0


def test_decision_sets_queue_pool_mode_spend_and_autoscaler_gauges(
    metrics: SchedulerMetrics,
) -> None:
    """One decision sets the queue, per-pool in-flight and capacity, mode, spend,
    budget, estimates and autoscaler gauges from the plan and its signal."""
    metrics.decision(
        plan(
            Mode.SPILL,
            Decision(Target.INHOUSE, 1, Reason.INHOUSE_SLOT_FREE),
            Decision(Target.HOLD, 4, Reason.BUDGET_EXHAUSTED),
        ),
        signal(),
        "modal",
    )

    assert value(metrics, "spillway_queue_depth") == 5
    assert value(metrics, "spillway_queue_oldest_wait_seconds") == 90.0
    assert value(metrics, "spillway_queue_limit") == 100
    assert value(metrics, "spillway_pool_inflight", pool="inhouse") == 3
    assert value(metrics, "spillway_pool_capacity", pool="inhouse") == 4
    assert value(metrics, "spillway_pool_inflight", pool="modal") == 2
    assert value(metrics, "spillway_pool_capacity", pool="modal") == 8
    assert value(metrics, "spillway_pool_ready_slots", pool="modal") == 6
    assert value(metrics, "spillway_spillover_mode") == 1
    assert value(metrics, "spillway_spillover_mode_info", mode="spill") == 1
    assert value(metrics, "spillway_spillover_mode_info", mode="normal") == 0
    assert value(metrics, "spillway_spill_spend_usd") == 120.0
    assert value(metrics, "spillway_spill_budget_usd") == 500.0
    assert value(metrics, "spillway_spill_budget_left_usd") == 370.0
    assert value(metrics, "spillway_estimate_render_seconds", pool="inhouse") == 20.0
    assert value(metrics, "spillway_estimate_render_seconds", pool="modal") == 15.0
    assert value(metrics, "spillway_estimate_cold_start_seconds", pool="modal") == 8.0
    assert value(metrics, "spillway_spill_min_containers", pool="modal") == 1
    assert value(metrics, "spillway_spill_buffer_containers", pool="modal") == 2
    assert value(metrics, "spillway_spill_available", pool="modal") == 1
    decision_jobs = "spillway_policy_decision_jobs"
    assert value(metrics, decision_jobs, target="hold", reason="budget_exhausted") == 4


def test_a_later_decision_replaces_the_earlier_one(metrics: SchedulerMetrics) -> None:
    """Gauges follow the latest decision: the mode flips back, the spill pool reads
    unavailable, and decision reasons no longer given drop to zero."""
    metrics.decision(
        plan(Mode.SPILL, Decision(Target.MODAL, 2, Reason.MODAL_FASTER)), signal(), "modal"
    )
    metrics.decision(
        plan(Mode.NORMAL, Decision(Target.INHOUSE, 1, Reason.INHOUSE_SLOT_FREE)),
        signal(queued=1, modal_available=False),
        "modal",
    )

    assert value(metrics, "spillway_queue_depth") == 1
    assert value(metrics, "spillway_spillover_mode") == 0
    assert value(metrics, "spillway_spillover_mode_info", mode="normal") == 1
    assert value(metrics, "spillway_spill_available", pool="modal") == 0
    decision_jobs = "spillway_policy_decision_jobs"
    assert value(metrics, decision_jobs, target="modal", reason="modal_faster") == 0
    assert value(metrics, decision_jobs, target="inhouse", reason="inhouse_slot_free") == 1


def test_decision_without_a_second_fleet_sets_no_spill_pool_series(
    metrics: SchedulerMetrics,
) -> None:
    """With no second fleet the in-house and spend gauges are set, and no spill-pool
    series appears (so the unavailable alert cannot fire for a pool that is not there)."""
    metrics.decision(plan(Mode.NORMAL), signal(modal_available=False), None)

    assert value(metrics, "spillway_pool_inflight", pool="inhouse") == 3
    assert value(metrics, "spillway_spill_spend_usd") == 120.0
    samples = {s.name for family in metrics.registry.collect() for s in family.samples}
    assert "spillway_spill_available" not in samples
    assert "spillway_estimate_cold_start_seconds" not in samples


def test_tenant_labels_stay_bounded() -> None:
    """Tenants named in the weights keep their label; the first `limit` others get their
    own; every later one counts as `other`."""
    metrics = SchedulerMetrics(POLICY, tenants=TenantLabels(["vip"], 2))
    for tenant in ("a", "b", "c", "d", "vip", "a"):
        metrics.submitted(tenant, "batch")
    submitted = "spillway_tenant_jobs_submitted_total"
    counts = {
        t: metrics.registry.get_sample_value(submitted, {"tenant": t, "priority": "batch"})
        for t in ("a", "b", "c", "d", "vip", "other")
    }
    assert counts == {"a": 2, "b": 1, "c": None, "d": None, "vip": 1, "other": 2}


def test_replicas_in_one_process_keep_separate_registries() -> None:
    """Two replicas' metrics neither collide on registration nor see each other's
    values."""
    a = SchedulerMetrics(POLICY, pools=("inhouse",))
    b = SchedulerMetrics(POLICY, pools=("inhouse",))
    a.dispatched("inhouse", "inhouse_slot_free", 0.5, tenant="acme", priority="interactive")

    assert value(a, "spillway_jobs_dispatched_total", pool="inhouse") == 1
    assert value(b, "spillway_jobs_dispatched_total", pool="inhouse") == 0


# Unit: the HTTP endpoint


def _get(port: int) -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


def test_metrics_server_serves_text_format_on_a_free_port_and_stops(
    metrics: SchedulerMetrics,
) -> None:
    """The endpoint binds a free port, serves the registry in the Prometheus text
    format, keeps its port on a second start, and refuses connections once stopped
    (stopping twice is harmless)."""
    metrics.dispatched("modal", "modal_faster", 1.0, tenant="acme", priority="interactive")
    server = MetricsServer(metrics, "127.0.0.1", 0)
    port = server.start()
    try:
        assert port > 0 and server.start() == port and server.port == port
        content_type, body = _get(port)
        assert content_type.startswith("text/plain; version=0.0.4")
        assert "# HELP spillway_jobs_dispatched_total " in body
        assert 'spillway_jobs_dispatched_total{pool="modal"} 1.0' in body
    finally:
        server.stop()
    server.stop()

    assert server.port is None
    with pytest.raises(urllib.error.URLError):
        _get(port)


def test_metrics_server_accepts_a_bare_registry() -> None:
    """Any registry can be served, and the context manager stops the server."""
    registry = CollectorRegistry()
    Counter("spillway_probe_total", "A probe.", registry=registry).inc()
    with MetricsServer(registry, "127.0.0.1", 0) as server:
        assert server.port is not None
        _, body = _get(server.port)
        assert "spillway_probe_total 1.0" in body
    assert server.port is None


# Consistency: the ops files use only what the code defines


def _exercised() -> SchedulerMetrics:
    m = SchedulerMetrics(POLICY, pools=("inhouse", "modal"))
    m.submitted("acme", "interactive")
    m.refused("acme", "rate_limited")
    m.job_finished("modal", "completed", 12.0)
    m.dispatched("modal", "modal_faster", 1.0, tenant="acme", priority="batch")
    m.render_observed("modal", 30.0, render_info(cold=True, boot_s=1.0, render_s=20.0))
    m.render_failed("modal", "oom")
    m.upload_observed(1000, 0.2)
    m.upload_failed()
    m.shed("queue_full")
    m.recalled("modal", RecallReason.INHOUSE_SOONER)
    m.transition(Mode.NORMAL, Mode.SPILL)
    m.decision(plan(Mode.SPILL, Decision(Target.MODAL, 1, Reason.MODAL_FASTER)), signal(), "modal")
    return m


def _samples(registry: CollectorRegistry) -> dict[str, frozenset[str]]:
    labels: dict[str, set[str]] = defaultdict(set)
    for family in registry.collect():
        for sample in family.samples:
            labels[sample.name] |= sample.labels.keys()
    return {name: frozenset(names) for name, names in labels.items()}


def _known_samples() -> dict[str, frozenset[str]]:
    """Every sample name the scheduler and the gateway expose, with its label names."""
    gateway = GatewayMetrics()
    gateway.observe("/v1/videos", "POST", 200, 0.1)
    return {
        **_samples(_exercised().registry),
        **_samples(gateway.registry),
        **SCRAPE_SAMPLES,
    }


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset"})
_FUNCTIONS = frozenset(
    {"sum", "max", "min", "avg", "count", "rate", "increase", "histogram_quantile",
     "predict_linear"}
)  # fmt: skip


class PromQLRefs:
    """The metrics, matcher labels and grouping labels one PromQL expression uses,
    found by a tokenizer: strings, ranges and label lists are cut out first."""

    def __init__(self, expr: str) -> None:
        text = _STRING.sub('""', expr)
        self.matchers: list[tuple[str, set[str]]] = [
            (m.group(1), set(_MATCHER.findall(m.group(2)))) for m in _SELECTOR.finditer(text)
        ]
        text = _RANGE.sub("", re.sub(r"\{[^}]*\}", "", text))
        self.grouping: set[str] = set()
        for group in _GROUPING.findall(text):
            self.grouping |= {label.strip() for label in group.split(",") if label.strip()}
        text = _GROUPING.sub("", text)
        self.functions: set[str] = set()
        self.metrics: set[str] = set()
        for name, call in _IDENT.findall(text):
            if call:
                self.functions.add(name)
            elif name not in _KEYWORDS:
                self.metrics.add(name)


def _check_expr(expr: str, known: dict[str, frozenset[str]], where: str) -> PromQLRefs:
    refs = PromQLRefs(expr)
    assert refs.metrics, f"{where}: no metric in {expr!r}"
    assert refs.metrics <= known.keys(), f"{where}: unknown {refs.metrics - known.keys()}"
    assert refs.functions <= _FUNCTIONS, f"{where}: unexpected {refs.functions - _FUNCTIONS}"
    for name, labels in refs.matchers:
        allowed = known.get(name, frozenset()) | TARGET_LABELS
        assert labels <= allowed, f"{where}: {name} has no label {labels - allowed}"
    available = TARGET_LABELS.union(*(known[name] for name in refs.metrics))
    assert refs.grouping <= available, f"{where}: no label {refs.grouping - available}"
    return refs


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    exprs = [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    exprs += [
        (f"annotation {a['name']!r}", a["expr"])
        for a in dashboard["annotations"]["list"]
        if "expr" in a
    ]
    return exprs


def test_promql_scanner_finds_metrics_labels_and_functions() -> None:
    """The scanner behind the consistency checks separates metrics from functions,
    matcher labels from values, and grouping labels from both."""
    refs = PromQLRefs(
        'histogram_quantile(0.99, sum by (le, pool) (rate(spillway_x_bucket{pool="a b",'
        'reason!~"full|oom"}[5m]))) > 3 * 86400 and on () max(up) > 1e3'
    )

    assert refs.metrics == {"spillway_x_bucket", "up"}
    assert refs.functions == {"histogram_quantile", "sum", "rate", "max"}
    assert refs.matchers == [("spillway_x_bucket", {"pool", "reason"})]
    assert refs.grouping == {"le", "pool"}


def test_alert_rules_use_only_defined_metrics_and_labels() -> None:
    """Every alert expression names only metrics and labels that the scheduler's
    registry (after each method ran once) or the gateway defines."""
    known = _known_samples()
    rules = _alert_rules()
    assert rules
    for rule in rules:
        _check_expr(rule["expr"], known, f"alert {rule['alert']}")


def test_alert_rules_are_complete() -> None:
    """Each alert has a unique name, a `for:` duration, a severity, a summary and a
    description, and its annotations only use labels its expression keeps."""
    known = _known_samples()
    rules = _alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        where = f"alert {rule['alert']}"
        assert re.fullmatch(r"\d+[smhd]", rule["for"]), where
        assert rule["labels"]["severity"] in {"warning", "critical"}, where
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], where
        used = set(re.findall(r"\$labels\.(\w+)", json.dumps(rule["annotations"])))
        refs = PromQLRefs(rule["expr"])
        aggregated = bool({"sum", "max", "min", "avg", "count"} & refs.functions)
        kept = (
            refs.grouping
            if aggregated
            else TARGET_LABELS.union(*(known[name] for name in refs.metrics))
        )
        assert used <= kept, f"{where}: annotations use {used - kept}, dropped by aggregation"


def test_dashboard_targets_use_only_defined_metrics_and_labels() -> None:
    """Every dashboard query (panels and annotations) names only metrics and labels
    that the scheduler or the gateway defines."""
    known = _known_samples()
    exprs = _dashboard_exprs(_dashboard())
    assert exprs
    for where, expr in exprs:
        _check_expr(expr, known, where)


def test_every_scheduler_metric_is_on_the_dashboard_or_in_an_alert() -> None:
    """No scheduler metric is defined without being shown or alerted on, and the
    gateway's two metrics are on the dashboard."""
    used: set[str] = set()
    for _, expr in _dashboard_exprs(_dashboard()):
        used |= PromQLRefs(expr).metrics
    for rule in _alert_rules():
        used |= PromQLRefs(rule["expr"]).metrics
    families = {
        family.name for family in _exercised().registry.collect()
        if family.name.startswith("spillway_")
    }  # fmt: skip
    shown = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in used}
    assert families <= shown, f"not shown: {sorted(families - shown)}"
    assert {"spillway_gateway_requests_total", "spillway_gateway_request_seconds_bucket"} <= used


def test_dashboard_is_importable_with_a_datasource_variable() -> None:
    """The dashboard declares a Prometheus datasource variable, every query uses it,
    and panel ids and each panel's refIds are unique."""
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    source = {"type": "prometheus", "uid": "${datasource}"}
    for panel in dashboard["panels"]:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == source, panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert all(target["datasource"] == source for target in panel["targets"])


def test_scrape_config_covers_scheduler_and_gateway_and_loads_the_alerts() -> None:
    """The sample Prometheus config scrapes the scheduler on 9464 and the gateway on
    8000 at /metrics, under the job names the alerts use, and loads alerts.yml."""
    config = yaml.safe_load(SCRAPE.read_text())
    assert [(SCRAPE.parent / path).resolve() for path in config["rule_files"]] == [ALERTS.resolve()]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    ports = {
        name: {t.rsplit(":", 1)[1] for sc in job["static_configs"] for t in sc["targets"]}
        for name, job in jobs.items()
    }
    assert ports == {"spillway-scheduler": {"9464"}, "spillway-gateway": {"8000"}}
    assert all(job["metrics_path"] == "/metrics" for job in jobs.values())
    alert_jobs = set(re.findall(r'job="([^"]+)"', ALERTS.read_text()))
    assert alert_jobs <= jobs.keys()
