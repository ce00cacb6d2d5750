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

Production sees less than the simulator: Modal tells no one when a container boots or
stops. `Tracker` infers both from what it does see (`rendered`: a render's metadata names
its container, its boot and its end; `counted`: the pool's stats count every container
up, booting and buffer ones included; `unseen`: no count to be had) and keeps the same
`Meter`. A container counted but not yet named by a render (booting, buffer,
pre-warmed) is metered under a placeholder id until a render names it; each named
container bills its scaledown tail after its latest render unless the count shows it
kept longer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

PLACEHOLDER = "~"
"""Ids of containers counted but not yet named by a render start with it."""
_GONE_KEPT = 256
"""Named containers remembered after their metered stop, should a render show one up after
all."""


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


@dataclass(frozen=True)
class Tracker:
    """What production knows of the second fleet's containers, and their bill so far."""

    meter: Meter = Meter()
    busy: tuple[tuple[str, int], ...] = ()
    """(id, ms) of each live container: the end of its latest render seen, or when it
    was first counted."""
    gone: tuple[tuple[str, int], ...] = ()
    """(id, metered stop ms) of the latest named containers stopped, oldest first."""
    placeholders: int = 0
    """Placeholder ids handed out so far."""
    counted_ms: int | None = None
    """When the pool's count was last taken; None before the first."""


def rendered(
    t: Tracker, container_id: str, boot_start_ms: int, end_ms: int, *, cold: bool = True
) -> Tracker:
    """A render on `container_id` ended at `end_ms`. Cold (its input waited for the
    container's boot), `boot_start_ms` is when the container began to boot, by its own
    account; warm, only when the render began, after the boot.

    A container never seen takes the name of one counted under a placeholder, if any:
    cold, the one counted nearest its boot, from its boot (a count may show a container
    waiting for its GPU, which bills nothing yet); warm, the oldest, from the
    placeholder's start. One metered as stopped when the count fell was not the one that
    stopped: it trades places with the named container idle longest before that stop,
    which is metered as stopped then instead. Otherwise it is metered from its boot or
    its stop, or from the latest count if that came after: the count has paid for as
    many containers as were up, so an earlier start would bill the same time twice (the
    next count stops the one too many)."""
    live = dict(t.meter.live)
    if container_id not in live:
        stopped = dict(t.gone)
        stop_ms = stopped.pop(container_id, None)
        held = None if stop_ms is not None else _placeholder(t, boot_start_ms if cold else None)
        if held is not None:
            since = boot_start_ms if cold else min(live[held], boot_start_ms)
            t = replace(t, meter=_rename(t.meter, held, container_id, since))
        else:
            t = replace(t, gone=tuple(stopped.items()))
            idle = [
                (end, cid)
                for cid, end in t.busy
                if stop_ms is not None and end < stop_ms and not cid.startswith(PLACEHOLDER)
            ]
            if stop_ms is not None and idle:
                t = _stop(t, min(idle)[1], stop_ms)
                since = stop_ms
            else:
                known_since = boot_start_ms if stop_ms is None else stop_ms
                since = max(known_since, t.counted_ms or known_since)
            t = replace(t, meter=start(t.meter, container_id, min(since, end_ms)))
    ends = dict(t.busy)
    ends[container_id] = max(end_ms, ends.get(container_id, end_ms))
    return replace(t, busy=_in_order(t.meter, ends))


def counted(t: Tracker, containers: int, now_ms: int, scaledown_window_s: int) -> Tracker:
    """The pool counts `containers` up or starting at `now_ms`. Containers come and go
    between two counts: new ones are metered from the middle of that span, and as many
    of the metered ones stop as are missing: first those whose scaledown tail has run
    out (at its end, or at the last count if they were seen since), then placeholders,
    newest first, then the longest idle; all but the first at the middle of the span."""
    since = now_ms if t.counted_ms is None else min(t.counted_ms, now_ms)
    midpoint = (since + now_ms) // 2
    excess = len(t.meter.live) - containers
    if excess < 0:
        meter, ends, n = t.meter, dict(t.busy), t.placeholders
        for _ in range(-excess):
            cid = f"{PLACEHOLDER}{n}"
            n += 1
            meter = start(meter, cid, midpoint)
            ends[cid] = midpoint
        t = replace(t, meter=meter, busy=_in_order(meter, ends), placeholders=n)
    elif excess > 0:
        tail_ms = scaledown_window_s * 1000
        ends = dict(t.busy)

        def order(cid: str) -> tuple[int, int]:
            if not cid.startswith(PLACEHOLDER) and ends[cid] + tail_ms <= now_ms:
                return (0, ends[cid])
            if cid.startswith(PLACEHOLDER):
                return (1, -ends[cid])
            return (2, ends[cid])

        for cid in sorted(ends, key=order)[:excess]:
            run_out = order(cid)[0] == 0
            t = _stop(t, cid, max(ends[cid] + tail_ms, since) if run_out else midpoint)
    return replace(t, counted_ms=now_ms)


def unseen(t: Tracker, now_ms: int, scaledown_window_s: int) -> Tracker:
    """No count to be had (the pool is unreachable): each container whose scaledown tail
    has run out by `now_ms` is metered as stopped at its end, as Modal would stop it
    unless its buffer or minimum keeps it (a later count meters such a one again)."""
    tail_ms = scaledown_window_s * 1000
    for cid, end_ms in t.busy:
        if end_ms + tail_ms <= now_ms:
            t = _stop(t, cid, end_ms + tail_ms)
    return t


def _stop(t: Tracker, container_id: str, stop_ms: int) -> Tracker:
    boot_ms = dict(t.meter.live)[container_id]
    meter = stop(t.meter, container_id, max(stop_ms, boot_ms))
    busy = tuple((cid, ms) for cid, ms in t.busy if cid != container_id)
    gone = t.gone
    if not container_id.startswith(PLACEHOLDER):
        kept = [(cid, ms) for cid, ms in t.gone if cid != container_id]
        gone = (*kept, (container_id, max(stop_ms, boot_ms)))[-_GONE_KEPT:]
    return replace(t, meter=meter, busy=busy, gone=gone)


def _placeholder(t: Tracker, booted_ms: int | None) -> str | None:
    """The placeholder to name: the one counted nearest `booted_ms`, else the oldest."""
    held = [(ms, cid) for cid, ms in t.meter.live if cid.startswith(PLACEHOLDER)]
    if not held:
        return None
    if booted_ms is None:
        return min(held)[1]
    return min(held, key=lambda h: (abs(h[0] - booted_ms), h[0]))[1]


def _rename(meter: Meter, old: str, new: str, boot_start_ms: int) -> Meter:
    live = tuple((new, boot_start_ms) if cid == old else (cid, ms) for cid, ms in meter.live)
    return replace(meter, live=live)


def _in_order(meter: Meter, ends: dict[str, int]) -> tuple[tuple[str, int], ...]:
    """`ends` for the live containers, in the meter's order."""
    return tuple((cid, ends[cid]) for cid, _ in meter.live if cid in ends)
