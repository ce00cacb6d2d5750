"""The Modal renderer, deployed by `tools/modal_deploy.py` (or `modal deploy -m
renderer.modal_app --env <environment>` once the weights are in place).

One class, `Renderer`, on one pinned GPU type, not a web endpoint: the scheduler finds
it with `modal.Cls.from_name(<app>, "Renderer", environment_name=<environment>)` and
calls `.render.spawn(request)` with a `renderer.remote.RemoteRequest` dict. A container
starts SGLang, warms it up, commits the kernels it compiled to the cache Volume and
releases its GPU memory; Modal snapshots the container there (CPU and GPU memory), and
later containers restore that snapshot and only take the memory back.

The image is SGLang's own CUDA devel image for the pinned SGLang (nvcc and CUDA_HOME,
which DeepGEMM's JIT needs), the renderer's few dependencies, and a build step on the
pinned GPU that precompiles DeepGEMM's kernels into the cache Volume
(`renderer.modal_kernels`). The weights come from the models Volume, which
`renderer.modal_weights` fills from the private store.

Configuration is `renderer.modal_config`: the SPILLWAY_MODAL_* variables read when this
module is imported, and written into the image's environment so that containers read
the same values. Importing this module never contacts Modal.

Traces: each render is a `renderer.render` span (see `renderer.tracing`) in the job's
trace, continued from the request's `trace_context` (W3C `traceparent`/`tracestate`).
A container exports its spans when the Modal Secret named by SPILLWAY_MODAL_OTEL_SECRET
gives it the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_HEADERS` for the collector's credentials, optionally
`OTEL_SERVICE_NAME`); without them spans are made but not sent. Tracing is set up after
the snapshot is restored, never before it (the exporter's thread and connection must
not be snapshotted).

Cancellation: `render` is an async method that renders in a thread. Modal cancels an
input of an async method by cancelling its task, which stops that render at its next
frame and touches no other input; an input of a *sync* method with concurrency above
one could only be cancelled by stopping the whole container (modal 1.6.4,
`_container_entrypoint.py`, `cancel_callback_sync`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import modal
import modal.experimental
from opentelemetry.trace import Span
from spillway.v1 import renderer_pb2

from renderer import tracing
from renderer.cpu import CpuFrameDecoder
from renderer.errors import InvalidRenderRequest, RenderRecalled
from renderer.modal_config import BILLING_TAG, MODELS_DIR, ModalConfig
from renderer.modal_kernels import precompile_kernels
from renderer.pipeline import RenderSpec, render_to_file
from renderer.remote import RemoteMetadata, RemoteRequest, RemoteResult
from renderer.sglang_engine import (
    SGLANG_VERSION,
    EngineUnavailable,
    SglangServer,
    SglangTokenEngine,
)
from renderer.sglang_launch import Checkpoint, SglangLaunch, settle
from renderer.start_gate import GateDict, may_start
from renderer.telemetry import setup_tracing
from renderer.validation import render_spec

logger = logging.getLogger(__name__)

CONFIG = ModalConfig.from_environ(os.environ)

SGLANG_IMAGE = f"lmsysorg/sglang:v{SGLANG_VERSION}-cu129-amd64"
"""SGLang's image for the pinned version, CUDA 12.9 devel: nvcc and CUDA_HOME for
DeepGEMM's JIT, and torch, sgl-kernel and FlashInfer built to match. Not the `-runtime`
variant, which is not meant to compile."""
CUDA_HOME = "/usr/local/cuda"
CACHE_DIR = "/cache"
# What the renderer itself imports, at the floors pyproject.toml declares; the image's
# SGLang brings its own numpy, av and the rest, which these floors accept.
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
    # sgl-kernel asserts that it finds the toolkit before DeepGEMM's first compile.
    "CUDA_HOME": CUDA_HOME,
    "SGLANG_DG_CACHE_DIR": f"{CACHE_DIR}/deep_gemm",
    # DeepGEMM's own variable, for SGLang versions that do not redirect it themselves.
    "DG_JIT_CACHE_DIR": f"{CACHE_DIR}/deep_gemm",
    "FLASHINFER_WORKSPACE_BASE": f"{CACHE_DIR}/flashinfer",
    "TRITON_CACHE_DIR": f"{CACHE_DIR}/triton",
    "TORCHINDUCTOR_CACHE_DIR": f"{CACHE_DIR}/torchinductor",
    # Modal's SGLang example sets this for Inductor to survive a GPU snapshot.
    "TORCHINDUCTOR_COMPILE_THREADS": "1",
}
PRECOMPILE_TIMEOUT_S = 3600
SGLANG_PORT = 30000
# SGLang's own error, with its log tail, says more than Modal's kill at the startup
# timeout: give up on a boot this much earlier.
STARTUP_MARGIN_S = 60
# The in-house renderer's frame rate for requests that leave fps at 0.
DEFAULT_FPS = 24
SERVICE_NAME = "spillway-renderer-modal"
"""The traces' service name, unless OTEL_SERVICE_NAME says otherwise."""
BAKE_REQUEST = RemoteRequest(
    job_id="bake", prompt="snapshot bake", model="bake", seconds=1, width=64, height=64, fps=8
)
"""What `bake` renders: the smallest request that runs the whole pipeline."""

models_volume = modal.Volume.from_name(CONFIG.models_volume).with_mount_options(read_only=True)
cache_volume = modal.Volume.from_name(CONFIG.cache_volume, create_if_missing=True)
image = (
    modal.Image.from_registry(SGLANG_IMAGE)
    .entrypoint([])  # the image's own entrypoint would start a server
    .uv_pip_install(*RENDERER_REQUIREMENTS)
    .env(KERNEL_CACHE_ENV)
    .run_function(
        precompile_kernels,
        gpu=CONFIG.gpu,
        volumes={MODELS_DIR: models_volume, CACHE_DIR: cache_volume},
        timeout=PRECOMPILE_TIMEOUT_S,
        kwargs={
            "model_path": CONFIG.model_path,
            "quantization": CONFIG.quantization,
            "context_length": CONFIG.context_length,
            "sglang_args": list(CONFIG.sglang_args),
            "gpu": CONFIG.gpu,
            "cache_volume": CONFIG.cache_volume,
            "timeout_s": PRECOMPILE_TIMEOUT_S,
        },
    )
    # After the precompile, so that settings it does not depend on (caps, timeouts)
    # change a cheap layer and do not compile again.
    .env(CONFIG.environ())
    .add_local_python_source("renderer", "spillway")
)
otel_secrets = [modal.Secret.from_name(CONFIG.otel_secret)] if CONFIG.otel_secret else []
app = modal.App(CONFIG.app, image=image, tags={BILLING_TAG: CONFIG.app})


@app.cls(
    gpu=CONFIG.gpu,
    cpu=CONFIG.cpu,
    memory=CONFIG.memory_mib,
    volumes={MODELS_DIR: models_volume, CACHE_DIR: cache_volume},
    secrets=otel_secrets,
    enable_memory_snapshot=True,
    experimental_options={"enable_gpu_snapshot": True},
    min_containers=0,
    buffer_containers=1,
    max_containers=CONFIG.max_containers,
    scaledown_window=CONFIG.scaledown_s,
    timeout=CONFIG.timeout_s,
    startup_timeout=CONFIG.startup_timeout_s,
)
@modal.concurrent(max_inputs=CONFIG.concurrency)
class Renderer:
    """Renders on this container's SGLang server, `CONFIG.concurrency` at a time."""

    sglang: ClassVar[SglangLaunch] = SglangLaunch(
        model_path=CONFIG.model_path, port=SGLANG_PORT, extra_args=CONFIG.sglang_args
    )
    """How a container starts SGLang, before the checkpoint settles its quantization
    and context length."""

    _server: SglangServer
    _engine: SglangTokenEngine
    _decoder: CpuFrameDecoder
    _executor: concurrent.futures.ThreadPoolExecutor
    _boot_task: str | None
    _restored: bool
    _boot_seconds: float
    _restore_seconds: float
    _first_input: threading.Lock
    _served: bool
    _ready_at: float
    _shutdown_tracing: Callable[[], None] | None
    _gates: dict[str, GateDict]

    @modal.enter(snap=True)
    def boot(self) -> None:
        """Start SGLang, warm it up, keep the kernels it compiled, and release its GPU
        memory: what Modal snapshots."""
        started = time.monotonic()
        self._shutdown_tracing = None
        launch, context_length = settle(
            self.sglang,
            Checkpoint.read(self.sglang.model_path),
            quantization=CONFIG.quantization,
            context_length=CONFIG.context_length,
        )
        self._server = SglangServer(launch)
        self._server.start(ready_timeout_s=CONFIG.startup_timeout_s - STARTUP_MARGIN_S)
        self._server.warm_up()
        commit_kernel_cache()
        self._server.release_memory()
        self._engine = SglangTokenEngine(self._server, context_length=context_length)
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
        # Made after the snapshot, so that no render thread is in it.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=CONFIG.concurrency, thread_name_prefix="render"
        )
        started = time.monotonic()
        self._server.resume_memory()
        self._restore_seconds = time.monotonic() - started
        self._ready_at = time.time()
        # After the snapshot: a Dict handle hydrates on first use, over this
        # container's own connection.
        self._gates = {}
        self._restored = os.environ.get("MODAL_TASK_ID") != self._boot_task
        if self._restored:
            self._boot_seconds = 0.0
        # Only in a Modal container: a local run (tests) keeps its host's tracer provider.
        if not modal.is_local():
            self._shutdown_tracing = setup_tracing(SERVICE_NAME)

    @modal.method()
    async def render(self, request: dict[str, Any]) -> dict[str, Any]:
        """Render a `RemoteRequest` dict into a `RemoteResult` dict. Raises
        InvalidRenderRequest (not worth retrying) for a request that can never render,
        and EngineUnavailable (worth retrying elsewhere) when SGLang is gone. Cancelled,
        it stops this render at its next frame and returns once the render has let go
        of its files. First, before any GPU work, it passes the request's start gate
        (`renderer.start_gate`): RenderRecalled, at once, if the scheduler recalled the
        job first."""
        if not await self._may_start(request):
            raise RenderRecalled(f"job {request.get('job_id')!s} was recalled before it started")
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        rendering = loop.run_in_executor(self._executor, self._render_traced, request, cancel)
        try:
            return await asyncio.shield(rendering)
        except asyncio.CancelledError:
            cancel.set()
            await asyncio.wait([rendering])
            raise

    @modal.method()
    def bake(self) -> dict[str, Any]:
        """The deploy's snapshot bake: renders a tiny sample, says whether this
        container was restored from the snapshot, and retires the container so that the
        next call starts another (which restores the snapshot once it exists)."""
        result = RemoteResult.from_dict(
            self._render_traced(BAKE_REQUEST.to_dict(), threading.Event())
        )
        if not modal.is_local():
            modal.experimental.stop_fetching_inputs()
        return {
            "container_id": result.metadata.container_id,
            "restored": self._restored,
            "boot_seconds": result.metadata.boot_seconds,
            "restore_seconds": self._restore_seconds,
            "render_seconds": result.metadata.render_seconds,
            "bytes": result.metadata.bytes,
        }

    async def _may_start(self, request: dict[str, Any]) -> bool:
        name = request.get("start_dict") if isinstance(request, dict) else None
        key = request.get("start_key") if isinstance(request, dict) else None
        if not name or not key:
            return True
        if (gate := self._gates.get(str(name))) is None:
            gate = self._gates[str(name)] = start_gate(str(name))
        return await may_start(gate, str(key))

    def _render_traced(self, request: dict[str, Any], cancel: threading.Event) -> dict[str, Any]:
        carrier = request.get("trace_context") if isinstance(request, dict) else None
        job_id = request.get("job_id") if isinstance(request, dict) else None
        with tracing.render_span(tracing.extract(carrier), str(job_id or "")) as span:
            return self._render(request, span, cancel)

    def _render(
        self, request: dict[str, Any], span: Span, cancel: threading.Event
    ) -> dict[str, Any]:
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
                    spec,
                    Path(tmp) / "render.mp4",
                    engine=self._engine,
                    decoder=decoder,
                    cancel=cancel,
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
        self._executor.shutdown(wait=False, cancel_futures=True)
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


def commit_kernel_cache() -> None:
    """Commits what SGLang compiled while booting (FlashInfer, Triton, Inductor, any
    DeepGEMM kernel the precompile missed) to the cache Volume, so that a container that
    is killed later, or one that boots without the snapshot, finds it. Modal would only
    commit it when the container exits. Outside a Modal container there is no Volume."""
    if not modal.is_local():
        cache_volume.commit()


def start_gate(name: str) -> GateDict:
    """The Dict holding the start gates, in the app's environment, as the scheduler
    looks it up; whichever side uses it first creates it."""
    gate: GateDict = modal.Dict.from_name(name, create_if_missing=True)
    return gate


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
