"""The simulator's configuration: a TOML file in which every key is optional.

Durations are seconds (integers or decimals) and become integer milliseconds; a key the
simulator does not know is an error that names it, as is a value of the wrong type or
out of range (`SimConfigError`, with the file, the table and the key).

Every key with its default:

    start_utc = "00:00"         # UTC time of day (HH:MM or HH:MM:SS) the trace starts at:
                                # the policy's clock is that offset plus the virtual clock,
                                # so pre-warm windows line up
    seed = 0                    # the random draws below: same trace, config and seed,
                                # same output, byte for byte
    [inhouse]
    slots = 8                   # in-house renders at once; a job renders for its render_s
    [modal]
    cold_start_s = 60           # a full boot (SGLang start, warm-up, snapshot taken): p50
    cold_start_p99_s = 60       # ... and p99 of a lognormal (default: the p50, no spread)
    cold_start_snapshot_s = 15  # a boot that restores the GPU snapshot: p50
    cold_start_snapshot_p99_s = 15
    snapshot_after = 1          # full boots that must have finished before restores apply
    restore_failure_rate = 0    # a restore fails and falls back to a full boot (0 to 1)
    gpu_wait_s = 0              # GPU scarcity: p50 of the wait before Modal grants a
    gpu_wait_p99_s = 0          # container its GPU (unbilled); 0 grants at once
    concurrency = 1             # inputs one container renders at once
    max_containers = 10         # most containers up at once
    buffer_containers = 1       # idle containers kept beyond the busy ones while any runs
    scaledown_window_s = 300    # a container idle this long stops (an integer, as Modal's)
    render_speedup = 1.0        # a Modal render takes render_s / render_speedup
    render_noise_p99 = 1.0      # ... times a lognormal factor with p50 1 and this p99
    gpu_usd_per_s = 0.001097    # one container-second (H100, about $3.95/h)
    budget_usd_month = 10000    # the policy's monthly budget; the run is a month's start
    [policy]                    # as the SPILLWAY_* variables of the same names:
    high_watermark = 8
    low_watermark = 0
    enter_dwell_s = 2
    exit_dwell_s = 240
    min_mode_s = 10
    spill_wait_s = 30           # the oldest job waiting this long for in-house also spills
    drain_scaledown_window_s = 10  # the scaledown window once the in-house queue drained
    max_spill_per_decision = 8
    spawn_rate_per_s = 2        # spawns over time: a token bucket (0 turns it off)
    spawn_burst = 16
    queue_timeout_s = 1800      # applies to every policy
    max_queued = 10000          # applies to every policy
    prewarm_windows = []        # e.g. ["08:45-10:00=3"] (a window may wrap midnight)
    prewarm_rise_per_min = 0    # 0 turns reactive pre-warm off
    prewarm_containers = 1
    prewarm_hold_s = 120
    rate_window_s = 10
    est_inhouse_render_s = 60   # estimates until renders and cold starts are observed
    est_spill_render_s = 60
    est_cold_start_s = 30
    cold_start_stale_s = 300    # cold-start samples unchanged this long: no slower than that

The policy's `max_containers`, `concurrency`, `buffer_containers`,
`scaledown_window_s`, `gpu_usd_per_s` and `budget_usd_month` are the `[modal]` ones:
the policy plans for the fleet it runs against; the buffer and scaledown window it then
asks for (`Plan.autoscale`) are the ones the simulated fleet applies.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from scheduler.policy import PolicyConfig, PrewarmWindow
from scheduler.sim.draws import Z99, ContainerDraw, Spread

_TIME_OF_DAY = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2}))?$")
_WINDOW = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})=(\d+)$")


class SimConfigError(ValueError):
    """The configuration cannot be used; the message names the table and key."""


@dataclass(frozen=True)
class InhouseModel:
    slots: int = 8


@dataclass(frozen=True)
class ModalModel:
    cold_start_ms: int = 60_000
    """A full boot's p50."""
    cold_start_p99_ms: int | None = None
    """Its p99; None: the p50 (no spread)."""
    cold_start_snapshot_ms: int = 15_000
    """A snapshot restore's p50."""
    cold_start_snapshot_p99_ms: int | None = None
    snapshot_after: int = 1
    """Full boots that must have finished before a container can restore the snapshot."""
    restore_failure_rate: float = 0.0
    """A restore that fails falls back to a full boot, after the time the restore took."""
    gpu_wait_ms: int = 0
    """GPU scarcity: the p50 of the unbilled wait before a container is granted its GPU."""
    gpu_wait_p99_ms: int | None = None
    concurrency: int = 1
    max_containers: int = 10
    buffer_containers: int = 1
    scaledown_window_s: int = 300
    render_speedup: float = 1.0
    render_noise_p99: float = 1.0
    """A render on Modal takes a lognormal factor (p50 1, this p99) of its warm time."""
    gpu_usd_per_s: float = 0.001097
    budget_usd_month: float = 10_000.0

    @property
    def full_boot(self) -> Spread:
        return Spread(self.cold_start_ms, _or(self.cold_start_p99_ms, self.cold_start_ms))

    @property
    def restore(self) -> Spread:
        p50 = self.cold_start_snapshot_ms
        return Spread(p50, _or(self.cold_start_snapshot_p99_ms, p50))

    @property
    def gpu_wait(self) -> Spread:
        return Spread(self.gpu_wait_ms, _or(self.gpu_wait_p99_ms, self.gpu_wait_ms))

    def boot(self, draw: ContainerDraw, *, full: bool) -> tuple[int, int]:
        """(the wait for a GPU, the boot) of a container with this luck: a full boot, or
        a restore (and a full boot after it if the restore fails)."""
        if full:
            boot_ms = self.full_boot.at(draw.full_boot_z)
        else:
            boot_ms = self.restore.at(draw.restore_z)
            if draw.restore_fails_u < self.restore_failure_rate:
                boot_ms += self.full_boot.at(draw.full_boot_z)
        return self.gpu_wait.at(draw.gpu_wait_z), boot_ms

    def render_ms(self, warm_gpu_ms: int, noise_z: float = 0.0) -> int:
        """A render's time on Modal: its warm GPU time, sped up, times its noise."""
        noise = math.exp(noise_z * math.log(self.render_noise_p99) / Z99)
        return max(1, round(warm_gpu_ms / self.render_speedup * noise))


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


@dataclass(frozen=True)
class SimConfig:
    inhouse: InhouseModel = field(default_factory=InhouseModel)
    modal: ModalModel = field(default_factory=ModalModel)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Its fleet fields must be the `modal` ones: build with `SimConfig.of`."""
    start_utc_s: int = 0
    seed: int = 0
    """Seeds every random draw of a run (`scheduler.sim.draws`)."""

    def __post_init__(self) -> None:
        mismatched = [
            name
            for name, value in _fleet_fields(self.modal).items()
            if getattr(self.policy, name) != value
        ]
        if mismatched:
            raise SimConfigError(
                f"policy and [modal] disagree on {', '.join(mismatched)}: build with SimConfig.of"
            )

    @classmethod
    def of(
        cls,
        inhouse: InhouseModel | None = None,
        modal: ModalModel | None = None,
        policy: PolicyConfig | None = None,
        start_utc_s: int = 0,
        seed: int = 0,
    ) -> SimConfig:
        """A configuration whose policy plans for this Modal fleet."""
        modal = modal or ModalModel()
        policy = replace(policy or PolicyConfig(), **_fleet_fields(modal))
        return cls(inhouse or InhouseModel(), modal, policy, start_utc_s, seed)

    @property
    def start_ms(self) -> int:
        """The policy clock at virtual time 0."""
        return self.start_utc_s * 1000


def _fleet_fields(modal: ModalModel) -> dict[str, Any]:
    return {
        "max_containers": modal.max_containers,
        "concurrency": modal.concurrency,
        "buffer_containers": modal.buffer_containers,
        "scaledown_window_s": modal.scaledown_window_s,
        "gpu_usd_per_s": modal.gpu_usd_per_s,
        "budget_usd_month": modal.budget_usd_month,
    }


def load_config(path: str | Path | None) -> SimConfig:
    """Reads a TOML file (None: every default). Raises `SimConfigError` (or `OSError`)."""
    if path is None:
        return SimConfig.of()
    path = Path(path)
    return parse_config(path.read_text(encoding="utf-8"), name=str(path))


def parse_config(text: str, name: str = "<config>") -> SimConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SimConfigError(f"{name}: not valid TOML: {exc}") from None
    top = _Table(data, name, "")
    inhouse = top.table("inhouse")
    modal = top.table("modal")
    policy = top.table("policy")
    start = top.time_of_day("start_utc", "00:00")
    seed = top.integer("seed", 0, low=0)
    top.done()

    inhouse_model = InhouseModel(slots=inhouse.integer("slots", 8, low=0))
    inhouse.done()
    full_s = modal.number("cold_start_s", 60)
    restore_s = modal.number("cold_start_snapshot_s", 15)
    wait_s = modal.number("gpu_wait_s", 0)
    modal_model = ModalModel(
        cold_start_ms=round(full_s * 1000),
        cold_start_p99_ms=modal.p99_ms("cold_start_p99_s", "cold_start_s", full_s),
        cold_start_snapshot_ms=round(restore_s * 1000),
        cold_start_snapshot_p99_ms=modal.p99_ms(
            "cold_start_snapshot_p99_s", "cold_start_snapshot_s", restore_s
        ),
        snapshot_after=modal.integer("snapshot_after", 1, low=0),
        restore_failure_rate=modal.fraction("restore_failure_rate", 0.0),
        gpu_wait_ms=round(wait_s * 1000),
        gpu_wait_p99_ms=modal.p99_ms("gpu_wait_p99_s", "gpu_wait_s", wait_s),
        concurrency=modal.integer("concurrency", 1, low=1),
        max_containers=modal.integer("max_containers", 10, low=1),
        buffer_containers=modal.integer("buffer_containers", 1, low=0),
        scaledown_window_s=modal.integer("scaledown_window_s", 300, low=0),
        render_speedup=modal.number("render_speedup", 1.0, positive=True),
        render_noise_p99=modal.number("render_noise_p99", 1.0, low=1.0),
        gpu_usd_per_s=modal.number("gpu_usd_per_s", 0.001097),
        budget_usd_month=modal.number("budget_usd_month", 10_000.0),
    )
    modal.done()
    defaults = PolicyConfig()
    try:
        knobs = PolicyConfig(
            high_watermark=policy.integer("high_watermark", defaults.high_watermark, low=1),
            low_watermark=policy.integer("low_watermark", defaults.low_watermark, low=0),
            enter_dwell_ms=policy.seconds_ms("enter_dwell_s", defaults.enter_dwell_ms / 1000),
            exit_dwell_ms=policy.seconds_ms("exit_dwell_s", defaults.exit_dwell_ms / 1000),
            min_mode_ms=policy.seconds_ms("min_mode_s", defaults.min_mode_ms / 1000),
            spill_wait_ms=policy.seconds_ms("spill_wait_s", defaults.spill_wait_ms / 1000),
            drain_scaledown_window_s=policy.integer(
                "drain_scaledown_window_s", defaults.drain_scaledown_window_s, low=0
            ),
            max_spill_per_decision=policy.integer(
                "max_spill_per_decision", defaults.max_spill_per_decision, low=1
            ),
            spawn_rate_per_s=policy.number("spawn_rate_per_s", defaults.spawn_rate_per_s),
            spawn_burst=policy.integer("spawn_burst", defaults.spawn_burst, low=1),
            queue_timeout_ms=policy.seconds_ms(
                "queue_timeout_s", defaults.queue_timeout_ms / 1000, positive=True
            ),
            max_queued=policy.integer("max_queued", defaults.max_queued, low=1),
            prewarm_windows=policy.windows("prewarm_windows"),
            prewarm_rise_per_min=policy.number(
                "prewarm_rise_per_min", defaults.prewarm_rise_per_min
            ),
            prewarm_containers=policy.integer(
                "prewarm_containers", defaults.prewarm_containers, low=0
            ),
            prewarm_hold_ms=policy.seconds_ms("prewarm_hold_s", defaults.prewarm_hold_ms / 1000),
            rate_window_ms=policy.seconds_ms(
                "rate_window_s", defaults.rate_window_ms / 1000, positive=True
            ),
            inhouse_render_ms=policy.seconds_ms(
                "est_inhouse_render_s", defaults.inhouse_render_ms / 1000
            ),
            modal_render_ms=policy.seconds_ms(
                "est_spill_render_s", defaults.modal_render_ms / 1000
            ),
            cold_start_ms=policy.seconds_ms("est_cold_start_s", defaults.cold_start_ms / 1000),
            cold_start_stale_ms=policy.seconds_ms(
                "cold_start_stale_s", defaults.cold_start_stale_ms / 1000
            ),
            **_fleet_fields(modal_model),
        )
    except ValueError as exc:
        if isinstance(exc, SimConfigError):
            raise
        # Rules across keys (low below high watermark); the message names the fields.
        raise SimConfigError(f"{name}: [policy] {exc}") from None
    policy.done()
    return SimConfig(inhouse_model, modal_model, knobs, start, seed)


class _Table:
    """One TOML table, read key by key; `done()` rejects the keys nobody read."""

    def __init__(self, data: Mapping[str, Any], name: str, table: str) -> None:
        self._data = data
        self._name = name
        self._table = table
        self._read: set[str] = set()

    def _where(self, key: str) -> str:
        return f"{self._name}: [{self._table}] {key}" if self._table else f"{self._name}: {key}"

    def _fail(self, key: str, value: Any, problem: str) -> SimConfigError:
        return SimConfigError(f"{self._where(key)} = {value!r}: {problem}")

    def _get(self, key: str) -> Any:
        self._read.add(key)
        return self._data.get(key)

    def table(self, key: str) -> _Table:
        value = self._get(key)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self._fail(key, value, "expected a table")
        return _Table(value, self._name, key)

    def integer(self, key: str, default: int, *, low: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, value, "expected an integer")
        if value < low:
            raise self._fail(key, value, f"must be at least {low}")
        return value

    def number(
        self, key: str, default: float, *, positive: bool = False, low: float = 0.0
    ) -> float:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(key, value, "expected a number")
        if not math.isfinite(value):
            raise self._fail(key, value, "must be a finite number")
        if positive and value <= 0:
            raise self._fail(key, value, "must be more than 0")
        if value < 0:
            raise self._fail(key, value, "must not be negative")
        if value < low:
            raise self._fail(key, value, f"must be at least {low:g}")
        return float(value)

    def seconds_ms(self, key: str, default_s: float, *, positive: bool = False) -> int:
        """Seconds in the file, integer milliseconds here."""
        ms = round(self.number(key, default_s, positive=positive) * 1000)
        if positive and ms < 1:
            raise self._fail(key, self._data.get(key), "must be at least 0.001")
        return ms

    def fraction(self, key: str, default: float) -> float:
        value = self.number(key, default)
        if value > 1:
            raise self._fail(key, value, "must be 0 to 1")
        return value

    def p99_ms(self, key: str, p50_key: str, p50_s: float) -> int | None:
        """A lognormal's p99, in ms: at least its p50; None when not given (no spread)."""
        if self._data.get(key) is None:
            self._read.add(key)
            return None
        p99_s = self.number(key, p50_s)
        if p99_s < p50_s:
            raise self._fail(key, p99_s, f"must be at least {p50_key} ({p50_s})")
        if p50_s == 0 and p99_s > 0:
            raise self._fail(key, p99_s, f"needs {p50_key} above 0")
        return round(p99_s * 1000)

    def time_of_day(self, key: str, default: str) -> int:
        value = self._get(key)
        if value is None:
            value = default
        match = _TIME_OF_DAY.match(value) if isinstance(value, str) else None
        if not match:
            raise self._fail(key, value, "expected a UTC time of day, HH:MM or HH:MM:SS")
        h, m, s = (int(g or 0) for g in match.groups())
        if h > 23 or m > 59 or s > 59:
            raise self._fail(key, value, "no such time of day")
        return h * 3600 + m * 60 + s

    def windows(self, key: str) -> tuple[PrewarmWindow, ...]:
        value = self._get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self._fail(key, value, 'expected a list of "HH:MM-HH:MM=N"')
        windows = []
        for item in value:
            match = _WINDOW.match(item.strip()) if isinstance(item, str) else None
            if not match:
                raise self._fail(key, item, 'expected "HH:MM-HH:MM=N"')
            h1, m1, h2, m2, n = (int(g) for g in match.groups())
            if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
                raise self._fail(key, item, "no such time of day")
            windows.append(PrewarmWindow(h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60, n))
        return tuple(windows)

    def done(self) -> None:
        unknown = sorted(set(self._data) - self._read)
        if unknown:
            where = f"[{self._table}]" if self._table else "the top level"
            raise SimConfigError(f"{self._name}: unknown key(s) in {where}: {', '.join(unknown)}")
