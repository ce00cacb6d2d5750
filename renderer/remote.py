"""The wire contract of a remote render (the Modal app's `render` method): plain dicts
of builtins, so that both sides serialize them without sharing classes.

A request is `RenderRequest` fields; a result carries the whole MP4 and its metadata.
Renders take minutes and produce megabytes, so returning the file in one value costs
nothing next to the render, and keeps the renderer free of S3 credentials.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from renderer.pipeline import RenderResult


@dataclass(frozen=True)
class RemoteRequest:
    job_id: str
    prompt: str
    model: str
    seconds: int
    width: int
    height: int
    fps: int = 0
    """0 lets the renderer choose."""
    trace_context: dict[str, str] | None = None
    """W3C trace context (traceparent, tracestate), so renderer spans join the job's trace."""
    spawned_at: float = 0.0
    """Unix time the scheduler spawned the input (0: unknown). An input spawned before
    its container was ready waited for that container's boot or restore: a cold start."""
    start_dict: str = ""
    """The `modal.Dict` holding the start gates (`renderer.start_gate`); empty (a
    request from a scheduler before the gate): render without one."""
    start_key: str = ""
    """This input's key in that Dict: the job id and the lease it was spawned under."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["trace_context"] = dict(self.trace_context or {})
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RemoteRequest:
        return cls(
            job_id=str(d["job_id"]),
            prompt=str(d["prompt"]),
            model=str(d["model"]),
            seconds=int(d["seconds"]),
            width=int(d["width"]),
            height=int(d["height"]),
            fps=int(d.get("fps") or 0),
            trace_context={str(k): str(v) for k, v in (d.get("trace_context") or {}).items()},
            spawned_at=float(d.get("spawned_at") or 0.0),
            start_dict=str(d.get("start_dict") or ""),
            start_key=str(d.get("start_key") or ""),
        )


@dataclass(frozen=True)
class RemoteMetadata:
    container_id: str
    cold_start: bool
    """True when this input was the first on a freshly started (or restored) container."""
    boot_seconds: float
    restore_seconds: float
    render_seconds: float
    bytes: int
    sha256: str
    duration_seconds: float
    frames: int
    fps: int
    engine: str

    @classmethod
    def of(
        cls,
        result: RenderResult,
        *,
        container_id: str,
        cold_start: bool,
        boot_seconds: float,
        restore_seconds: float,
    ) -> RemoteMetadata:
        """A finished render's metadata; boot and restore count only on a cold input."""
        return cls(
            container_id=container_id,
            cold_start=cold_start,
            boot_seconds=boot_seconds if cold_start else 0.0,
            restore_seconds=restore_seconds if cold_start else 0.0,
            render_seconds=result.render_seconds,
            bytes=result.bytes,
            sha256=result.sha256,
            duration_seconds=result.duration_seconds,
            frames=result.frames,
            fps=result.fps,
            engine=result.engine,
        )


@dataclass(frozen=True)
class RemoteResult:
    mp4: bytes
    metadata: RemoteMetadata

    def to_dict(self) -> dict[str, Any]:
        return {"mp4": self.mp4, "metadata": asdict(self.metadata)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RemoteResult:
        m = d["metadata"]
        return cls(
            mp4=bytes(d["mp4"]),
            metadata=RemoteMetadata(
                container_id=str(m["container_id"]),
                cold_start=bool(m["cold_start"]),
                boot_seconds=float(m["boot_seconds"]),
                restore_seconds=float(m["restore_seconds"]),
                render_seconds=float(m["render_seconds"]),
                bytes=int(m["bytes"]),
                sha256=str(m["sha256"]),
                duration_seconds=float(m["duration_seconds"]),
                frames=int(m["frames"]),
                fps=int(m["fps"]),
                engine=str(m["engine"]),
            ),
        )
