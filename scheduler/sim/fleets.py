"""Models of the two fleets, on the simulator's virtual clock (integer ms).

- `InhouseFleet`: `slots` workers; a job holds one for its render time.
- `ContainerFleet`: Modal as `scheduler.pools.burst` imitates it. A container boots
  (`cold_start_ms` for the first `snapshot_after` boots, then `cold_start_snapshot_ms`),
  then serves `concurrency` inputs at once. An input takes the busiest ready container
  with room, else the busiest booting one with room (and waits for its boot: cold),
  else starts a container if fewer than `max_containers` are up, else is refused.
  The autoscaler keeps `max(min_containers, busy + buffer_containers if any busy)`
  containers up (a container is busy while it holds an input, booting or not) and stops
  an idle one, longest idle first, once it has idled `scaledown_window_s` and the fleet
  is above that target. Billing is per container-second, boot to stop: booting, busy
  and idle time all cost.
- `WarmFleet`: the lower bound. A container is warm whenever an input needs one and
  bills only while it renders (each input's share: render time / concurrency); there is
  no boot and no idle tail.

A fleet never reads a clock: every method takes `now_ms`, and what it needs to happen
later (a boot ending, an idle deadline) it leaves in `take_wakes()` for the engine.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum

from scheduler.policy import Autoscale
from scheduler.sim.config import ModalModel


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
    """Where a Modal input runs and when it starts rendering."""

    container: int
    """The container's id; -1 on the warm fleet."""
    start_ms: int
    cold: bool
    """It waited for its container to boot."""
    cold_ms: int
    """The container's whole boot, as the renderer reports it (0 when warm)."""


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
    """What the engine needs of the second fleet."""

    def __init__(self, model: ModalModel) -> None:
        self.model = model
        self.cap = model.max_containers * model.concurrency
        self.inflight = 0
        self._wakes: list[Wake] = []

    @property
    @abstractmethod
    def ready_slots(self) -> int:
        """Inputs running containers take without a cold start, busy or not."""

    @property
    @abstractmethod
    def containers(self) -> int:
        """Containers up (booting or ready)."""

    @property
    @abstractmethod
    def ready_containers(self) -> int:
        """Containers up that have finished booting."""

    @property
    @abstractmethod
    def boots(self) -> int:
        """Cold starts so far."""

    @abstractmethod
    def place(self, now_ms: int) -> Placement | None:
        """Takes an input, or None when the fleet is at its cap."""

    @abstractmethod
    def release(self, placement: Placement, now_ms: int) -> None:
        """An input finished."""

    @abstractmethod
    def billed_ms(self, now_ms: int) -> float:
        """GPU-milliseconds billed so far."""

    @abstractmethod
    def on_ready(self, container: int, now_ms: int) -> None:
        """A container finished booting."""

    @abstractmethod
    def set_autoscale(self, autoscale: Autoscale) -> None:
        """The policy's autoscaler settings, applied at once."""

    @abstractmethod
    def converge(self, now_ms: int) -> None:
        """Starts and stops containers towards the autoscaler's target."""

    def take_wakes(self) -> list[Wake]:
        wakes, self._wakes = self._wakes, []
        return wakes


@dataclass
class _Container:
    id: int
    boot_start_ms: int
    boot_ms: int
    inputs: int = 0
    ready: bool = False
    idle_since_ms: int = 0
    """When it last became ready with no input (meaningful while ready and idle)."""

    @property
    def ready_at_ms(self) -> int:
        return self.boot_start_ms + self.boot_ms


class ContainerFleet(ModalFleet):
    def __init__(self, model: ModalModel) -> None:
        super().__init__(model)
        self._live: list[_Container] = []
        """Containers up, in the order they started."""
        self._boots = 0
        self._stopped_ms = 0
        """Billed time of containers that have stopped."""
        self._min = 0
        self._buffer = model.buffer_containers
        self._deadlines: set[int] = set()

    @property
    def ready_slots(self) -> int:
        return self.ready_containers * self.model.concurrency

    @property
    def containers(self) -> int:
        return len(self._live)

    @property
    def ready_containers(self) -> int:
        return sum(c.ready for c in self._live)

    @property
    def boots(self) -> int:
        return self._boots

    def place(self, now_ms: int) -> Placement | None:
        if self.inflight >= self.cap:
            return None
        room = [c for c in self._live if c.inputs < self.model.concurrency]
        if room:
            # The busiest ready one with room, else the busiest booting one; the oldest
            # among equals (max keeps the first).
            container = max(room, key=lambda c: (c.ready, c.inputs))
        elif len(self._live) < self.model.max_containers:
            container = self._start(now_ms)
        else:
            return None
        container.inputs += 1
        self.inflight += 1
        if container.ready:
            return Placement(container.id, now_ms, cold=False, cold_ms=0)
        return Placement(container.id, container.ready_at_ms, cold=True, cold_ms=container.boot_ms)

    def release(self, placement: Placement, now_ms: int) -> None:
        container = self._find(placement.container)
        container.inputs -= 1
        self.inflight -= 1
        if container.inputs == 0 and container.ready:
            container.idle_since_ms = now_ms

    def on_ready(self, container: int, now_ms: int) -> None:
        c = self._find(container)
        c.ready = True
        if c.inputs == 0:
            c.idle_since_ms = now_ms

    def set_autoscale(self, autoscale: Autoscale) -> None:
        self._min = autoscale.min_containers
        self._buffer = autoscale.buffer_containers

    def converge(self, now_ms: int) -> None:
        busy = sum(1 for c in self._live if c.inputs)
        wanted = max(self._min, busy + self._buffer if busy else 0)
        target = min(self.model.max_containers, wanted)
        while len(self._live) < target:
            self._start(now_ms)
        idle = sorted(
            (c for c in self._live if c.ready and not c.inputs),
            key=lambda c: (c.idle_since_ms, c.id),
        )
        count = len(self._live)
        for container in idle:
            if count <= target:
                break
            expires = container.idle_since_ms + self.model.scaledown_window_s * 1000
            if expires > now_ms:
                if expires not in self._deadlines:
                    self._deadlines.add(expires)
                    self._wakes.append(Wake(expires, WakeKind.SCALEDOWN))
                break
            self._live.remove(container)
            self._stopped_ms += now_ms - container.boot_start_ms
            count -= 1

    def billed_ms(self, now_ms: int) -> float:
        return float(self._stopped_ms + sum(now_ms - c.boot_start_ms for c in self._live))

    def _start(self, now_ms: int) -> _Container:
        container = _Container(self._boots, now_ms, self.model.boot_ms(self._boots))
        self._boots += 1
        self._live.append(container)
        self._wakes.append(Wake(container.ready_at_ms, WakeKind.READY, container.id))
        return container

    def _find(self, container: int) -> _Container:
        for c in self._live:
            if c.id == container:
                return c
        raise LookupError(f"no live container {container}")


class WarmFleet(ModalFleet):
    """The lower bound: warm whenever needed, billed only for render time."""

    def __init__(self, model: ModalModel) -> None:
        super().__init__(model)
        self._busy_ms = 0

    @property
    def ready_slots(self) -> int:
        return self.cap

    @property
    def containers(self) -> int:
        return math.ceil(self.inflight / self.model.concurrency)

    @property
    def ready_containers(self) -> int:
        return self.containers

    @property
    def boots(self) -> int:
        return 0

    def place(self, now_ms: int) -> Placement | None:
        if self.inflight >= self.cap:
            return None
        self.inflight += 1
        return Placement(-1, now_ms, cold=False, cold_ms=0)

    def release(self, placement: Placement, now_ms: int) -> None:
        self.inflight -= 1
        self._busy_ms += now_ms - placement.start_ms

    def billed_ms(self, now_ms: int) -> float:
        return self._busy_ms / self.model.concurrency

    # Nothing boots, idles or scales: containers exist exactly while inputs run.
    def on_ready(self, container: int, now_ms: int) -> None:
        pass

    def set_autoscale(self, autoscale: Autoscale) -> None:
        pass

    def converge(self, now_ms: int) -> None:
        pass
