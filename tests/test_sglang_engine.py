"""The SGLang engine's lifecycle against a stand-in server run as a real child process
(`tests/sglang_standin.py`): launch, health, warm-up, memory release and resume,
generation, crashes, and shutdown."""

from __future__ import annotations

import pickle
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from renderer.errors import InvalidRenderRequest
from renderer.pipeline import RenderSpec
from renderer.sglang_engine import EngineUnavailable, SglangServer, SglangTokenEngine
from renderer.sglang_launch import SglangLaunch
from tests.conftest import free_port

STANDIN_COMMAND = (sys.executable, str(Path(__file__).with_name("sglang_standin.py")))
READY_TIMEOUT_S = 20.0
CONTEXT_LENGTH = 4096

StartServer = Callable[..., SglangServer]


def server_info(server: SglangServer) -> dict[str, Any]:
    info: dict[str, Any] = httpx.get(f"{server.url}/server_info", trust_env=False).json()
    return info


def running(pid: int) -> bool:
    """Whether `pid` is a live process; a zombie (exited, waiting to be reaped) is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def eventually(check: Callable[[], bool], *, within: float = 10.0) -> bool:
    """Whether `check` turns true before the deadline."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def spec(*, seconds: int = 2, fps: int = 5) -> RenderSpec:
    return RenderSpec(
        job_id="job-1",
        prompt="a lighthouse in a storm",
        model="video-1",
        seconds=seconds,
        width=64,
        height=48,
        fps=fps,
    )


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Starts stand-in servers with the given `--standin-*` knobs; stops them after."""
    servers: list[SglangServer] = []

    def start(*knobs: str, stop_grace_s: float = 5.0, ready: bool = True) -> SglangServer:
        launch = SglangLaunch(
            model_path="/models/video-1",
            port=free_port(),
            command=STANDIN_COMMAND,
            quantization="fp8",
            context_length=CONTEXT_LENGTH,
            extra_args=knobs,
        )
        server = SglangServer(launch, request_timeout_s=10.0, stop_grace_s=stop_grace_s)
        servers.append(server)
        if ready:
            server.start(ready_timeout_s=READY_TIMEOUT_S)
        return server

    yield start
    for server in servers:
        server.stop()


def test_start_returns_once_health_answers(start_server: StartServer) -> None:
    """start() waits out a server that answers 503 while booting and returns once it is
    healthy."""
    server = start_server("--standin-boot-s", "1.0")

    assert httpx.get(f"{server.url}/health", trust_env=False).status_code == 200


def test_launch_passes_sglang_flags(start_server: StartServer) -> None:
    """The server is launched with the model path, the quantization and context length
    it was given, loopback and the memory-saver flags the snapshot lifecycle needs, then
    any extra args."""
    server = start_server("--standin-boot-s", "0")

    argv = server_info(server)["argv"]

    assert argv[:6] == [
        "--model-path",
        "/models/video-1",
        "--quantization",
        "fp8",
        "--context-length",
        str(CONTEXT_LENGTH),
    ]
    assert argv[6:10] == ["--host", "127.0.0.1", "--port", str(server.url.rsplit(":", 1)[1])]
    assert {"--enable-memory-saver", "--enable-weights-cpu-backup"} <= set(argv)
    assert argv[-2:] == ["--standin-boot-s", "0"]


def test_warm_up_runs_one_generate(start_server: StartServer) -> None:
    """warm_up() sends one generate to the server."""
    server = start_server()

    server.warm_up()

    assert server_info(server)["generates"] == 1


def test_generate_returns_exactly_the_tokens_asked_for(start_server: StartServer) -> None:
    """generate_tokens() returns the server's output ids, as many as requested."""
    server = start_server()

    ids = server.generate_tokens("a prompt", 7)

    assert len(ids) == 7 and all(isinstance(i, int) for i in ids)


def test_release_refuses_generates_until_resume(start_server: StartServer) -> None:
    """After release_memory() generating fails fast without reaching (and killing) the
    server; resume_memory() makes it generate again."""
    server = start_server()

    server.release_memory()
    assert server_info(server)["released"] is True
    with pytest.raises(EngineUnavailable, match="released"):
        server.generate_tokens("a prompt", 3)
    server.resume_memory()

    assert server_info(server)["released"] is False
    assert len(server.generate_tokens("a prompt", 3)) == 3


def test_resume_without_release_is_refused(start_server: StartServer) -> None:
    """resume_memory() on memory that was never released raises, and the server, which
    would die of such a resume, keeps serving."""
    server = start_server()

    with pytest.raises(RuntimeError, match="not released"):
        server.resume_memory()

    assert len(server.generate_tokens("a prompt", 2)) == 2


def test_engine_yields_each_frame_in_order(start_server: StartServer) -> None:
    """The token engine yields one item per frame, in order, each with tokens_per_frame
    ids, asking the server once per batch of frames."""
    server = start_server()
    engine = SglangTokenEngine(
        server, context_length=CONTEXT_LENGTH, tokens_per_frame=3, frames_per_request=4
    )

    tokens = list(engine.tokens(spec(seconds=2, fps=5)))

    assert [t.index for t in tokens] == list(range(10))
    assert all(t.data.shape == (3,) and t.data.dtype == np.int64 for t in tokens)
    assert server_info(server)["generates"] == 3
    assert engine.name == "sglang"


def test_engine_rejects_batches_beyond_the_context_length(start_server: StartServer) -> None:
    """A batch of frames whose tokens could not fit the context length is refused at
    construction."""
    server = start_server(ready=False)

    with pytest.raises(ValueError, match="context length"):
        SglangTokenEngine(server, context_length=CONTEXT_LENGTH, tokens_per_frame=CONTEXT_LENGTH)


def test_a_prompt_over_the_context_is_an_invalid_request(start_server: StartServer) -> None:
    """A generate SGLang refuses with a 4xx (the prompt and its frames are longer than
    the context) raises InvalidRenderRequest with SGLang's reason: no retry can help,
    and the server keeps serving."""
    server = start_server()
    engine = SglangTokenEngine(server, context_length=CONTEXT_LENGTH, frames_per_request=5)
    long = RenderSpec(
        job_id="job-1",
        prompt="word " * CONTEXT_LENGTH,
        model="video-1",
        seconds=1,
        width=64,
        height=48,
        fps=5,
    )

    with pytest.raises(InvalidRenderRequest, match="maximum context length of 4096") as raised:
        list(engine.tokens(long))

    assert raised.value.status_code is grpc.StatusCode.INVALID_ARGUMENT
    assert len(server.generate_tokens("a prompt", 2)) == 2


def test_server_exiting_while_booting_is_reported(start_server: StartServer) -> None:
    """A server that exits before it is healthy makes start() raise an error naming its
    exit code and its last stderr lines."""
    server = start_server("--standin-exit-on-boot", "3", ready=False)

    with pytest.raises(EngineUnavailable) as raised:
        server.start(ready_timeout_s=READY_TIMEOUT_S)

    assert "exited with code 3 while starting" in str(raised.value)
    assert "CUDA out of memory" in str(raised.value)


def test_server_not_healthy_by_the_deadline_is_stopped(start_server: StartServer) -> None:
    """A server still booting at the deadline makes start() raise, and is stopped."""
    server = start_server("--standin-boot-s", "60", ready=False)

    with pytest.raises(EngineUnavailable, match=r"not healthy within 0.5s"):
        server.start(ready_timeout_s=0.5)

    assert server.pid is not None and not running(server.pid)


def test_server_dying_mid_render_is_a_retryable_error(start_server: StartServer) -> None:
    """A server that crashes during a generate makes the render fail with a retryable
    error naming the exit code and the crash's stderr, and leaves no process behind."""
    server = start_server(
        "--standin-die-after", "1", "--standin-exit-code", "7", "--standin-children", "1"
    )
    child = server_info(server)["children"][0]
    engine = SglangTokenEngine(server, context_length=CONTEXT_LENGTH, frames_per_request=5)
    frames = engine.tokens(spec(seconds=2, fps=5))
    assert next(frames).index == 0

    with pytest.raises(EngineUnavailable) as raised:
        list(frames)

    error = raised.value
    assert "exited with code 7 during /generate" in str(error)
    assert "scheduler died" in str(error)
    assert error.status_code is grpc.StatusCode.UNAVAILABLE
    copy = pickle.loads(pickle.dumps(error))  # how Modal hands it to the scheduler
    assert type(copy) is EngineUnavailable and str(copy) == str(error)
    assert eventually(lambda: not running(child))


def test_a_dead_server_fails_the_next_generate_at_once(start_server: StartServer) -> None:
    """Once the server has died, a generate fails at once with the same clear error."""
    server = start_server("--standin-die-after", "0")
    with pytest.raises(EngineUnavailable):
        server.generate_tokens("a prompt", 1)

    with pytest.raises(EngineUnavailable, match="exited with code 1 before /generate"):
        server.generate_tokens("a prompt", 1)


def test_stop_leaves_no_process(start_server: StartServer) -> None:
    """stop() ends the server and the processes it started, and a second stop() is a
    no-op returning the same exit code."""
    server = start_server("--standin-children", "2")
    pids = [server_info(server)["pid"], *server_info(server)["children"]]

    code = server.stop()

    assert code == -signal.SIGTERM
    assert eventually(lambda: not any(running(pid) for pid in pids))
    assert server.stop() == code


def test_stop_kills_a_server_that_ignores_sigterm(start_server: StartServer) -> None:
    """A server that ignores SIGTERM is killed once the grace period is over."""
    server = start_server("--standin-ignore-sigterm", stop_grace_s=0.3)

    assert server.stop() == -signal.SIGKILL
    assert server.pid is not None and not running(server.pid)
