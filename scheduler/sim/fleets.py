"""Models of the two fleets, on the simulator's virtual clock (integer ms).

- `InhouseFleet`: `slots` workers; a job holds one for its render time.
- `ContainerFleet`: Modal as it runs one function. An input starts at once on a ready
  container with room (the busiest, the oldest among equals); else it waits in Modal's
  queue, and the first container to have room takes the oldest waiting input: one that
  finishes booting (the input waited for a boot or restore: it is cold) or one that
  finishes a render (it is not). The autoscaler wants a container per `concurrency`
  inputs running or waiting, plus `buffer_containers` while there are any, never fewer
  than `min_containers` nor more than `max_containers`. A new container first waits for a
  GPU (`gpu_wait`, unbilled: scarcity), then boots: in full until `snapshot_after` full
  boots have *finished*, else by restoring the snapshot, which fails at
  `restore_failure_rate` and then boots in full after the time the restore took. Each
  container draws its own luck (`scheduler.sim.draws`). An idle container above the
  target stops once it has idled a scaledown window, longest idle first.
  `min_containers`, `buffer_containers` and the scaledown window are the latest the
  policy asked for (`set_autoscale`), applied at once, as Modal applies
  `update_autoscaler`. The bill is `scheduler.policy.meter`'s: every container from the
  start of its boot to its stop.
- `WarmFleet`: the lower bound. A container is warm whenever an input needs one and
  bills only while it renders (each input's share: render time / concurrency); there is
  no boot and no idle tail.

A fleet never reads a clock: every method takes `now_ms`, and what it needs to happen
later (a boot ending, an idle deadline) it leaves in `take_wakes()` for the engine, as it
leaves the inputs that began rendering in `take_started()`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from scheduler.policy import Autoscale, Meter, meter
from scheduler.sim.config import ModalModel
from scheduler.sim.draws import Draws


class WakeKind(StrEnum):
    READY = "ready"
    """A container finishes booting (`container` says which)."""
    SCALEDOWN = "scaledown"
    """An idle container reaches the end of its scaledown window."""


@dataclass(frozen=True)
class Wake:
    at_ms: int
    kind: WakeKind
    container: int = -1


@dataclass(frozen=True)
class Placement:
    """Where an input runs and when it started rendering."""

    container: int
    """The container's id; -1 in-house and on the warm fleet."""
    start_ms: int
    cold: bool
    """It waited for its container's boot or restore."""
    cold_ms: int
    """The container's whole boot, as the renderer reports it (0 when not cold)."""


class InhouseFleet:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.busy = 0

    @property
    def free(self) -> int:
        return self.slots - self.busy

    def take(self) -> bool:
        if self.busy >= self.slots:
            return False
        self.busy += 1
        return True

    def release(self) -> None:
        self.busy -= 1


class ModalFleet(ABC):
    """What the engine needs of the second fleet. Inputs are named by their job index."""

    def __init__(self, model: ModalModel) -> None:
        self.model = model
        self.cap = model.max_containers * model.concurrency
        self.inflight = 0
        """Inputs accepted and not finished: rendering or waiting for a container."""
        self._meter = Meter()
        self._wakes: list[Wake] = []
        self._started: list[tuple[int, Placement]] = []

    @property
    @abstractmethod
    def ready_slots(self) -> int:
        """Inputs ready containers take without a cold start, busy or not."""

    @property
    @abstractmethod
    def starting_slots(self) -> int:
        """Inputs the containers not yet ready will take once up, busy or not."""

    @property
    @abstractmethod
    def containers(self) -> int:
        """Containers up: waiting for a GPU, booting or ready."""

    @property
    @abstractmethod
    def ready_containers(self) -> int:
        """Containers up that have finished booting."""

    @property
    @abstractmethod
    def boots(self) -> int:
        """Containers started so far."""

    @abstractmethod
    def place(self, job: int, now_ms: int) -> bool:
        """Takes an input; False when the fleet is at its cap."""

    @abstractmethod
    def release(self, job: int, now_ms: int) -> None:
        """An input finished."""

    @abstractmethod
    def on_ready(self, container: int, now_ms: int) -> None:
        """A container finished booting."""

    @abstractmethod
    def set_autoscale(self, autoscale: Autoscale) -> None:
        """The policy's autoscaler settings, applied at once."""

    @abstractmethod
    def converge(self, now_ms: int) -> None:
        """Starts and stops containers towards the autoscaler's target."""

    def billed_ms(self, now_ms: int) -> int:
        """Container-milliseconds billed so far."""
        return meter.billed_ms(self._meter, now_ms)

    def take_wakes(self) -> list[Wake]:
        wakes, self._wakes = self._wakes, []
        return wakes

    def take_started(self) -> list[tuple[int, Placement]]:
        """The inputs that began rendering since the last call, with where and when."""
        started, self._started = self._started, []
        return started


@dataclass
class _Container:
    id: int
    boot_start_ms: int
    """When it was granted its GPU and began to boot (billed from then)."""
    boot_ms: int
    full: bool
    """A full boot, which counts towards `snapshot_after` once finished."""
    inputs: int = 0
    ready: bool = False
    idle_since_ms: int = 0
    """When it last became ready with no input (meaningful while ready and idle)."""

    @property
    def ready_at_ms(self) -> int:
        return self.boot_start_ms + self.boot_ms


class ContainerFleet(ModalFleet):
    def __init__(self, model: ModalModel, draws: Draws) -> None:
        super().__init__(model)
        self._draws = draws
        self._live: list[_Container] = []
        """Containers up, in the order they started."""
        self._waiting: deque[int] = deque()
        """Inputs waiting in Modal's queue for a container with room, oldest first."""
        self._on: dict[int, _Container] = {}
        """The container each rendering input runs on."""
        self._boots = 0
        self._full_boots_done = 0
        self._min = 0
        self._buffer = model.buffer_containers
        self._window_s = model.scaledown_window_s
        self._deadlines: set[int] = set()

    @property
    def ready_slots(self) -> int:
        return self.ready_containers * self.model.concurrency

    @property
    def starting_slots(self) -> int:
        return (self.containers - self.ready_containers) * self.model.concurrency

    @property
    def containers(self) -> int:
        return len(self._live)

    @property
    def ready_containers(self) -> int:
        return sum(c.ready for c in self._live)

    @property
    def boots(self) -> int:
        return self._boots

    def place(self, job: int, now_ms: int) -> bool:
        if self.inflight >= self.cap:
            return False
        self.inflight += 1
        room = [c for c in self._live if c.ready and c.inputs < self.model.concurrency]
        if room:
            # The busiest, so that idle ones can scale down; max keeps the oldest of equals.
            self._run(job, max(room, key=lambda c: c.inputs), now_ms, cold=False)
        else:
            self._waiting.append(job)
            self._scale_up(now_ms)
        return True

    def release(self, job: int, now_ms: int) -> None:
        container = self._on.pop(job)
        container.inputs -= 1
        self.inflight -= 1
        if self._waiting:
            self._run(self._waiting.popleft(), container, now_ms, cold=False)
        elif container.inputs == 0:
            container.idle_since_ms = now_ms

    def on_ready(self, container: int, now_ms: int) -> None:
        c = next(c for c in self._live if c.id == container)
        c.ready = True
        self._full_boots_done += c.full
        while self._waiting and c.inputs < self.model.concurrency:
            self._run(self._waiting.popleft(), c, now_ms, cold=True)
        if c.inputs == 0:
            c.idle_since_ms = now_ms

    def set_autoscale(self, autoscale: Autoscale) -> None:
        self._min = autoscale.min_containers
        self._buffer = autoscale.buffer_containers
        self._window_s = autoscale.scaledown_window_s

    def converge(self, now_ms: int) -> None:
        target = self._scale_up(now_ms)
        idle = sorted(
            (c for c in self._live if c.ready and not c.inputs),
            key=lambda c: (c.idle_since_ms, c.id),
        )
        count = len(self._live)
        for container in idle:
            if count <= target:
                break
            expires = meter.scaledown_stop_ms(container.idle_since_ms, self._window_s)
            if expires > now_ms:
                if expires not in self._deadlines:
                    self._deadlines.add(expires)
                    self._wakes.append(Wake(expires, WakeKind.SCALEDOWN))
                break
            self._live.remove(container)
            self._meter = meter.stop(self._meter, str(container.id), now_ms)
            count -= 1

    def _scale_up(self, now_ms: int) -> int:
        """Starts containers up to the autoscaler's target; returns the target."""
        needed = math.ceil(self.inflight / self.model.concurrency)
        wanted = max(self._min, needed + self._buffer if self.inflight else 0)
        target = min(self.model.max_containers, wanted)
        while len(self._live) < target:
            self._start(now_ms)
        return target

    def _run(self, job: int, container: _Container, now_ms: int, *, cold: bool) -> None:
        container.inputs += 1
        self._on[job] = container
        placement = Placement(container.id, now_ms, cold, container.boot_ms if cold else 0)
        self._started.append((job, placement))

    def _start(self, now_ms: int) -> None:
        full = self._full_boots_done < self.model.snapshot_after
        wait_ms, boot_ms = self.model.boot(self._draws.container(self._boots), full=full)
        container = _Container(self._boots, now_ms + wait_ms, boot_ms, full)
        self._boots += 1
        self._live.append(container)
        self._meter = meter.start(self._meter, str(container.id), container.boot_start_ms)
        self._wakes.append(Wake(container.ready_at_ms, WakeKind.READY, container.id))


class WarmFleet(ModalFleet):
    """The lower bound: warm whenever needed, billed only for render time."""

    def __init__(self, model: ModalModel) -> None:
        super().__init__(model)
        self._since: dict[int, int] = {}

    @property
    def ready_slots(self) -> int:
        return self.cap

    @property
    def starting_slots(self) -> int:
        return 0

    @property
    def containers(self) -> int:
        return math.ceil(self.inflight / self.model.concurrency)

    @property
    def ready_containers(self) -> int:
        return self.containers

    @property
    def boots(self) -> int:
        return 0

    def place(self, job: int, now_ms: int) -> bool:
        if self.inflight >= self.cap:
            return False
        self.inflight += 1
        self._since[job] = now_ms
        self._started.append((job, Placement(-1, now_ms, cold=False, cold_ms=0)))
        return True

    def release(self, job: int, now_ms: int) -> None:
        self.inflight -= 1
        # Billed as a container of its own for its share of one: render / concurrency.
        share_ms = round((now_ms - self._since.pop(job)) / self.model.concurrency)
        self._meter = meter.stop(
            meter.start(self._meter, str(job), now_ms - share_ms), str(job), now_ms
        )

    # Nothing boots, idles or scales: containers exist exactly while inputs run.
    def on_ready(self, container: int, now_ms: int) -> None:
        pass

    def set_autoscale(self, autoscale: Autoscale) -> None:
        pass

    def converge(self, now_ms: int) -> None:
        pass
