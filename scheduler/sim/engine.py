"""The discrete-event engine: replays a trace through a policy against the fleet models.

A heap of events on a virtual clock in integer milliseconds, each with a sequence
number so that ties resolve the same way every run: arrivals, completions, a container
ready, an idle container's scaledown deadline, the policy's recheck time, and (for the
policies that do not shed on their own) a queued job's timeout. No sleeping, no wall
clock; the only randomness is the fleet model's seeded draws (boots, GPU waits, render
noise: `scheduler.sim.draws`), so the same trace, configuration and seed give the same
run.

At each instant the engine applies every event due then (so jobs arriving in the same
millisecond are all queued, and count against `max_queued`, before anything is
dispatched) and, if any of them could change the answer, asks the policy (with a
`Signal` built as `scheduler.dispatch.spillover` builds it: Modal's ready slots are its booted
containers x concurrency, its starting slots those of the containers not yet up, and
the spend is the meter's bill so far), carries the plan out as `scheduler.dispatch.dispatcher`
does, and asks again until a plan starts nothing:

- INHOUSE n: the first n of the line (interactive, then batch; each by priority, then
  arrival), while a slot is free;
- MODAL `timeout_rescue` n: the n longest waiting interactive jobs; MODAL otherwise:
  from the head of the interactive line (batch jobs never spill); each while Modal's
  in-flight is under `max_containers x concurrency` (the input then waits in Modal's
  queue until a container has room: `scheduler.sim.fleets`);
- SHED: queued interactive jobs that have waited `plan.shed_waits_over_ms` fail
  (`timed_out`); batch jobs wait, as the scheduler's queue timeout never sheds them;
- the plan's `Autoscale` is applied to the fleet at once (no deploy resets it), and
  the policy is asked again at `plan.recheck_at_ms` if nothing else happens by then.

Then the fleet converges (boots for `min_containers` and buffer, stops idle ones past
their window). An arrival that finds `max_queued` jobs queued is refused (`shed`).
When the last job has left, the trace is over: the engine stops asking the policy,
drops `min_containers` to 0 (keeping the last plan's scaledown window) and bills each
container until that window ends.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from scheduler.policy import (
    Autoscale,
    Mode,
    Plan,
    PolicyState,
    Reason,
    Signal,
    Target,
    Transition,
    meter,
)
from scheduler.policy.estimates import AGES_SAMPLED, SAMPLES_KEPT, estimate
from scheduler.sim.config import SimConfig
from scheduler.sim.draws import Draws
from scheduler.sim.fleets import (
    ContainerFleet,
    InhouseFleet,
    ModalFleet,
    Placement,
    WakeKind,
    WarmFleet,
)
from scheduler.sim.policies import Demand, SimPolicy, get_policy, oracle
from scheduler.sim.trace import MAX_PRIORITY, TraceJob


class Pool(StrEnum):
    INHOUSE = "inhouse"
    MODAL = "modal"


class Outcome(StrEnum):
    COMPLETED = "completed"
    SHED = "shed"
    """Refused on arrival: the queue was at `max_queued`."""
    TIMED_OUT = "timed_out"
    """Failed after waiting the queue timeout."""


@dataclass(frozen=True)
class JobResult:
    index: int
    arrival_ms: int
    priority: int
    outcome: Outcome
    batch: bool = False
    pool: Pool | None = None
    dispatch_ms: int | None = None
    """When the policy sent it to a pool."""
    start_ms: int | None = None
    """When it began rendering (after its container's boot, if cold)."""
    finish_ms: int | None = None
    """When it completed, or when it was shed or timed out."""
    cold: bool = False
    """It waited for its Modal container's boot or restore (not merely for a slot)."""

    @property
    def latency_ms(self) -> int | None:
        if self.outcome is not Outcome.COMPLETED or self.finish_ms is None:
            return None
        return self.finish_ms - self.arrival_ms


@dataclass(frozen=True)
class Sample:
    """The system just after an instant at which something changed."""

    t_ms: int
    queued: int
    mode: Mode
    inhouse_busy: int
    modal_inflight: int
    containers: int
    """Modal containers up: starting (waiting for a GPU, booting, restoring) or ready."""
    ready_containers: int
    starting_containers: int


@dataclass(frozen=True)
class RunResult:
    policy: str
    jobs: tuple[JobResult, ...]
    transitions: tuple[Transition, ...]
    series: tuple[Sample, ...]
    """One sample per instant at which the queue, mode or a fleet changed: for plots."""
    modal_gpu_ms: int
    """Container-milliseconds billed (`scheduler.policy.meter`)."""
    modal_usd: float
    cold_starts: int
    """Containers started."""
    end_ms: int
    """The last instant at which anything happened (the last container stopping, if
    Modal ran)."""


class _Event(StrEnum):
    START = "start"
    ARRIVAL = "arrival"
    DONE = "done"
    READY = "ready"
    SCALEDOWN = "scaledown"
    RECHECK = "recheck"
    TIMEOUT = "timeout"


@dataclass
class _Job:
    job: TraceJob
    outcome: Outcome | None = None
    pool: Pool | None = None
    dispatch_ms: int | None = None
    placement: Placement | None = None
    """Where and when it began rendering; None until it has."""
    finish_ms: int | None = None


def simulate(trace: Sequence[TraceJob], config: SimConfig, policy: SimPolicy | str) -> RunResult:
    """Replays the trace through one policy; deterministic."""
    if isinstance(policy, str):
        policy = get_policy(policy)
    if policy.knows_arrivals:
        model = config.modal
        boot = max(model.full_boot.p99_ms, model.restore.p99_ms) + model.gpu_wait.p99_ms
        policy = replace(policy, decide=oracle(_bound_demand(trace, config), boot))
    return _Run(trace, config, policy).run()


def _bound_demand(trace: Sequence[TraceJob], config: SimConfig) -> Demand:
    """When the lower bound runs how many inputs on the second fleet."""
    steps: dict[int, int] = {}
    for job in simulate(trace, config, "bound").jobs:
        if job.pool is Pool.MODAL and job.start_ms is not None and job.finish_ms is not None:
            steps[job.start_ms] = steps.get(job.start_ms, 0) + 1
            steps[job.finish_ms] = steps.get(job.finish_ms, 0) - 1
    at_ms, inputs, running = [], [], 0
    for t_ms in sorted(steps):
        running += steps[t_ms]
        at_ms.append(config.start_ms + t_ms)
        inputs.append(running)
    return Demand(tuple(at_ms), tuple(inputs))


class _Run:
    def __init__(self, trace: Sequence[TraceJob], config: SimConfig, policy: SimPolicy) -> None:
        self.config = config
        self.policy = policy
        self.jobs = [_Job(j) for j in sorted(trace, key=lambda j: j.index)]
        if [j.job.index for j in self.jobs] != list(range(len(self.jobs))):
            raise ValueError("trace job indexes must be 0 to n-1 (as parse_trace numbers them)")
        self.open = len(self.jobs)
        """Jobs that have not yet completed, been shed or timed out (arrived or not)."""
        self.now = 0
        self._heap: list[tuple[int, int, _Event, int]] = []
        self._seq = itertools.count()
        self.by_age: dict[int, _Job] = {}
        """Queued interactive jobs, longest waiting first (arrival order)."""
        self.batch_by_age: dict[int, _Job] = {}
        """Queued batch jobs, longest waiting first."""
        self.lines: dict[bool, list[dict[int, _Job]]] = {
            batch: [{} for _ in range(MAX_PRIORITY + 1)] for batch in (False, True)
        }
        """Queued jobs by class (batch or not), then priority, each in arrival order."""
        self.inhouse = InhouseFleet(config.inhouse.slots)
        self.draws = Draws(config.seed)
        self.modal: ModalFleet = (
            WarmFleet(config.modal)
            if policy.warm_fleet
            else ContainerFleet(config.modal, self.draws)
        )
        c = config.policy
        self.autoscale = Autoscale(0, c.buffer_containers, c.max_containers, c.scaledown_window_s)
        """The autoscaler settings of the latest plan."""
        self.state = PolicyState()
        self.transitions: list[Transition] = []
        self.series: list[Sample] = []
        self.renders: dict[Pool, deque[int]] = {p: deque(maxlen=SAMPLES_KEPT) for p in Pool}
        self.colds: deque[int] = deque(maxlen=SAMPLES_KEPT)
        self.recheck_ms: int | None = None
        self.draining = False

    # --- the event loop ----------------------------------------------------------------

    def run(self) -> RunResult:
        self._push(0, _Event.START)
        for job in self.jobs:
            self._push(job.job.arrival_ms, _Event.ARRIVAL, job.job.index)
        end_ms = 0
        while self._heap:
            self.now = self._heap[0][0]
            relevant = False
            while self._heap and self._heap[0][0] == self.now:
                _, _, kind, arg = heapq.heappop(self._heap)
                relevant |= self._apply(kind, arg)
            if not relevant:
                continue
            end_ms = self.now
            if not self.draining:
                self._decide()
            if self.open == 0 and not self.draining:
                self.draining = True
                self.modal.set_autoscale(replace(self.autoscale, min_containers=0))
            self.modal.converge(self.now)
            self._schedule_fleet_wakes()
            self._sample()
        billed = self.modal.billed_ms(end_ms)
        return RunResult(
            policy=self.policy.name,
            jobs=tuple(self._result(j) for j in self.jobs),
            transitions=tuple(self.transitions),
            series=tuple(self.series),
            modal_gpu_ms=billed,
            modal_usd=meter.usd(billed, self.config.modal.gpu_usd_per_s),
            cold_starts=self.modal.boots,
            end_ms=end_ms,
        )

    def _push(self, at_ms: int, kind: _Event, arg: int = -1) -> None:
        heapq.heappush(self._heap, (at_ms, next(self._seq), kind, arg))

    def _apply(self, kind: _Event, arg: int) -> bool:
        """Applies one event; returns whether it is worth asking the policy again."""
        if kind is _Event.START:
            return True
        if kind is _Event.ARRIVAL:
            self._arrive(self.jobs[arg])
            return True
        if kind is _Event.DONE:
            self._finish(self.jobs[arg])
            return True
        if kind is _Event.READY:
            self.modal.on_ready(arg, self.now)
            self._schedule_started()
            return True
        if kind is _Event.SCALEDOWN:
            return True
        if kind is _Event.RECHECK:
            # Only the latest plan's recheck counts, as the dispatcher waits on one.
            if self.recheck_ms != self.now or self.draining:
                return False
            self.recheck_ms = None
            return True
        # TIMEOUT: the engine's rule runs after the decisions (see _decide).
        return self.jobs[arg].job.index in self.by_age

    def _arrive(self, job: _Job) -> None:
        if len(self.by_age) + len(self.batch_by_age) >= self.config.policy.max_queued:
            self._close(job, Outcome.SHED)
            return
        index = job.job.index
        (self.batch_by_age if job.job.batch else self.by_age)[index] = job
        self.lines[job.job.batch][job.job.priority][index] = job
        if not self.policy.sheds_itself and not job.job.batch:
            self._push(
                job.job.arrival_ms + self.config.policy.queue_timeout_ms, _Event.TIMEOUT, index
            )

    def _finish(self, job: _Job) -> None:
        assert job.dispatch_ms is not None
        wall_ms = self.now - job.dispatch_ms
        if job.pool is Pool.INHOUSE:
            self.inhouse.release()
            self.renders[Pool.INHOUSE].append(wall_ms)
        else:
            assert job.placement is not None
            self.modal.release(job.job.index, self.now)
            self._schedule_started()
            # As Spillover.record: the render sample is the wall time less the reported
            # cold start (the container's whole boot), but never less than the render
            # itself; and the cold start is a sample too.
            rendered_ms = self.now - job.placement.start_ms
            self.renders[Pool.MODAL].append(max(rendered_ms, wall_ms - job.placement.cold_ms))
            if job.placement.cold:
                self.colds.append(job.placement.cold_ms)
        self._close(job, Outcome.COMPLETED)

    def _close(self, job: _Job, outcome: Outcome) -> None:
        job.outcome = outcome
        job.finish_ms = self.now
        self.open -= 1

    # --- asking the policy and carrying out its plan -------------------------------------

    def _decide(self) -> None:
        config = self.config.policy
        now_ms = self.config.start_ms + self.now
        while True:
            plan = self.policy.decide(self.state, self._signal(), config, now_ms)
            self.state = plan.state
            if plan.transition is not None:
                self.transitions.append(plan.transition)
            self.autoscale = plan.autoscale
            self.modal.set_autoscale(plan.autoscale)
            if not self._carry_out(plan):
                break
        if plan.recheck_at_ms is not None:
            at = plan.recheck_at_ms - self.config.start_ms
            if at != self.recheck_ms:
                self.recheck_ms = at
                self._push(at, _Event.RECHECK)
        if not self.policy.sheds_itself:
            self._expire(config.queue_timeout_ms)

    def _signal(self) -> Signal:
        ages = tuple(
            self.now - j.job.arrival_ms
            for j in itertools.islice(self.by_age.values(), AGES_SAMPLED)
        )
        defaults = self.config.policy
        return Signal(
            queued=len(self.by_age),
            queue_ages_ms=ages,
            inhouse_busy=self.inhouse.busy,
            inhouse_slots=self.inhouse.slots,
            modal_inflight=self.modal.inflight,
            modal_ready_slots=self.modal.ready_slots,
            modal_available=True,
            spent_usd=meter.usd(self.modal.billed_ms(self.now), self.config.modal.gpu_usd_per_s),
            estimates=estimate(
                self.renders[Pool.INHOUSE], self.renders[Pool.MODAL], self.colds, defaults
            ),
            modal_starting_slots=self.modal.starting_slots,
            batch_queued=len(self.batch_by_age),
        )

    def _carry_out(self, plan: Plan) -> int:
        """Starts what the plan says; returns how many jobs it started."""
        started = 0
        for _ in range(plan.count(Target.INHOUSE)):
            head = self._head(batch=True)
            if head is None or self.inhouse.free <= 0:
                break
            self._to_inhouse(head)
            started += 1
        rescue = plan.sent(Target.MODAL, Reason.TIMEOUT_RESCUE)
        for n, from_head in ((rescue, False), (plan.count(Target.MODAL) - rescue, True)):
            for _ in range(n):
                job = self._head() if from_head else next(iter(self.by_age.values()), None)
                if job is None or not self.modal.place(job.job.index, self.now):
                    break
                self._dequeue(job)
                job.pool = Pool.MODAL
                job.dispatch_ms = self.now
                started += 1
        self._schedule_started()
        if plan.shed_waits_over_ms is not None:
            self._expire(plan.shed_waits_over_ms)
        return started

    def _head(self, *, batch: bool = False) -> _Job | None:
        """The head of the interactive line or, with `batch` and none interactive, of the
        batch line."""
        for lines in (self.lines[False], self.lines[True]) if batch else (self.lines[False],):
            for line in reversed(lines):
                if line:
                    return next(iter(line.values()))
        return None

    def _dequeue(self, job: _Job) -> None:
        del (self.batch_by_age if job.job.batch else self.by_age)[job.job.index]
        del self.lines[job.job.batch][job.job.priority][job.job.index]

    def _to_inhouse(self, job: _Job) -> None:
        self._dequeue(job)
        self.inhouse.take()
        job.pool = Pool.INHOUSE
        job.dispatch_ms = self.now
        job.placement = Placement(-1, self.now, cold=False, cold_ms=0)
        self._push(self.now + job.job.render_ms, _Event.DONE, job.job.index)

    def _schedule_started(self) -> None:
        """Schedules the completion of each Modal input that began rendering."""
        for index, placement in self.modal.take_started():
            job = self.jobs[index]
            job.placement = placement
            noise = self.draws.render_z(index)
            render_ms = self.config.modal.render_ms(job.job.render_ms, noise)
            self._push(placement.start_ms + render_ms, _Event.DONE, index)

    def _expire(self, waited_ms: int) -> None:
        """Fails queued jobs that have waited at least `waited_ms`."""
        overdue = list(
            itertools.takewhile(
                lambda j: self.now - j.job.arrival_ms >= waited_ms, self.by_age.values()
            )
        )
        for job in overdue:
            self._dequeue(job)
            self._close(job, Outcome.TIMED_OUT)

    # --- the fleet, the record -----------------------------------------------------------

    def _schedule_fleet_wakes(self) -> None:
        for wake in self.modal.take_wakes():
            kind = _Event.READY if wake.kind is WakeKind.READY else _Event.SCALEDOWN
            self._push(wake.at_ms, kind, wake.container)

    def _sample(self) -> None:
        sample = Sample(
            t_ms=self.now,
            queued=len(self.by_age) + len(self.batch_by_age),
            mode=self.state.mode,
            inhouse_busy=self.inhouse.busy,
            modal_inflight=self.modal.inflight,
            containers=self.modal.containers,
            ready_containers=self.modal.ready_containers,
            starting_containers=self.modal.containers - self.modal.ready_containers,
        )
        if self.series and replace(self.series[-1], t_ms=sample.t_ms) == sample:
            return
        self.series.append(sample)

    @staticmethod
    def _result(job: _Job) -> JobResult:
        assert job.outcome is not None
        placement = job.placement
        return JobResult(
            index=job.job.index,
            arrival_ms=job.job.arrival_ms,
            priority=job.job.priority,
            outcome=job.outcome,
            batch=job.job.batch,
            pool=job.pool,
            dispatch_ms=job.dispatch_ms,
            start_ms=placement.start_ms if placement else None,
            finish_ms=job.finish_ms,
            cold=placement.cold if placement else False,
        )
