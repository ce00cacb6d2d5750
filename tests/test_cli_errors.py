"""Expected failures of the `spillway` command print one line and exit non-zero: no
traceback, nothing left running."""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest

from scheduler.cli.rest_client import SseEvent, watch_with_bar
from tests.conftest import free_port


def _spillway(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={"SPILLWAY_API_KEY": "sk-test", "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_submit_with_the_gateway_down_prints_one_line() -> None:
    port = free_port()  # nothing listens there
    result = _spillway("submit", "a cat", "--base-url", f"http://127.0.0.1:{port}/v1")
    assert result.returncode == 4
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"cannot reach http://127.0.0.1:{port}/v1" in result.stderr


@pytest.mark.parametrize("option", ["--port", "--metrics-port"])
def test_dev_with_a_port_in_use_stops_at_once(taken_port: int, option: str) -> None:
    other = "--metrics-port" if option == "--port" else "--port"
    result = _spillway("dev", option, str(taken_port), other, "0", "--no-demo", "--once")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"spillway dev: 127.0.0.1:{taken_port} is not free (Address already in use); "
        f"pass {option} with another port"
    )
    # It stopped before starting anything: nothing was printed about Redis or S3.
    assert "redis" not in result.stdout


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


_STYLE = re.compile(r"\x1b\[[0-9;]*m|\x1b\[\?25[lh]")
_ERASE = re.compile(r"\x1b\[[02]?K")


def _screen(written: str) -> str:
    """What a terminal shows on one line after carriage returns and erases (colours and
    cursor hiding dropped)."""
    shown = ""
    for part in _STYLE.sub("", written).split("\r"):
        text = _ERASE.sub("", part)
        shown = text if _ERASE.search(part) else text + shown[len(text) :]
    return shown


class _Events:
    def __init__(self, events: list[SseEvent]) -> None:
        self._events = events

    async def events(self, video_id: str) -> AsyncIterator[SseEvent]:
        for event in self._events:
            yield event


async def test_watch_bar_leaves_no_stale_characters() -> None:
    out = _Terminal()
    events = [
        SseEvent("1", "video.in_progress", {"progress": 99}),
        SseEvent("2", "video.completed", {"progress": 100, "status": "completed"}),
    ]
    await watch_with_bar(_Events(events), "video_1", out)  # type: ignore[arg-type]
    shown = _screen(out.getvalue().rstrip("\n")).rstrip()
    assert re.fullmatch(r"video_1 ━+ 100% completed \d:\d\d:\d\d", shown), repr(shown)


async def test_watch_without_a_terminal_writes_a_line_per_event() -> None:
    out = io.StringIO()
    events = [
        SseEvent("1", "video.in_progress", {"progress": 40}),
        SseEvent("2", "video.completed", {"progress": 100, "status": "completed"}),
    ]
    last = await watch_with_bar(_Events(events), "video_1", out)  # type: ignore[arg-type]
    assert out.getvalue() == "40% in_progress\n100% completed\n"
    assert last["status"] == "completed"
