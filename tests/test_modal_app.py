"""The Modal app: it imports offline, its image recipe and class options are what the
settings say, and its class runs boot -> restore -> render -> exit the way a Modal
container runs it, against the stand-in SGLang server. Only Modal's servers, the image
build and the GPU are missing."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import inspect
import json
import os
import pickle
import shlex
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterable, Iterator
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
from renderer.errors import InvalidRenderRequest, RenderRecalled
from renderer.modal_app import remote_spec
from renderer.modal_config import ModalConfig
from renderer.modal_kernels import precompile_argv
from renderer.pipeline import Frame, FrameDecoder, FrameTokens, RenderSpec
from renderer.probe import probe_mp4
from renderer.remote import RemoteMetadata, RemoteRequest, RemoteResult
from renderer.server import DEFAULT_FPS
from renderer.sglang_engine import SGLANG_VERSION, EngineUnavailable
from renderer.sglang_launch import Checkpoint, SglangLaunch, settle
from tests.fake_modal import FakeModal

REPO = Path(__file__).resolve().parents[1]
STANDIN_COMMAND = (sys.executable, str(REPO / "tests" / "sglang_standin.py"))
# At runtime the decorated class is a modal.Cls, whatever its static type.
RENDERER: Any = modal_app.Renderer
REQUEST = RemoteRequest(
    job_id="job-1", prompt="a paper boat", model="video-1", seconds=1, width=64, height=48, fps=8
)
FP8_CHECKPOINT = {
    "architectures": ["VideoTokenModel"],
    "max_position_embeddings": 32768,
    "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]},
}


def _closure(function: Any) -> dict[str, Any]:
    cells = (cell.cell_contents for cell in function.__closure__ or ())
    return dict(zip(function.__code__.co_freevars, cells, strict=True))


def deployed_options(cls: Any) -> dict[str, Any]:
    """What `modal deploy` would send for `cls`, read offline, as JSON. modal 1.6.4 has
    no public accessor for it: `_Function._from_local` keeps the options in the closure
    of the loader that sends FunctionCreate, and a summary in the FunctionInfo that
    `Function.info()` returns without a network call."""
    service = cls._get_class_service_function()
    args = _closure(synchronizer._translate_in(service)._load)
    autoscaler = args["autoscaler_settings"]
    info = service.info()
    web = [args["webhook_config"], args["http_config"]]
    web += [m.webhook_config for m in args["method_definitions"].values() if m.webhook_config.type]
    return {
        "app": cls._get_app().name,
        "class": cls._get_user_cls().__name__,
        "methods": sorted(info.method_names),
        "gpu": args["gpu"],
        "gpus": [list(gpu) for gpu in info.gpus],
        "cpu": args["cpu"],
        "memory_mib": args["memory"],
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
        "startup_timeout": args["startup_timeout"],
        "max_concurrent_inputs": [args["max_concurrent_inputs"], info.concurrency_info.max_inputs],
        "web": [str(w) for w in web if w is not None],
        "volumes": {path: [v.name, v.read_only] for path, v in info.volumes.items()},
        "secrets": [secret._name for secret in args["secrets"]],
        "sglang_argv": cls._get_user_cls().sglang.argv(),
    }


def image_recipe(image: Any) -> list[dict[str, Any]]:
    """The image's build steps, base first, read offline from the loaders modal 1.6.4's
    `_Image._from_args` makes (the Dockerfile commands each layer would send, and the
    build function with its resources and pickled kwargs), and the local source that
    `add_local_python_source` attaches last."""
    steps: list[dict[str, Any]] = []
    layer = synchronizer._translate_in(image)
    while layer is not None:
        cells = _closure(layer._load)
        if "mount" in cells:
            steps.append({"mount": [m.module_name for m in cells["mount"]._entries]})
            layer = cells["base_image"]
            continue
        if cells["build_function"] is not None:
            function = _closure(cells["build_function"]._load)
            steps.append(
                {
                    "run_function": function["info"].raw_f.__qualname__,
                    "gpu": function["gpu"],
                    "timeout": function["timeout"],
                    "volumes": {
                        path: volume.name
                        for path, volume in function["validated_volumes_no_cloud_buckets"]
                    },
                    "kwargs": pickle.loads(cells["build_function_input"].args)[1],
                }
            )
        else:
            commands = cells["dockerfile_function"]("2025.06").commands
            steps.append({"commands": [c for c in commands if c != "FROM base"]})
        bases = list(cells["base_images"].values())
        layer = bases[0] if bases else None
    steps.reverse()
    return steps


def env_of(step: dict[str, Any]) -> dict[str, str]:
    """The variables an image step's `ENV K=V` commands set."""
    pairs = (shlex.split(c.removeprefix("ENV "))[0] for c in step["commands"])
    return dict(pair.split("=", 1) for pair in pairs)


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
    """Imports the app in a fresh interpreter, as `modal deploy` does, and prints its
    class options and image recipe."""
    script = (
        "import json, renderer.modal_app as m\n"
        "from tests.test_modal_app import deployed_options, image_recipe\n"
        "print(json.dumps({'options': deployed_options(m.Renderer),"
        " 'image': image_recipe(m.image)}))\n"
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
    """By default the class is one pinned H100 class with CPU and memory reserved, GPU
    snapshots, no idle containers, one buffer container, 10 at most, 5 minutes of idle
    before scale-down, 30 minutes for a render and 30 for a start, one render per
    container, weights read-only, no secrets and no web endpoint; SGLang takes the
    checkpoint's quantization and context length."""
    assert deployed_options(RENDERER) == {
        "app": "spillway-renderer",
        "class": "Renderer",
        "methods": ["bake", "render"],
        "gpu": "H100!",
        "gpus": [["H100!", 1]],
        "cpu": 8.0,
        "memory_mib": 65536,
        "enable_memory_snapshot": True,
        "experimental_options": {"enable_gpu_snapshot": "True"},
        "autoscaler": {
            "min_containers": 0,
            "buffer_containers": 1,
            "max_containers": 10,
            "scaledown_window": 300,
        },
        "timeout": [1800, 1800],
        "startup_timeout": 1800,
        "max_concurrent_inputs": [1, 1],
        "web": [],
        "volumes": {
            "/models": ["spillway-models", True],
            "/cache": ["spillway-kernel-cache", False],
        },
        "secrets": [],
        "sglang_argv": [
            sys.executable,
            "-m",
            "sglang.launch_server",
            "--model-path",
            "/models/v1",
            "--host",
            "127.0.0.1",
            "--port",
            str(modal_app.SGLANG_PORT),
            "--enable-memory-saver",
            "--enable-weights-cpu-backup",
        ],
    }


def test_the_image_recipe_follows_the_settings(tmp_path: Path) -> None:
    """Imported with settings, the image is SGLang's pinned CUDA devel image, the
    renderer's requirements, the toolkit and kernel-cache variables, a kernel precompile
    on the pinned GPU with the weights and cache mounted and every setting the kernels
    depend on, the settings for containers, then the source; the class pins the same
    GPU, reserves the CPU and memory, has separate render and startup timeouts and the
    OTEL secret."""
    done = import_app(
        tmp_path,
        SPILLWAY_MODAL_GPU="H200",
        SPILLWAY_MODAL_CPU="12",
        SPILLWAY_MODAL_MEMORY_MIB="98304",
        SPILLWAY_MODAL_TIMEOUT_S="900",
        SPILLWAY_MODAL_STARTUP_TIMEOUT_S="2400",
        SPILLWAY_MODAL_WEIGHTS_VERSION="video-2025-11",
        SPILLWAY_MODAL_QUANTIZATION="fp8",
        SPILLWAY_MODAL_CONTEXT_LENGTH="8192",
        SPILLWAY_MODAL_SGLANG_ARGS="--mem-fraction-static 0.8",
        SPILLWAY_MODAL_OTEL_SECRET="spillway-otel",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    options, (base, entrypoint, pip, toolkit, precompile, settings, source) = (
        result["options"],
        result["image"],
    )

    assert base == {"commands": [f"FROM lmsysorg/sglang:v{SGLANG_VERSION}-cu129-amd64"]}
    assert entrypoint == {"commands": ["ENTRYPOINT []"]}
    assert all(f"'{r}'" in pip["commands"][-1] for r in modal_app.RENDERER_REQUIREMENTS)
    assert env_of(toolkit) == modal_app.KERNEL_CACHE_ENV
    assert env_of(toolkit)["CUDA_HOME"] == "/usr/local/cuda"
    assert precompile == {
        "run_function": "precompile_kernels",
        "gpu": "H200",
        "timeout": modal_app.PRECOMPILE_TIMEOUT_S,
        "volumes": {"/models": "spillway-models", "/cache": "spillway-kernel-cache"},
        "kwargs": {
            "model_path": "/models/video-2025-11",
            "quantization": "fp8",
            "context_length": 8192,
            "sglang_args": ["--mem-fraction-static", "0.8"],
            "gpu": "H200",
            "cache_volume": "spillway-kernel-cache",
            "timeout_s": modal_app.PRECOMPILE_TIMEOUT_S,
        },
    }
    baked = ModalConfig.from_environ(env_of(settings))
    assert (baked.gpu, baked.startup_timeout_s) == ("H200", 2400)
    assert baked.otel_secret == "spillway-otel"
    assert source == {"mount": ["renderer", "spillway"]}
    assert (options["gpu"], options["cpu"], options["memory_mib"]) == ("H200", 12.0, 98304)
    assert (options["timeout"], options["startup_timeout"]) == ([900, 900], 2400)
    assert options["secrets"] == ["spillway-otel"]
    assert options["sglang_argv"][4] == "/models/video-2025-11"


def test_lifecycle_hooks_and_their_snapshot_sides() -> None:
    """`boot` runs before the snapshot, `restore` after it, `stop` on exit; `render` and
    `bake` are the callable methods, and `render` is async, so that Modal cancels one
    input by cancelling its task rather than by stopping the container (what it does to
    a sync method with concurrency above one)."""
    user_cls = RENDERER._get_user_cls()

    def hooks(flag: int) -> dict[str, Any]:
        return _find_partial_methods_for_user_cls(user_cls, flag)

    assert list(hooks(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT)) == ["boot"]
    assert list(hooks(_PartialFunctionFlags.ENTER_POST_SNAPSHOT)) == ["restore"]
    assert list(hooks(_PartialFunctionFlags.EXIT)) == ["stop"]
    methods = hooks(_PartialFunctionFlags.interface_flags())
    assert sorted(methods) == ["bake", "render"]
    assert inspect.iscoroutinefunction(methods["render"].raw_f)


def test_imports_in_a_fresh_interpreter_without_modal(tmp_path: Path) -> None:
    """The module imports with no Modal token, no Modal config and Modal unreachable,
    with every warning an error."""
    done = import_app(tmp_path)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["options"] == deployed_options(RENDERER)


def test_environment_overrides_reach_the_options(tmp_path: Path) -> None:
    """SPILLWAY_MODAL_* variables set at import (deploy) time change the options."""
    done = import_app(
        tmp_path,
        SPILLWAY_MODAL_APP="renderer-staging",
        SPILLWAY_MODAL_MAX_CONTAINERS="3",
        SPILLWAY_MODAL_SCALEDOWN_S="60",
        SPILLWAY_MODAL_CONCURRENCY="4",
        SPILLWAY_MODAL_MODELS_VOLUME="weights-v2",
        SPILLWAY_MODAL_CACHE_VOLUME="kernels-v2",
        SPILLWAY_MODAL_SGLANG_ARGS="--mem-fraction-static 0.8 --log-level 'warning'",
    )

    assert done.returncode == 0, done.stderr
    options = json.loads(done.stdout)["options"]
    assert options["app"] == "renderer-staging"
    assert options["autoscaler"] == {
        "min_containers": 0,
        "buffer_containers": 1,
        "max_containers": 3,
        "scaledown_window": 60,
    }
    assert options["max_concurrent_inputs"] == [4, 4]
    assert options["volumes"] == {"/models": ["weights-v2", True], "/cache": ["kernels-v2", False]}
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
        ("SPILLWAY_MODAL_GPU", "H100"),
        ("SPILLWAY_MODAL_GPU", "H100:2"),
        ("SPILLWAY_MODAL_CPU", "0.125"),
        ("SPILLWAY_MODAL_MEMORY_MIB", "lots"),
        ("SPILLWAY_MODAL_MAX_CONTAINERS", "0"),
        ("SPILLWAY_MODAL_SCALEDOWN_S", "1"),
        ("SPILLWAY_MODAL_SCALEDOWN_S", "3601"),
        ("SPILLWAY_MODAL_TIMEOUT_S", "-5"),
        ("SPILLWAY_MODAL_STARTUP_TIMEOUT_S", "30"),
        ("SPILLWAY_MODAL_CONCURRENCY", ""),
        ("SPILLWAY_MODAL_MODELS_VOLUME", ""),
        ("SPILLWAY_MODAL_CACHE_VOLUME", "cache/v2"),
        ("SPILLWAY_MODAL_WEIGHTS_VERSION", "../v1"),
        ("SPILLWAY_MODAL_WEIGHTS_VERSION", ".."),
        ("SPILLWAY_MODAL_WEIGHTS_URL", "https://store.example/weights"),
        ("SPILLWAY_MODAL_QUANTIZATION", "FP8 please"),
        ("SPILLWAY_MODAL_CONTEXT_LENGTH", "-1"),
        ("SPILLWAY_MODAL_SGLANG_ARGS", "--log-level 'warning"),
        ("SPILLWAY_MODAL_OTEL_SECRET", "otel secret"),
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
        cpu=2.5,
        memory_mib=4096,
        max_containers=7,
        scaledown_s=2,
        timeout_s=10,
        startup_timeout_s=600,
        concurrency=3,
        models_volume="m",
        cache_volume="c",
        weights_version="x.y",
        weights_url="s3://weights-bucket/renderer",
        weights_endpoint_url="https://store.example",
        weights_secret="s",
        quantization="fp8",
        context_length=4096,
        sglang_args=("--log-level", "a b"),
        otel_secret="o",
    )

    assert ModalConfig.from_environ(config.environ()) == config
    assert ModalConfig.from_environ({}) == ModalConfig()


def test_image_installs_the_renderers_declared_dependencies() -> None:
    """Each renderer requirement the image installs is one pyproject.toml declares, and
    the default frame rate is the in-house renderer's."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]

    assert set(modal_app.RENDERER_REQUIREMENTS) <= set(declared)
    assert modal_app.DEFAULT_FPS == DEFAULT_FPS


# The checkpoint settles the launch


def launch(model_path: str = "/models/v1") -> SglangLaunch:
    return SglangLaunch(model_path=model_path, port=30000)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"max_position_embeddings": 32768}, 32768),
        ({"seq_length": 8192, "max_position_embeddings": 32768}, 8192),
        ({"max_position_embeddings": 4096, "rope_scaling": {"factor": 4.0}}, 16384),
        (
            {
                "max_position_embeddings": 8192,
                "rope_scaling": {"factor": 8.0, "rope_type": "llama3"},
            },
            8192,
        ),
        ({"text_config": {"max_position_embeddings": 65536}}, 65536),
        ({}, 2048),
    ],
    ids=["max-positions", "first-key-wins", "rope-factor", "llama3-rope", "text-config", "none"],
)
def test_the_context_length_is_the_checkpoints(config: dict[str, Any], expected: int) -> None:
    """Without a setting, the context length is what SGLang derives from config.json,
    and no flag overrides it."""
    settled, context = settle(launch(), Checkpoint.of(config), quantization="", context_length=0)

    assert context == expected
    assert "--context-length" not in settled.argv()


def test_a_shorter_context_is_passed_and_a_longer_one_refused() -> None:
    """A context setting below the model's becomes the flag; one above it is refused
    before SGLang could refuse it."""
    checkpoint = Checkpoint.of({"max_position_embeddings": 16384})

    settled, context = settle(launch(), checkpoint, quantization="", context_length=4096)
    assert context == 4096
    assert settled.argv()[-8:-6] == ["--context-length", "4096"]
    with pytest.raises(ValueError, match="32768 is longer than the model's 16384"):
        settle(launch(), checkpoint, quantization="", context_length=32768)


def test_the_quantization_is_the_checkpoints_unless_it_has_none() -> None:
    """A quantized checkpoint is served as it is (no flag); a quantization setting
    applies to unquantized weights only, and one that names another format than the
    checkpoint's is refused with both names."""
    fp8 = Checkpoint.of(FP8_CHECKPOINT)
    compressed = Checkpoint.of({"quantization_config": {"quant_method": "compressed-tensors"}})
    plain = Checkpoint.of({"max_position_embeddings": 4096})

    def flag(checkpoint: Checkpoint, setting: str) -> str | None:
        return settle(launch(), checkpoint, quantization=setting, context_length=0)[0].quantization

    assert (flag(fp8, ""), flag(fp8, "fp8"), flag(compressed, "")) == (None, None, None)
    assert (flag(plain, ""), flag(plain, "fp8")) == (None, "fp8")
    with pytest.raises(ValueError, match=r"'compressed-tensors'.*'fp8'"):
        flag(compressed, "fp8")


def test_a_checkpoint_without_a_config_names_the_path(tmp_path: Path) -> None:
    """Reading a weights folder with no config.json says which path and why."""
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/config.json: are the weights"):
        Checkpoint.read(tmp_path)


def test_the_precompile_runs_compile_deep_gemm_with_the_launch_flags(tmp_path: Path) -> None:
    """The kernel precompile runs `sglang.compile_deep_gemm` with the flags the renderer
    launches SGLang with (settled against the same checkpoint), and a timeout."""
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))

    argv = precompile_argv(
        model_path=str(tmp_path),
        quantization="fp8",
        context_length=2048,
        sglang_args=["--mem-fraction-static", "0.8"],
        timeout_s=3600,
    )

    assert argv[:3] == [sys.executable, "-m", "sglang.compile_deep_gemm"]
    assert argv[3:9] == [
        "--model-path",
        str(tmp_path),
        "--quantization",
        "fp8",
        "--context-length",
        "2048",
    ]
    assert argv[-4:] == ["--mem-fraction-static", "0.8", "--timeout", "3600"]
    assert {"--enable-memory-saver", "--enable-weights-cpu-backup"} <= set(argv)


# Requests


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


# The class in a container


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class GatedDecoder:
    """The container's decoder, except that a render whose prompt is `gated_prompt`
    stops before its second frame until `gate` is set."""

    def __init__(self, inner: FrameDecoder, gated_prompt: str) -> None:
        self._inner = inner
        self._gated_prompt = gated_prompt
        self.started = threading.Event()
        self.gate = threading.Event()

    def frames(self, spec: RenderSpec, tokens: Iterable[FrameTokens]) -> Iterator[Frame]:
        for index, frame in enumerate(self._inner.frames(spec, tokens)):
            if index == 1 and spec.prompt == self._gated_prompt:
                self.started.set()
                self.gate.wait()
            yield frame


class Container:
    """Runs the Renderer class as a Modal container does (`modal._runtime`'s lifecycle
    manager finds the hooks with `_find_callables_for_obj`), on the stand-in SGLang and
    a weights folder holding only a config.json."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        weights: Path,
        *knobs: str,
        checkpoint: dict[str, Any] = FP8_CHECKPOINT,
        **settings: Any,
    ) -> None:
        weights.mkdir(exist_ok=True)
        (weights / "config.json").write_text(json.dumps(checkpoint))
        user_cls = RENDERER._get_user_cls()
        self.port = free_port()
        launch = SglangLaunch(
            model_path=str(weights), port=self.port, command=STANDIN_COMMAND, extra_args=knobs
        )
        monkeypatch.setattr(user_cls, "sglang", launch)
        monkeypatch.setattr(modal_app, "CONFIG", dataclasses.replace(modal_app.CONFIG, **settings))
        self.commits: list[bool] = []
        monkeypatch.setattr(modal_app, "commit_kernel_cache", self._commit)
        self.instance = user_cls()

    def _commit(self) -> None:
        self.commits.append(self.sglang_info()["released"])

    def run(self, flag: int) -> None:
        for hook in _find_callables_for_obj(self.instance, flag).values():
            hook()

    def method(self, name: str) -> Any:
        methods = _find_callables_for_obj(self.instance, _PartialFunctionFlags.CALLABLE_INTERFACE)
        return methods[name]

    async def render(self, request: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.method("render")(request)
        return result

    def sglang_info(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/server_info"
        info: dict[str, Any] = httpx.get(url, trust_env=False).json()
        return info


@pytest.fixture
def container(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Container]:
    monkeypatch.delenv("MODAL_TASK_ID", raising=False)
    container = Container(monkeypatch, tmp_path / "weights")
    yield container
    container.run(_PartialFunctionFlags.EXIT)


@pytest.fixture
def ready(container: Container) -> Container:
    container.run(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    container.run(_PartialFunctionFlags.ENTER_POST_SNAPSHOT)
    return container


async def test_container_lifecycle(container: Container) -> None:
    """Boot starts SGLang with the checkpoint's settings, warms it up, commits the kernel
    cache while the server still holds its memory and then releases it (what is
    snapshotted); restore takes the memory back; the first render is cold and reports
    the boot, the second is warm, both return valid MP4s, and exit stops SGLang."""
    container.run(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    booted = container.sglang_info()
    container.run(_PartialFunctionFlags.ENTER_POST_SNAPSHOT)
    restored = container.sglang_info()

    first = RemoteResult.from_dict(await container.render(REQUEST.to_dict()))
    second = RemoteResult.from_dict(await container.render(REQUEST.to_dict()))
    container.run(_PartialFunctionFlags.EXIT)

    assert "--quantization" not in booted["argv"] and "--context-length" not in booted["argv"]
    assert booted["generates"] == 1 and booted["released"] is True
    assert container.commits == [False]
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


def test_boot_refuses_settings_the_checkpoint_contradicts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A quantization setting that names another format than the checkpoint's stops the
    boot before SGLang starts, with a message naming both."""
    container = Container(
        monkeypatch,
        tmp_path / "weights",
        checkpoint={"quantization_config": {"quant_method": "modelopt"}},
        quantization="fp8",
    )

    with pytest.raises(ValueError, match="quantized as 'modelopt'"):
        container.run(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    with pytest.raises(httpx.TransportError):
        container.sglang_info()


async def test_container_restored_from_a_snapshot(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container restored from the snapshot (a new MODAL_TASK_ID) reports its own id
    and restore time, and no boot time: the boot happened in another container."""
    monkeypatch.setenv("MODAL_TASK_ID", "ta-01SNAPSHOT")
    container.run(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    monkeypatch.setenv("MODAL_TASK_ID", "ta-01RESTORED")
    container.run(_PartialFunctionFlags.ENTER_POST_SNAPSHOT)

    meta = RemoteResult.from_dict(await container.render(REQUEST.to_dict())).metadata

    assert meta.container_id == "ta-01RESTORED"
    assert meta.cold_start and meta.boot_seconds == 0.0 and meta.restore_seconds > 0


@pytest.mark.parametrize(("restored_task", "restored"), [("ta-01BOOT", False), ("ta-02", True)])
def test_bake_says_whether_the_container_was_restored(
    container: Container, monkeypatch: pytest.MonkeyPatch, restored_task: str, restored: bool
) -> None:
    """`bake` renders a sample and reports whether this container came from the
    snapshot: not the container that booted and took it, but a later one."""
    monkeypatch.setenv("MODAL_TASK_ID", "ta-01BOOT")
    container.run(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    monkeypatch.setenv("MODAL_TASK_ID", restored_task)
    container.run(_PartialFunctionFlags.ENTER_POST_SNAPSHOT)

    report = container.method("bake")()

    assert report["restored"] is restored
    assert report["container_id"] == restored_task
    assert report["bytes"] > 0 and report["restore_seconds"] > 0


async def test_cold_means_the_input_waited_for_its_container(container: Container) -> None:
    """An input spawned before its container was ready waited for the boot: cold, even
    if another input came first. One spawned after (a pre-warmed or buffer container's
    first input) is warm."""
    spawned_early = time.time()
    container.run(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    container.run(_PartialFunctionFlags.ENTER_POST_SNAPSHOT)
    spawned_late = time.time()

    async def render(spawned_at: float) -> RemoteMetadata:
        request = dataclasses.replace(REQUEST, spawned_at=spawned_at).to_dict()
        return RemoteResult.from_dict(await container.render(request)).metadata

    prewarmed_first = await render(spawned_late)
    waited = await render(spawned_early)
    assert not prewarmed_first.cold_start and prewarmed_first.restore_seconds == 0.0
    assert waited.cold_start and waited.restore_seconds > 0


async def test_cancelling_one_input_leaves_the_other_rendering(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    """On a container taking two inputs at once, cancelling one (Modal cancels the task
    of an async method's input) stops that render, marked cancelled in its span, while
    the other finishes with a valid MP4 on the same SGLang server."""
    monkeypatch.delenv("MODAL_TASK_ID", raising=False)
    container = Container(monkeypatch, tmp_path / "weights", concurrency=2)
    container.run(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    container.run(_PartialFunctionFlags.ENTER_POST_SNAPSHOT)
    gated = GatedDecoder(container.instance._decoder, gated_prompt="the one cancelled")
    container.instance._decoder = gated
    try:
        doomed_request = {**REQUEST.to_dict(), "job_id": "doomed", "prompt": "the one cancelled"}
        doomed = asyncio.create_task(container.render(doomed_request))
        await asyncio.to_thread(gated.started.wait)
        survivor = asyncio.create_task(container.render(REQUEST.to_dict()))
        doomed.cancel()
        # One turn of the loop delivers the cancel, which sets the render's cancel flag,
        # before the gated render may go on.
        await asyncio.sleep(0)
        gated.gate.set()

        with pytest.raises(asyncio.CancelledError):
            await doomed
        result = RemoteResult.from_dict(await survivor)
    finally:
        gated.gate.set()
        container.run(_PartialFunctionFlags.EXIT)

    assert probe_mp4(result.mp4).frames == 8
    events = {
        s.attributes["spillway.job_id"]: [e.name for e in s.events]
        for s in spans.get_finished_spans()
        if s.name == "renderer.render" and s.attributes
    }
    assert events == {"doomed": ["cancelled"], "job-1": []}


async def test_render_with_sglang_gone_is_retryable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """When SGLang dies during a render, the render raises EngineUnavailable
    (UNAVAILABLE, so the scheduler retries it elsewhere) naming the exit code."""
    monkeypatch.delenv("MODAL_TASK_ID", raising=False)
    container = Container(monkeypatch, tmp_path / "weights", "--standin-die-after", "1")
    container.run(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    container.run(_PartialFunctionFlags.ENTER_POST_SNAPSHOT)
    try:
        with pytest.raises(EngineUnavailable, match="exited with code 1 during /generate"):
            await container.render(REQUEST.to_dict())
    finally:
        container.run(_PartialFunctionFlags.EXIT)


async def test_render_refuses_an_invalid_request(ready: Container) -> None:
    """render() on a booted container refuses an invalid request without rendering."""
    with pytest.raises(InvalidRenderRequest, match="height must be an even number"):
        await ready.render({**REQUEST.to_dict(), "height": 4097})

    assert ready.sglang_info()["generates"] == 1


async def test_a_prompt_over_the_context_is_refused_as_invalid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A prompt that does not fit the served context (SGLang answers 4xx) fails the
    render with InvalidRenderRequest, which the scheduler neither retries nor charges."""
    monkeypatch.delenv("MODAL_TASK_ID", raising=False)
    container = Container(monkeypatch, tmp_path / "weights", context_length=64)
    container.run(_PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    container.run(_PartialFunctionFlags.ENTER_POST_SNAPSHOT)
    try:
        with pytest.raises(InvalidRenderRequest, match="maximum context length of 64"):
            await container.render({**REQUEST.to_dict(), "prompt": "word " * 64})
    finally:
        container.run(_PartialFunctionFlags.EXIT)


def traced_request(**fields: Any) -> tuple[dict[str, Any], trace.SpanContext]:
    """REQUEST as the scheduler sends it from inside its span: with that span's W3C
    context in `trace_context`."""
    with trace.get_tracer("tests").start_as_current_span("scheduler.render") as caller:
        headers: dict[str, str] = {}
        propagate.inject(headers)
    request = dataclasses.replace(REQUEST, trace_context=headers).to_dict()
    return {**request, **fields}, caller.get_span_context()


async def test_render_joins_the_trace_it_was_sent(
    ready: Container, spans: InMemorySpanExporter
) -> None:
    """A render whose request carries `trace_context` is a `renderer.render` SERVER span
    under the caller's span, describing the job, the container and the render."""
    request, caller = traced_request()

    result = RemoteResult.from_dict(await ready.render(request))

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


async def test_invalid_render_span_is_an_error_in_the_callers_trace(
    ready: Container, spans: InMemorySpanExporter
) -> None:
    """An invalid request still makes its span in the caller's trace, ended with ERROR
    and the exception recorded."""
    request, caller = traced_request(width=63)

    with pytest.raises(InvalidRenderRequest):
        await ready.render(request)

    [span] = [s for s in spans.get_finished_spans() if s.name == "renderer.render"]
    assert span.context.trace_id == caller.trace_id
    assert span.status.status_code is StatusCode.ERROR
    assert "width must be an even number" in (span.status.description or "")
    assert [event.name for event in span.events] == ["exception"]


async def test_the_start_gate_decides_before_any_gpu_work(
    ready: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An input whose start gate the scheduler closed first is refused at once
    (RenderRecalled) without a generate on SGLang; an open one renders and marks its
    gate started, and so does a rerun of it, which finds its gate already started."""
    with FakeModal() as fake:
        monkeypatch.setattr(modal_app, "start_gate", fake.Dict.from_name)
        gates = fake.Dict.from_name("gates")
        assert await gates.put.aio("job-1:1", "recalled", skip_if_exists=True)
        generates = ready.sglang_info()["generates"]

        with pytest.raises(RenderRecalled):
            await ready.render({**REQUEST.to_dict(), "start_dict": "gates", "start_key": "job-1:1"})
        assert ready.sglang_info()["generates"] == generates
        for _ in range(2):
            request = {**REQUEST.to_dict(), "start_dict": "gates", "start_key": "job-1:2"}
            assert probe_mp4(RemoteResult.from_dict(await ready.render(request)).mp4).frames == 8

    assert gates.entries == {"job-1:1": "recalled", "job-1:2": "started"}
    assert ready.sglang_info()["generates"] == generates + 2
