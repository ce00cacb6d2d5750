"""The production token engine: SGLang's HTTP server, run as a child process.

`SglangServer` owns that process: it launches it, waits until it is healthy, warms it
up, releases and resumes its GPU memory around a memory snapshot, and stops it.
`SglangTokenEngine` is the pipeline's TokenEngine on top of it. How the process is
launched is `renderer.sglang_launch`.

Endpoints, payloads and flags are those of the pinned `SGLANG_VERSION`
(`sglang/srt/entrypoints/http_server.py`, `sglang/srt/server_args.py`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import IO, Any

import grpc
import httpx
import numpy as np

from renderer.errors import InvalidRenderRequest, RendererError, RenderFailed
from renderer.pipeline import FrameTokens, RenderSpec
from renderer.sglang_launch import SglangLaunch

logger = logging.getLogger(__name__)

SGLANG_VERSION = "0.5.9"
ENGINE_NAME = "sglang"
WARM_UP_TOKENS = 8
STDERR_TAIL_LINES = 40
HEALTH_POLL_S = 0.25
# /health runs a one-token generate that SGLang gives up on after 20 s
# (SGLANG_HEALTH_CHECK_TIMEOUT); wait a little longer than that for its answer.
HEALTH_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
# How long a server that dropped a request may take to be seen exiting, and how long
# its stderr may take to drain once it has.
EXIT_GRACE_S = 5.0
# SGLang answers a request it can never serve (a prompt longer than the context, bad
# sampling parameters) with a 4xx; these two 4xx say "not now" instead.
_RETRYABLE_4XX = frozenset({httpx.codes.REQUEST_TIMEOUT, httpx.codes.TOO_MANY_REQUESTS})


class EngineUnavailable(RendererError):
    """The SGLang server is not serving: it exited, never became healthy, stopped
    answering, or has its GPU memory released. Another renderer may succeed."""

    status_code = grpc.StatusCode.UNAVAILABLE


class SglangServer:
    """One SGLang server process and an HTTP client for it. `generate_tokens` may be
    called from many threads at once; the lifecycle methods from one."""

    def __init__(
        self,
        launch: SglangLaunch,
        *,
        request_timeout_s: float = 600.0,
        stop_grace_s: float = 30.0,
    ) -> None:
        self._launch = launch
        self._request_timeout_s = request_timeout_s
        self._stop_grace_s = stop_grace_s
        self._process: subprocess.Popen[bytes] | None = None
        self._relay: threading.Thread | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._tail_lock = threading.Lock()
        self._client = self._new_client()
        # Guards the memory state: no generate starts while memory is released or
        # being released, and memory is never released under a running generate.
        self._state_lock = threading.Lock()
        self._released = False
        self._generating = 0

    @property
    def url(self) -> str:
        return f"http://{self._launch.host}:{self._launch.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def __enter__(self) -> SglangServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, *, ready_timeout_s: float) -> None:
        """Launch the server and return once `/health` answers 200. Raises
        EngineUnavailable, with the process stopped, when it exits first or is not
        healthy by the deadline."""
        if self._process is not None:
            raise RuntimeError("the SGLang server was already started")
        # Its own session, so that stopping it reaches the scheduler and detokenizer
        # processes it forks as well.
        process = subprocess.Popen(
            self._launch.argv(),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._process = process
        assert process.stderr is not None
        self._relay = threading.Thread(
            target=self._relay_stderr, args=(process.stderr,), name="sglang-stderr", daemon=True
        )
        self._relay.start()
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise self._exited("while starting")
            if self._healthy():
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise EngineUnavailable(
                    f"SGLang server was not healthy within {ready_timeout_s:g}s{self._tail()}"
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=min(HEALTH_POLL_S, remaining))

    def warm_up(self) -> None:
        """Run one short generate, so the first render does not pay for lazy setup."""
        self.generate_tokens("warm-up", WARM_UP_TOKENS)

    def release_memory(self) -> None:
        """Free the GPU memory SGLang holds (weights, KV cache, CUDA graphs), so that a
        snapshot taken now holds no live KV cache. Generating fails until
        `resume_memory`."""
        with self._state_lock:
            if self._released:
                raise RuntimeError("SGLang's GPU memory is already released")
            # SGLang's scheduler asserts it is idle here and dies otherwise.
            if self._generating:
                raise RuntimeError(
                    f"cannot release SGLang's GPU memory under {self._generating} generates"
                )
            self._post("/release_memory_occupation", {})
            self._released = True
            # Pooled connections would be restored from the snapshot into another
            # container, where they may be dead; later requests open fresh ones.
            self._client.close()
            self._client = self._new_client()

    def resume_memory(self) -> None:
        """Take back the GPU memory `release_memory` freed."""
        with self._state_lock:
            # SGLang's scheduler dies on a resume of memory it never released.
            if not self._released:
                raise RuntimeError("SGLang's GPU memory is not released")
            self._post("/resume_memory_occupation", {})
            self._released = False

    def generate_tokens(self, text: str, max_new_tokens: int) -> list[int]:
        """Exactly `max_new_tokens` token ids continuing `text`."""
        with self._state_lock:
            if self._released:
                raise EngineUnavailable("SGLang's GPU memory is released: resume it first")
            self._generating += 1
        try:
            body = self._post(
                "/generate",
                {
                    "text": text,
                    "sampling_params": {"max_new_tokens": max_new_tokens, "ignore_eos": True},
                },
            )
        finally:
            with self._state_lock:
                self._generating -= 1
        ids = body.get("output_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise RenderFailed(f"SGLang /generate answered without output_ids: {body!r:.200}")
        return ids

    def stop(self) -> int | None:
        """Terminate the server's processes, kill them after the grace period, and wait.
        Returns the exit code, or None if it never started. Safe to call again."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                process.wait(timeout=self._stop_grace_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "SGLang server ignored SIGTERM for %gs; killing it", self._stop_grace_s
                )
        # Children outlive a parent that exits or is killed.
        self._signal_group(signal.SIGKILL)
        process.wait()
        self._join_relay()
        self._client.close()
        return process.returncode

    def _new_client(self) -> httpx.Client:
        # trust_env=False: a proxy configured for the container must not carry loopback.
        return httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(self._request_timeout_s, connect=CONNECT_TIMEOUT_S),
            trust_env=False,
        )

    def _healthy(self) -> bool:
        try:
            response = self._client.get("/health", timeout=HEALTH_TIMEOUT_S)
        except httpx.TransportError:
            return False
        return response.status_code == httpx.codes.OK

    def _post(self, path: str, payload: dict[str, Any]) -> Any:
        process = self._process
        if process is None:
            raise RuntimeError("the SGLang server was not started")
        if process.poll() is not None:
            raise self._exited(f"before {path}")
        try:
            response = self._client.post(path, json=payload)
        except httpx.TransportError as error:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=EXIT_GRACE_S)
            if process.poll() is not None:
                raise self._exited(f"during {path}") from error
            raise EngineUnavailable(f"SGLang server did not answer {path}: {error!r}") from error
        if (
            path == "/generate"
            and response.is_client_error
            and response.status_code not in _RETRYABLE_4XX
        ):
            raise InvalidRenderRequest(
                f"SGLang refused the request ({response.status_code}): {response.text[:500]}"
            )
        if response.is_error:
            raise RenderFailed(
                f"SGLang {path} answered {response.status_code}: {response.text[:500]}"
            )
        return response.json() if response.content else None

    def _exited(self, when: str) -> EngineUnavailable:
        """The error for a server found dead, once what it left behind is cleaned up."""
        assert self._process is not None
        code = self._process.returncode
        self._signal_group(signal.SIGKILL)
        self._join_relay()
        return EngineUnavailable(f"SGLang server exited with code {code} {when}{self._tail()}")

    def _signal_group(self, signum: int) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def _relay_stderr(self, pipe: IO[bytes]) -> None:
        """Pass SGLang's log (it writes to stderr) through to ours, keeping the last
        lines for error messages. Writes to the file descriptor, not `sys.stderr`,
        which its owner may have replaced or closed."""
        with pipe:
            for line in pipe:
                os.write(2, line)
                with self._tail_lock:
                    self._stderr_tail.append(line.decode(errors="replace").rstrip())

    def _join_relay(self) -> None:
        if self._relay is not None:
            self._relay.join(timeout=EXIT_GRACE_S)

    def _tail(self) -> str:
        with self._tail_lock:
            lines = list(self._stderr_tail)
        return "; its last stderr lines:\n" + "\n".join(lines) if lines else ""


class SglangTokenEngine:
    """The pipeline's TokenEngine on SGLang. Frames are requested in batches of up to
    `frames_per_request`, one `/generate` of `tokens_per_frame` tokens a frame each, so
    a long render never outgrows the context length and the decoder gets frames as
    each batch arrives. The prompt goes to the model as written: the production
    model's prompt format is closed source."""

    def __init__(
        self,
        server: SglangServer,
        *,
        context_length: int,
        tokens_per_frame: int = 1,
        frames_per_request: int = 24,
    ) -> None:
        if tokens_per_frame < 1 or frames_per_request < 1:
            raise ValueError(
                "tokens_per_frame and frames_per_request must be positive, got "
                f"{tokens_per_frame} and {frames_per_request}"
            )
        if tokens_per_frame * frames_per_request >= context_length:
            raise ValueError(
                f"a request of {frames_per_request} frames x {tokens_per_frame} tokens "
                f"does not fit the context length of {context_length}"
            )
        self._server = server
        self._tokens_per_frame = tokens_per_frame
        self._frames_per_request = frames_per_request

    @property
    def name(self) -> str:
        return ENGINE_NAME

    def tokens(self, spec: RenderSpec) -> Iterator[FrameTokens]:
        for first in range(0, spec.frames, self._frames_per_request):
            count = min(self._frames_per_request, spec.frames - first)
            ids = self._server.generate_tokens(spec.prompt, count * self._tokens_per_frame)
            if len(ids) != count * self._tokens_per_frame:
                raise RenderFailed(
                    f"SGLang returned {len(ids)} tokens for {count} frames of "
                    f"{self._tokens_per_frame}"
                )
            per_frame = np.asarray(ids, dtype=np.int64).reshape(count, self._tokens_per_frame)
            for offset, data in enumerate(per_frame):
                yield FrameTokens(index=first + offset, data=data)
