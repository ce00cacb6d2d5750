"""The Modal app: it imports offline, it declares the options we claim, and its class
runs boot -> restore -> render -> exit the way a Modal container runs it, against the
stand-in SGLang server. Only Modal's servers and the GPU are missing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from modal._partial_function import (
    _find_callables_for_obj,
    _find_partial_methods_for_user_cls,
    _PartialFunctionFlags,
)
from modal._utils.async_utils import synchronizer
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from renderer import modal_app
from renderer.errors import InvalidRenderRequest
from renderer.modal_app import ModalConfig, remote_spec
from renderer.probe import probe_mp4
from renderer.remote import RemoteMetadata, RemoteRequest, RemoteResult
from renderer.server import DEFAULT_FPS
from renderer.sglang_engine import EngineUnavailable, SglangLaunch

REPO = Path(__file__).resolve().parents[1]
STANDIN_COMMAND = (sys.executable, str(REPO / "tests" / "sglang_standin.py"))
# At runtime the decorated class is a modal.Cls, whatever its static type.
RENDERER: Any = modal_app.Renderer
REQUEST = RemoteRequest(
    job_id="job-1", prompt="a paper boat", model="video-1", seconds=1, width=64, height=48, fps=8
)


def deployed_options(cls: Any) -> dict[str, Any]:
    """What `modal deploy` would send for `cls`, read offline, as JSON. modal 1.6.4 has
    no public accessor for it: `_Function._from_local` keeps the options in the closure
    of the loader that sends FunctionCreate, and a summary in the FunctionInfo that
    `Function.info()` returns without a network call."""
    service = cls._get_class_service_function()
    loader = synchronizer._translate_in(service)._load
    cells = (cell.cell_contents for cell in loader.__closure__)
    args = dict(zip(loader.__code__.co_freevars, cells, strict=True))
    autoscaler = args["autoscaler_settings"]
    info = service.info()
    web = [args["webhook_config"], args["http_config"]]
    web += [m.webhook_config for m in args["method_definitions"].values() if m.webhook_config.type]
    return {
        "app": cls._get_app().name,
        "class": cls._get_user_cls().__name__,
        "methods": info.method_names,
        "gpu": args["gpu"],
        "gpus": [list(gpu) for gpu in info.gpus],
        "enable_memory_snapshot": args["enable_memory_snapshot"],
        "experimental_options": args["experimental_options"],
        "autoscaler": {
            field: getattr(autoscaler, field) if autoscaler.HasField(field) else None
            for field in (
                "min_containers",
                "buffer_containers",
                "max_containers",
                "scaledown_window",
            )
        },
        "timeout": [args["timeout"], info.timeout],
        "max_concurrent_inputs": [args["max_concurrent_inputs"], info.concurrency_info.max_inputs],
        "web": [str(w) for w in web if w is not None],
        "volumes": {path: [v.name, v.read_only] for path, v in info.volumes.items()},
        "sglang_argv": cls._get_user_cls().sglang.argv(),
    }


def offline_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """This environment without Modal credentials or config, with Modal's API on a
    closed loopback port: any attempt to reach Modal fails at once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "SPILLWAY_"))}
    env.update(
        HOME=str(tmp_path),
        MODAL_CONFIG_PATH=str(tmp_path / "modal.toml"),
        MODAL_SERVER_URL="http://127.0.0.1:9",
        PYTHONPATH=str(REPO),
        **overrides,
    )
    return env


def import_app(tmp_path: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    script = (
        "import json, renderer.modal_app as m\n"
        "from tests.test_modal_app import deployed_options\n"
        "print(json.dumps(deployed_options(m.Renderer)))\n"
    )
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        cwd=REPO,
        env=offline_env(tmp_path, **overrides),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_default_options() -> None:
    """By default the class is one H100 class with GPU snapshots, no idle containers, one
    buffer container, 10 at most, 5 minutes of idle before scale-down, a 30-minute
    timeout, one render per container, weights read-only, and no web endpoint."""
    assert deployed_options(RENDERER) == {
        "app": "spillway-renderer",
        "class": "Renderer",
        "methods": ["render"],
        "gpu": "H100",
        "gpus": [["H100", 1]],
        "enable_memory_snapshot": True,
        "experimental_options": {"enable_gpu_snapshot": "True"},
        "autoscaler": {
            "min_containers": 0,
            "buffer_containers": 1,
            "max_containers": 10,
            "scaledown_window": 300,
        },
        "timeout": [1800, 1800],
        "max_concurrent_inputs": [1, 1],
        "web": [],
        "volumes": {
            "/models": ["spillway-models", True],
            "/cache": ["spillway-kernel-cache", False],
        },
        "sglang_argv": [
            sys.executable,
            "-m",
            "sglang.launch_server",
            "--model-path",
            "/models/renderer",
            "--quantization",
            "fp8",
            "--context-length",
            "16384",
            "--host",
            "127.0.0.1",
            "--port",
            str(modal_app.SGLANG_PORT),
            "--enable-memory-saver",
            "--enable-weights-cpu-backup",
        ],
    }


def test_lifecycle_hooks_and_their_snapshot_sides() -> None:
    """`boot` runs before the snapshot, `restore` after it, `stop` on exit, and `render`
    is the one callable method."""
    user_cls = RENDERER._get_user_cls()

    def hooks(flag: int) -> list[str]:
        return list(_find_partial_methods_for_user_cls(user_cls, flag))

    assert hooks(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT) == ["boot"]
    assert hooks(_PartialFunctionFlags.ENTER_POST_SNAPSHOT) == ["restore"]
    assert hooks(_PartialFunctionFlags.EXIT) == ["stop"]
    assert hooks(_PartialFunctionFlags.interface_flags()) == ["render"]


def test_imports_in_a_fresh_interpreter_without_modal(tmp_path: Path) -> None:
    """The module imports with no Modal token, no Modal config and Modal unreachable,
    with every warning an error."""
    done = import_app(tmp_path)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == deployed_options(RENDERER)


def test_environment_overrides_reach_the_options(tmp_path: Path) -> None:
    """SPILLWAY_MODAL_* variables set at import (deploy) time change the options."""
    done = import_app(
        tmp_path,
        SPILLWAY_MODAL_APP="renderer-staging",
        SPILLWAY_MODAL_GPU="H200",
        SPILLWAY_MODAL_MAX_CONTAINERS="3",
        SPILLWAY_MODAL_SCALEDOWN_S="60",
        SPILLWAY_MODAL_TIMEOUT_S="900",
        SPILLWAY_MODAL_CONCURRENCY="4",
        SPILLWAY_MODAL_MODELS_VOLUME="weights-v2",
        SPILLWAY_MODAL_CACHE_VOLUME="kernels-v2",
        SPILLWAY_MODAL_MODEL_PATH="/models/video-2",
        SPILLWAY_MODAL_SGLANG_ARGS="--mem-fraction-static 0.8 --log-level 'warning'",
    )

    assert done.returncode == 0, done.stderr
    options = json.loads(done.stdout)
    assert options["app"] == "renderer-staging"
    assert options["gpus"] == [["H200", 1]]
    assert options["autoscaler"] == {
        "min_containers": 0,
        "buffer_containers": 1,
        "max_containers": 3,
        "scaledown_window": 60,
    }
    assert options["timeout"] == [900, 900]
    assert options["max_concurrent_inputs"] == [4, 4]
    assert options["volumes"] == {"/models": ["weights-v2", True], "/cache": ["kernels-v2", False]}
    assert options["sglang_argv"][4] == "/models/video-2"
    assert options["sglang_argv"][-4:] == ["--mem-fraction-static", "0.8", "--log-level", "warning"]


def test_a_bad_variable_stops_the_import(tmp_path: Path) -> None:
    """A malformed variable makes the import fail with its name and value."""
    done = import_app(tmp_path, SPILLWAY_MODAL_MAX_CONTAINERS="lots")

    assert done.returncode != 0
    assert "SPILLWAY_MODAL_MAX_CONTAINERS must be an integer, got 'lots'" in done.stderr


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SPILLWAY_MODAL_APP", "spillway renderer"),
        ("SPILLWAY_MODAL_GPU", "A10G"),
        ("SPILLWAY_MODAL_GPU", "H100:2"),
        ("SPILLWAY_MODAL_MAX_CONTAINERS", "0"),
        ("SPILLWAY_MODAL_SCALEDOWN_S", "1"),
        ("SPILLWAY_MODAL_SCALEDOWN_S", "3601"),
        ("SPILLWAY_MODAL_TIMEOUT_S", "-5"),
        ("SPILLWAY_MODAL_CONCURRENCY", ""),
        ("SPILLWAY_MODAL_MODELS_VOLUME", ""),
        ("SPILLWAY_MODAL_CACHE_VOLUME", "cache/v2"),
        ("SPILLWAY_MODAL_MODEL_PATH", "/weights/video-1"),
        ("SPILLWAY_MODAL_SGLANG_ARGS", "--log-level 'warning"),
    ],
)
def test_config_rejects_bad_values(key: str, value: str) -> None:
    """Each malformed setting is refused with a message naming the variable and value."""
    with pytest.raises(ValueError, match=key) as raised:
        ModalConfig.from_environ({key: value})

    assert key in str(raised.value) and repr(value) in str(raised.value)


def test_config_round_trips_through_the_image_environment() -> None:
    """A config written as environment variables (as into the image) reads back equal,
    and an empty environment reads as the defaults."""
    config = ModalConfig(
        app="r",
        gpu="B200",
        max_containers=7,
        scaledown_s=2,
        timeout_s=10,
        concurrency=3,
        models_volume="m",
        cache_volume="c",
        model_path="/models/x y",
        sglang_args=("--log-level", "a b"),
    )

    assert ModalConfig.from_environ(config.environ()) == config
    assert ModalConfig.from_environ({}) == ModalConfig()


def test_image_installs_the_renderers_declared_dependencies() -> None:
    """Each renderer requirement the image installs is one pyproject.toml declares, and
    the default frame rate is the in-house renderer's."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]

    assert set(modal_app.RENDERER_REQUIREMENTS) <= set(declared)
    assert modal_app.DEFAULT_FPS == DEFAULT_FPS


@pytest.mark.parametrize(
    ("request_dict", "problem"),
    [
        ({**REQUEST.to_dict(), "prompt": " "}, "prompt must not be empty"),
        ({**REQUEST.to_dict(), "width": 63}, "width must be an even number"),
        ({**REQUEST.to_dict(), "seconds": -1}, "seconds out of range: -1"),
        ({**REQUEST.to_dict(), "fps": "fast"}, "invalid literal"),
        ({k: v for k, v in REQUEST.to_dict().items() if k != "job_id"}, "missing 'job_id'"),
        ([], "invalid render request"),
    ],
)
def test_invalid_requests_are_not_retryable(request_dict: Any, problem: str) -> None:
    """A request that can never render raises InvalidRenderRequest (INVALID_ARGUMENT),
    which survives the pickling Modal hands exceptions to the caller with."""
    with pytest.raises(InvalidRenderRequest, match=problem) as raised:
        remote_spec(request_dict)

    copy = pickle.loads(pickle.dumps(raised.value))
    assert type(copy) is InvalidRenderRequest and str(copy) == str(raised.value)
    assert copy.status_code is grpc.StatusCode.INVALID_ARGUMENT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Container:
    """Runs the Renderer class as a Modal container does (`modal._runtime`'s lifecycle
    manager finds the hooks with `_find_callables_for_obj`), on the stand-in SGLang."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *knobs: str) -> None:
        user_cls = RENDERER._get_user_cls()
        self.port = free_port()
        launch = SglangLaunch(
            model_path="/models/renderer", port=self.port, command=STANDIN_COMMAND, extra_args=knobs
        )
        monkeypatch.setattr(user_cls, "sglang", launch)
        self.instance = user_cls()

    def run(self, flag: int) -> None:
        for hook in _find_callables_for_obj(self.instance, flag).values():
            hook()

    def render(self, request: Any) -> dict[str, Any]:
        methods = _find_callables_for_obj(self.instance, _PartialFunctionFlags.CALLABLE_INTERFACE)
        result: dict[str, Any] = methods["render"](request)
        return result

    def sglang_info(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/server_info"
        info: dict[str, Any] = httpx.get(url, trust_env=False).json()
        return info


@pytest.fixture
def container(monkeypatch: pytest.MonkeyPatch) -> Iterator[Container]:
    monkeypatch.delenv("MODAL_TASK_ID", raising=False)
    container = Container(monkeypatch)
    yield container
    container.run(_PartialFunctionFlags.EXIT)


def test_container_lifecycle(container: Container) -> None:
    """Boot leaves SGLang warmed up with its memory released (what is snapshotted),
    restore takes the memory back, the first render is cold and reports the boot, the
    second is warm, both return valid MP4s, and exit stops SGLang."""
    container.run(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    booted = container.sglang_info()
    container.run(_PartialFunctionFlags.ENTER_POST_SNAPSHOT)
    restored = container.sglang_info()

    first = RemoteResult.from_dict(container.render(REQUEST.to_dict()))
    second = RemoteResult.from_dict(container.render(REQUEST.to_dict()))
    container.run(_PartialFunctionFlags.EXIT)

    assert booted["generates"] == 1 and booted["released"] is True
    assert restored["released"] is False
    for result in (first, second):
        info = probe_mp4(result.mp4)
        assert (info.codec, info.width, info.height, info.frames) == ("h264", 64, 48, 8)
        meta = result.metadata
        assert meta.bytes == len(result.mp4)
        assert meta.sha256 == hashlib.sha256(result.mp4).hexdigest()
        assert (meta.frames, meta.fps, meta.duration_seconds) == (8, 8, 1.0)
        assert meta.engine == "sglang" and meta.render_seconds > 0
        assert meta.container_id == f"{socket.gethostname()}-{os.getpid()}"
    assert first.metadata.cold_start and first.metadata.boot_seconds > 0
    assert first.metadata.restore_seconds > 0
    assert not second.metadata.cold_start
    assert (second.metadata.boot_seconds, second.metadata.restore_seconds) == (0.0, 0.0)
    with pytest.raises(httpx.TransportError):
        container.sglang_info()


def test_container_restored_from_a_snapshot(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container restored from the snapshot (a new MODAL_TASK_ID) reports its own id
    and restore time, and no boot time: the boot happened in another container."""
    monkeypatch.setenv("MODAL_TASK_ID", "ta-01SNAPSHOT")
    container.run(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    monkeypatch.setenv("MODAL_TASK_ID", "ta-01RESTORED")
    container.run(_PartialFunctionFlags.ENTER_POST_SNAPSHOT)

    meta = RemoteResult.from_dict(container.render(REQUEST.to_dict())).metadata

    assert meta.container_id == "ta-01RESTORED"
    assert meta.cold_start and meta.boot_seconds == 0.0 and meta.restore_seconds > 0


def test_cold_means_the_input_waited_for_its_container(container: Container) -> None:
    """An input spawned before its container was ready waited for the boot: cold, even
    if another input came first. One spawned after (a pre-warmed or buffer container's
    first input) is warm."""
    spawned_early = time.time()
    container.run(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    container.run(_PartialFunctionFlags.ENTER_POST_SNAPSHOT)
    spawned_late = time.time()

    def render(spawned_at: float) -> RemoteMetadata:
        request = dataclasses.replace(REQUEST, spawned_at=spawned_at).to_dict()
        return RemoteResult.from_dict(container.render(request)).metadata

    prewarmed_first = render(spawned_late)
    waited = render(spawned_early)
    assert not prewarmed_first.cold_start and prewarmed_first.restore_seconds == 0.0
    assert waited.cold_start and waited.restore_seconds > 0


def test_render_with_sglang_gone_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    """When SGLang dies during a render, the render raises EngineUnavailable
    (UNAVAILABLE, so the scheduler retries it elsewhere) naming the exit code."""
    monkeypatch.delenv("MODAL_TASK_ID", raising=False)
    container = Container(monkeypatch, "--standin-die-after", "1")
    container.run(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    container.run(_PartialFunctionFlags.ENTER_POST_SNAPSHOT)
    try:
        with pytest.raises(EngineUnavailable, match="exited with code 1 during /generate"):
            container.render(REQUEST.to_dict())
    finally:
        container.run(_PartialFunctionFlags.EXIT)


def test_render_refuses_an_invalid_request(container: Container) -> None:
    """render() on a booted container refuses an invalid request without rendering."""
    container.run(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    container.run(_PartialFunctionFlags.ENTER_POST_SNAPSHOT)

    with pytest.raises(InvalidRenderRequest, match="height must be an even number"):
        container.render({**REQUEST.to_dict(), "height": 4097})

    assert container.sglang_info()["generates"] == 1


def traced_request(**fields: Any) -> tuple[dict[str, Any], trace.SpanContext]:
    """REQUEST as the scheduler sends it from inside its span: with that span's W3C
    context in `trace_context`."""
    with trace.get_tracer("tests").start_as_current_span("scheduler.render") as caller:
        headers: dict[str, str] = {}
        propagate.inject(headers)
    request = dataclasses.replace(REQUEST, trace_context=headers).to_dict()
    return {**request, **fields}, caller.get_span_context()


def test_render_joins_the_trace_it_was_sent(
    container: Container, spans: InMemorySpanExporter
) -> None:
    """A render whose request carries `trace_context` is a `renderer.render` SERVER span
    under the caller's span, describing the job, the container and the render."""
    container.run(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    container.run(_PartialFunctionFlags.ENTER_POST_SNAPSHOT)
    request, caller = traced_request()

    result = RemoteResult.from_dict(container.render(request))

    [span] = [s for s in spans.get_finished_spans() if s.name == "renderer.render"]
    assert span.kind is SpanKind.SERVER
    assert span.context.trace_id == caller.trace_id
    assert span.parent is not None and span.parent.span_id == caller.span_id
    attributes = dict(span.attributes or {})
    assert attributes.pop("spillway.render_seconds") == result.metadata.render_seconds
    generate = attributes.pop("spillway.generate_seconds")
    encode = attributes.pop("spillway.encode_seconds")
    assert isinstance(generate, float) and isinstance(encode, float)
    assert generate > 0 and generate + encode == pytest.approx(result.metadata.render_seconds)
    assert attributes == {
        "spillway.job_id": "job-1",
        "spillway.container_id": result.metadata.container_id,
        "spillway.cold_start": True,
        "spillway.engine": "sglang",
        "spillway.frames": 8,
        "spillway.fps": 8,
        "spillway.width": 64,
        "spillway.height": 48,
        "spillway.bytes": len(result.mp4),
    }


def test_invalid_render_span_is_an_error_in_the_callers_trace(
    container: Container, spans: InMemorySpanExporter
) -> None:
    """An invalid request still makes its span in the caller's trace, ended with ERROR
    and the exception recorded."""
    container.run(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    container.run(_PartialFunctionFlags.ENTER_POST_SNAPSHOT)
    request, caller = traced_request(width=63)

    with pytest.raises(InvalidRenderRequest):
        container.render(request)

    [span] = [s for s in spans.get_finished_spans() if s.name == "renderer.render"]
    assert span.context.trace_id == caller.trace_id
    assert span.status.status_code is StatusCode.ERROR
    assert "width must be an even number" in (span.status.description or "")
    assert [event.name for event in span.events] == ["exception"]
