"""The second fleet's bill: every container from the start of its boot to its stop, priced
at the GPU's $/s, as Modal bills it.

A container costs the same per second whatever it does: booting or restoring, rendering,
idling through its scaledown window, standing by as a buffer or pre-warmed container,
or running work that then failed or was cancelled. So the meter knows nothing of inputs:
only when each container began to boot and when it stopped. Pure values, so the
scheduler (feeding it the container starts and stops it observes: a render's container
id and boot time, the pool's stats) and the simulator (feeding it the containers it
models) compute the same bill the same way.

Observations may repeat or arrive late: starting a container already metered keeps the
earlier boot start, and stopping one not metered (already stopped, or never seen) changes
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Meter:
    stopped_ms: int = 0
    """Container-milliseconds of every container that has stopped."""
    live: tuple[tuple[str, int], ...] = ()
    """(container id, boot start ms) of each container up, in the order first seen. A
    boot start may lie ahead of now (a container waiting for its GPU): it bills from
    then."""


def start(meter: Meter, container_id: str, boot_start_ms: int) -> Meter:
    """A container began (or will begin) to boot at `boot_start_ms`."""
    for i, (cid, at_ms) in enumerate(meter.live):
        if cid == container_id:
            if boot_start_ms >= at_ms:
                return meter
            live = (*meter.live[:i], (cid, boot_start_ms), *meter.live[i + 1 :])
            return replace(meter, live=live)
    return replace(meter, live=(*meter.live, (container_id, boot_start_ms)))


def stop(meter: Meter, container_id: str, stop_ms: int) -> Meter:
    """A container stopped at `stop_ms`: its time from boot start is billed for good."""
    for i, (cid, at_ms) in enumerate(meter.live):
        if cid == container_id:
            return Meter(
                stopped_ms=meter.stopped_ms + max(0, stop_ms - at_ms),
                live=meter.live[:i] + meter.live[i + 1 :],
            )
    return meter


def billed_ms(meter: Meter, now_ms: int) -> int:
    """Container-milliseconds billed up to `now_ms`: the stopped containers, and the live
    ones from their boot start to now."""
    return meter.stopped_ms + sum(max(0, now_ms - at_ms) for _, at_ms in meter.live)


def usd(container_ms: float, gpu_usd_per_s: float) -> float:
    """The price of container time."""
    return container_ms / 1000 * gpu_usd_per_s


def scaledown_stop_ms(idle_since_ms: int, scaledown_window_s: int) -> int:
    """When Modal stops a container that has idled since `idle_since_ms`, unless
    `min_containers` or the buffer keep it: the end of the tail it bills for nothing."""
    return idle_since_ms + scaledown_window_s * 1000
