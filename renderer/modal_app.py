"""The Modal renderer, deployed with `modal deploy renderer/modal_app.py`.

One class, `Renderer`, on one pinned GPU type, not a web endpoint: the scheduler finds
it with `modal.Cls.from_name(<app>, "Renderer")` and calls `.render.spawn(request)`
with a `renderer.remote.RemoteRequest` dict. A container starts SGLang, warms it up
and releases its GPU memory; Modal snapshots the container there (CPU and GPU memory),
and later containers restore that snapshot and only take the memory back.

Configuration is read from the SPILLWAY_MODAL_* variables below when `modal deploy`
imports this module, and written into the image's environment so that containers read
the same values. A malformed value stops the import with an error naming the variable
and the value. Importing this module never contacts Modal.

Traces: each render is a `renderer.render` span (see `renderer.tracing`) in the job's
trace, continued from the request's `trace_context` (W3C `traceparent`/`tracestate`).
A container exports its spans when it is given an OTLP endpoint it can reach from Modal
through the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`
for the collector's credentials, optionally `OTEL_SERVICE_NAME`), stored as a Modal
Secret and attached to the class (`secrets=[modal.Secret.from_name(...)]`); without
them spans are made but not sent. Tracing is set up after the snapshot is restored,
never before it (the exporter's thread and connection must not be snapshotted).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import modal
import modal.exception
import modal.experimental
from opentelemetry.trace import Span
from spillway.v1 import renderer_pb2

from renderer import tracing
from renderer.cpu import CpuFrameDecoder
from renderer.errors import InvalidRenderRequest
from renderer.pipeline import RenderSpec, render_to_file
from renderer.remote import RemoteMetadata, RemoteRequest, RemoteResult
from renderer.sglang_engine import (
    SGLANG_VERSION,
    EngineUnavailable,
    SglangLaunch,
    SglangServer,
    SglangTokenEngine,
)
from renderer.telemetry import setup_tracing
from renderer.validation import render_spec

logger = logging.getLogger(__name__)

ENV_APP = "SPILLWAY_MODAL_APP"
"""Name of the deployed Modal app, which the scheduler looks the class up in."""
ENV_GPU = "SPILLWAY_MODAL_GPU"
"""The one GPU type containers run on; it must run FP8 (Hopper or newer)."""
ENV_MAX_CONTAINERS = "SPILLWAY_MODAL_MAX_CONTAINERS"
"""Most containers at once: the GPU budget's cap on the spill."""
ENV_SCALEDOWN_S = "SPILLWAY_MODAL_SCALEDOWN_S"
"""Seconds an idle container stays up, waiting for more work (Modal allows 2-3600)."""
ENV_TIMEOUT_S = "SPILLWAY_MODAL_TIMEOUT_S"
"""Seconds a render, or a container's start, may take before Modal stops it."""
ENV_CONCURRENCY = "SPILLWAY_MODAL_CONCURRENCY"
"""Renders one container runs at once (SGLang batches their generates). The scheduler's
SPILLWAY_SPILL_CONCURRENCY must match it, as SPILLWAY_SPILL_MAX_CONTAINERS must match
SPILLWAY_MODAL_MAX_CONTAINERS."""
ENV_MODELS_VOLUME = "SPILLWAY_MODAL_MODELS_VOLUME"
"""Modal Volume holding the weights, mounted read-only at /models. It must exist."""
ENV_CACHE_VOLUME = "SPILLWAY_MODAL_CACHE_VOLUME"
"""Modal Volume for compiled kernels (DeepGEMM, FlashInfer, Triton, Inductor), mounted
at /cache; created on the first deploy."""
ENV_MODEL_PATH = "SPILLWAY_MODAL_MODEL_PATH"
"""The weights' directory, under /models."""
ENV_SGLANG_ARGS = "SPILLWAY_MODAL_SGLANG_ARGS"
"""More `sglang.launch_server` flags, as one shell-quoted string."""

MODELS_DIR = "/models"
CACHE_DIR = "/cache"
PYTHON_VERSION = "3.11"
# FP8 needs Hopper or newer. "H100!" also refuses Modal's upgrade of H100 to H200.
FP8_GPUS = ("H100", "H100!", "H200", "B200")
# What the renderer itself imports, at the floors pyproject.toml declares.
RENDERER_REQUIREMENTS = (
    "httpx>=0.27",
    "av>=14",
    "numpy>=1.26",
    "pillow>=10.1",
    "grpcio>=1.85.1",
    "protobuf>=7.35.1",
    "opentelemetry-api>=1.45.2",
    "opentelemetry-sdk>=1.45.2",
    "opentelemetry-exporter-otlp-proto-grpc>=1.45.2",
    "structlog>=24.4",
)
KERNEL_CACHE_ENV = {
    "SGLANG_DG_CACHE_DIR": f"{CACHE_DIR}/deep_gemm",
    "FLASHINFER_WORKSPACE_BASE": f"{CACHE_DIR}/flashinfer",
    "TRITON_CACHE_DIR": f"{CACHE_DIR}/triton",
    "TORCHINDUCTOR_CACHE_DIR": f"{CACHE_DIR}/torchinductor",
    # Modal's SGLang example sets this for Inductor to survive a GPU snapshot.
    "TORCHINDUCTOR_COMPILE_THREADS": "1",
}
SGLANG_PORT = 30000
# The in-house renderer's frame rate for requests that leave fps at 0.
DEFAULT_FPS = 24
SERVICE_NAME = "spillway-renderer-modal"
"""The traces' service name, unless OTEL_SERVICE_NAME says otherwise."""
_MODAL_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class ModalConfig:
    """The deployment's settings; the defaults are those of an unset variable."""

    app: str = "spillway-renderer"
    gpu: str = "H100"
    max_containers: int = 10
    scaledown_s: int = 300
    timeout_s: int = 1800
    concurrency: int = 1
    models_volume: str = "spillway-models"
    cache_volume: str = "spillway-kernel-cache"
    model_path: str = f"{MODELS_DIR}/renderer"
    sglang_args: tuple[str, ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ModalConfig:
        """The settings in `environ`; raises ValueError naming the first bad one."""
        default = cls()
        gpu = environ.get(ENV_GPU, default.gpu)
        if gpu not in FP8_GPUS:
            raise ValueError(f"{ENV_GPU} must be one of {', '.join(FP8_GPUS)}, got {gpu!r}")
        model_path = environ.get(ENV_MODEL_PATH, default.model_path)
        if not model_path.startswith(f"{MODELS_DIR}/"):
            raise ValueError(f"{ENV_MODEL_PATH} must be under {MODELS_DIR}/, got {model_path!r}")
        try:
            sglang_args = tuple(shlex.split(environ.get(ENV_SGLANG_ARGS, "")))
        except ValueError as error:
            raise ValueError(
                f"{ENV_SGLANG_ARGS} is not a shell-quoted string ({error}), "
                f"got {environ[ENV_SGLANG_ARGS]!r}"
            ) from None
        return cls(
            app=_name(environ, ENV_APP, default.app),
            gpu=gpu,
            max_containers=_int(environ, ENV_MAX_CONTAINERS, default.max_containers, 1, 1000),
            scaledown_s=_int(environ, ENV_SCALEDOWN_S, default.scaledown_s, 2, 3600),
            timeout_s=_int(environ, ENV_TIMEOUT_S, default.timeout_s, 10, 86400),
            concurrency=_int(environ, ENV_CONCURRENCY, default.concurrency, 1, 256),
            models_volume=_name(environ, ENV_MODELS_VOLUME, default.models_volume),
            cache_volume=_name(environ, ENV_CACHE_VOLUME, default.cache_volume),
            model_path=model_path,
            sglang_args=sglang_args,
        )

    def environ(self) -> dict[str, str]:
        """These settings as the variables that `from_environ` reads back."""
        return {
            ENV_APP: self.app,
            ENV_GPU: self.gpu,
            ENV_MAX_CONTAINERS: str(self.max_containers),
            ENV_SCALEDOWN_S: str(self.scaledown_s),
            ENV_TIMEOUT_S: str(self.timeout_s),
            ENV_CONCURRENCY: str(self.concurrency),
            ENV_MODELS_VOLUME: self.models_volume,
            ENV_CACHE_VOLUME: self.cache_volume,
            ENV_MODEL_PATH: self.model_path,
            ENV_SGLANG_ARGS: shlex.join(self.sglang_args),
        }

    def launch(self) -> SglangLaunch:
        return SglangLaunch(
            model_path=self.model_path, port=SGLANG_PORT, extra_args=self.sglang_args
        )


def _int(environ: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    text = environ.get(key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{key} must be an integer, got {text!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{key} must be between {low} and {high}, got {text!r}")
    return value


def _name(environ: Mapping[str, str], key: str, default: str) -> str:
    value = environ.get(key, default)
    if not _MODAL_NAME.fullmatch(value):
        raise ValueError(f"{key} must be 1-64 letters, digits, '.', '-' or '_', got {value!r}")
    return value


CONFIG = ModalConfig.from_environ(os.environ)

image = (
    modal.Image.debian_slim(python_version=PYTHON_VERSION)
    # sgl_kernel's prebuilt extension links libnuma.so.1, which debian_slim lacks.
    .apt_install("libnuma1")
    .pip_install(f"sglang=={SGLANG_VERSION}", *RENDERER_REQUIREMENTS)
    .env({**KERNEL_CACHE_ENV, **CONFIG.environ()})
    .add_local_python_source("renderer", "spillway")
)
models_volume = modal.Volume.from_name(CONFIG.models_volume).with_mount_options(read_only=True)
cache_volume = modal.Volume.from_name(CONFIG.cache_volume, create_if_missing=True)
app = modal.App(CONFIG.app, image=image)


@app.cls(
    gpu=CONFIG.gpu,
    volumes={MODELS_DIR: models_volume, CACHE_DIR: cache_volume},
    enable_memory_snapshot=True,
    experimental_options={"enable_gpu_snapshot": True},
    min_containers=0,
    buffer_containers=1,
    max_containers=CONFIG.max_containers,
    scaledown_window=CONFIG.scaledown_s,
    timeout=CONFIG.timeout_s,
)
@modal.concurrent(max_inputs=CONFIG.concurrency)
class Renderer:
    """Renders on this container's SGLang server, `CONFIG.concurrency` at a time."""

    sglang: ClassVar[SglangLaunch] = CONFIG.launch()
    """How a container starts SGLang."""

    _server: SglangServer
    _engine: SglangTokenEngine
    _decoder: CpuFrameDecoder
    _boot_task: str | None
    _boot_seconds: float
    _restore_seconds: float
    _first_input: threading.Lock
    _served: bool
    _ready_at: float
    _shutdown_tracing: Callable[[], None] | None

    @modal.enter(snap=True)
    def boot(self) -> None:
        """Start SGLang and release its GPU memory: what Modal snapshots."""
        started = time.monotonic()
        self._shutdown_tracing = None
        self._server = SglangServer(self.sglang)
        self._server.start(ready_timeout_s=CONFIG.timeout_s)
        self._server.warm_up()
        self._server.release_memory()
        self._engine = SglangTokenEngine(self._server)
        # The production decoder is closed source and plugs in here; the CPU stand-in
        # draws the prompt and the frame index.
        self._decoder = CpuFrameDecoder()
        self._boot_task = os.environ.get("MODAL_TASK_ID")
        self._first_input = threading.Lock()
        self._served = False
        self._boot_seconds = time.monotonic() - started

    @modal.enter(snap=False)
    def restore(self) -> None:
        """Take SGLang's GPU memory back, in this container or one restored from the
        snapshot (Modal gives that one a new MODAL_TASK_ID)."""
        started = time.monotonic()
        self._server.resume_memory()
        self._restore_seconds = time.monotonic() - started
        self._ready_at = time.time()
        if os.environ.get("MODAL_TASK_ID") != self._boot_task:
            self._boot_seconds = 0.0
        # Only in a Modal container: a local run (tests) keeps its host's tracer provider.
        if not modal.is_local():
            self._shutdown_tracing = setup_tracing(SERVICE_NAME)

    @modal.method()
    def render(self, request: dict[str, Any]) -> dict[str, Any]:
        """Render a `RemoteRequest` dict into a `RemoteResult` dict. Raises
        InvalidRenderRequest (not worth retrying) for a request that can never render,
        and EngineUnavailable (worth retrying elsewhere) when SGLang is gone."""
        carrier = request.get("trace_context") if isinstance(request, dict) else None
        job_id = request.get("job_id") if isinstance(request, dict) else None
        with tracing.render_span(tracing.extract(carrier), str(job_id or "")) as span:
            try:
                return self._render(request, span)
            except modal.exception.InputCancellation:
                span.add_event("cancelled")
                raise

    def _render(self, request: dict[str, Any], span: Span) -> dict[str, Any]:
        spec = remote_spec(request)
        cold = self._waited_for_start(float(request.get("spawned_at") or 0.0))
        container_id = os.environ.get("MODAL_TASK_ID") or f"{socket.gethostname()}-{os.getpid()}"
        tracing.started(
            span, spec, container_id=container_id, cold_start=cold, engine=self._engine.name
        )
        decoder = tracing.TimedDecoder(self._decoder)
        try:
            with tempfile.TemporaryDirectory(prefix="render-") as tmp:
                result = render_to_file(
                    spec, Path(tmp) / "render.mp4", engine=self._engine, decoder=decoder
                )
                mp4 = result.path.read_bytes()
        except EngineUnavailable:
            logger.exception(
                "SGLang is gone; this container takes no more renders",
                extra={"job_id": spec.job_id},
            )
            if not modal.is_local():
                modal.experimental.stop_fetching_inputs()
            raise
        tracing.finished(span, result, decoder.seconds)
        metadata = RemoteMetadata.of(
            result,
            container_id=container_id,
            cold_start=cold,
            boot_seconds=self._boot_seconds,
            restore_seconds=self._restore_seconds,
        )
        return RemoteResult(mp4=mp4, metadata=metadata).to_dict()

    @modal.exit()
    def stop(self) -> None:
        """Stop SGLang, then send the spans not yet exported."""
        self._server.stop()
        if self._shutdown_tracing is not None:
            self._shutdown_tracing()

    def _waited_for_start(self, spawned_at: float) -> bool:
        """Whether the input waited for this container's boot or restore: spawned before
        the container was ready. A pre-warmed or buffer container's first input, spawned
        after it was ready, did not. Without a spawn time (an older scheduler), the
        container's first input counts as its cold start."""
        with self._first_input:
            first, self._served = not self._served, True
        return spawned_at < self._ready_at if spawned_at > 0 else first


def remote_spec(request: dict[str, Any]) -> RenderSpec:
    """The request checked as the in-house renderer checks it."""
    try:
        remote = RemoteRequest.from_dict(request)
    except KeyError as error:
        raise InvalidRenderRequest(f"invalid render request: missing {error}") from None
    except (TypeError, ValueError, AttributeError) as error:
        raise InvalidRenderRequest(f"invalid render request: {error}") from None
    # Out of uint32 range, the proto would refuse the value without naming the field.
    for field in ("seconds", "width", "height", "fps"):
        if not 0 <= getattr(remote, field) < 2**32:
            raise InvalidRenderRequest(
                f"invalid render request: {field} out of range: {getattr(remote, field)}"
            )
    proto = renderer_pb2.RenderRequest(
        job_id=remote.job_id,
        prompt=remote.prompt,
        model=remote.model,
        seconds=remote.seconds,
        width=remote.width,
        height=remote.height,
        fps=remote.fps,
    )
    return render_spec(proto, DEFAULT_FPS)
