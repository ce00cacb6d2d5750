"""The simulator's random draws: seeded, and keyed by what they are for.

Each container and each job draws from its own stream, named by the run's seed, what is
drawn and which one (`Random("7:container:12")`), so a run is reproducible byte for byte
and the 12th container started boots as long under every policy compared on that seed
(common random numbers: the policies differ by what they do, not by their luck). A string
seed is hashed with SHA-512, the same in every process.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from statistics import NormalDist

Z99 = NormalDist().inv_cdf(0.99)
"""The standard normal's 99th percentile."""


@dataclass(frozen=True)
class Spread:
    """A lognormal duration given by its median and 99th percentile, in ms; equal ones
    make it a constant (and a 0 median, always 0)."""

    p50_ms: int
    p99_ms: int

    def __post_init__(self) -> None:
        if not 0 <= self.p50_ms <= self.p99_ms or (self.p50_ms == 0 and self.p99_ms):
            raise ValueError(f"need 0 < p50 <= p99 (or both 0), got {self.p50_ms}, {self.p99_ms}")

    def at(self, z: float) -> int:
        """The duration at standard normal quantile `z` (0: the median)."""
        if self.p99_ms == self.p50_ms:
            return self.p50_ms
        return round(self.p50_ms * math.exp(z * math.log(self.p99_ms / self.p50_ms) / Z99))


@dataclass(frozen=True)
class ContainerDraw:
    """What luck a container has, whether or not all of it is used."""

    gpu_wait_z: float
    full_boot_z: float
    restore_z: float
    restore_fails_u: float
    """Uniform in [0, 1): the restore fails when this is below the failure rate."""


class Draws:
    def __init__(self, seed: int) -> None:
        self.seed = seed

    def _stream(self, what: str, which: int) -> random.Random:
        return random.Random(f"{self.seed}:{what}:{which}")

    def container(self, k: int) -> ContainerDraw:
        """The draws of the k-th container started in the run (0 first)."""
        rng = self._stream("container", k)
        return ContainerDraw(rng.gauss(), rng.gauss(), rng.gauss(), rng.random())

    def render_z(self, job: int) -> float:
        """The noise of job `job`'s render on the second fleet."""
        return self._stream("render", job).gauss()
