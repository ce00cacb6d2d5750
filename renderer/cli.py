"""`python -m renderer serve ...` (also `spillway renderer ...`): run an in-house renderer
until SIGINT or SIGTERM (or, with `--exit-with-stdin`, until stdin closes), then drain it.

Once it serves, it prints `renderer listening on <address> (<n> slots)` on stdout: with
`--port 0`, that line is how the process that started it learns the port. Logs are JSON
lines on stderr; traces follow the standard `OTEL_*` variables (see `renderer.telemetry`)
and are flushed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from renderer.encoder import DEFAULT_PRESET, X264_PRESETS
from renderer.server import DEFAULT_FPS, DEFAULT_SLOTS, start_renderer_server
from renderer.telemetry import setup_logging, setup_tracing
from renderer.validation import MAX_FPS

DEFAULT_PORT = 50061
DEFAULT_GRACE_SECONDS = 30.0
SERVICE_NAME = "spillway-renderer"
"""The traces' service name, unless OTEL_SERVICE_NAME says otherwise."""


def main(argv: list[str] | None = None) -> int:
    started_at = _process_started_at()
    args = _parser().parse_args(argv)
    try:
        setup_logging(logging.INFO)
        shutdown_tracing = setup_tracing(SERVICE_NAME)
    except ValueError as error:
        # A bad OTEL_TRACES_EXPORTER, SPILLWAY_LOG_FORMAT or SPILLWAY_LOG_LEVEL.
        print(f"renderer: {error}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(args, started_at))
    finally:
        shutdown_tracing()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="renderer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve Renderer.Render over gRPC")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (%(default)s)")
    serve.add_argument(
        "--port", type=_int_between(0, 65535), default=DEFAULT_PORT, help="0 picks a free port"
    )
    serve.add_argument(
        "--slots", type=_int_between(1, 1024), default=DEFAULT_SLOTS, help="concurrent renders"
    )
    serve.add_argument(
        "--fps",
        type=_int_between(1, MAX_FPS),
        default=DEFAULT_FPS,
        help="frame rate for requests that leave it 0",
    )
    serve.add_argument("--preset", choices=X264_PRESETS, default=DEFAULT_PRESET)
    serve.add_argument(
        "--grace-seconds",
        type=float,
        default=DEFAULT_GRACE_SECONDS,
        help="on shutdown, how long in-flight renders may run before they are cancelled",
    )
    serve.add_argument(
        "--work-dir", type=Path, default=None, help="where renders are written (system temp)"
    )
    serve.add_argument(
        "--boot-delay-s",
        type=_seconds,
        default=0.0,
        help="wait this long before serving, as a container's boot or snapshot restore "
        "would; the first render reports it within its boot seconds",
    )
    serve.add_argument(
        "--exit-with-stdin",
        action="store_true",
        help="stop (draining as on SIGTERM) when stdin reaches end of file, so that the "
        "renderer ends with the process holding its stdin, even one killed by SIGKILL",
    )
    return parser


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def integer(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return integer


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, got {text}")
    return value


def _process_started_at() -> float:
    """When this process started, on the `time.monotonic()` clock, so that the boot time
    a cold render reports counts the interpreter's start and imports too. Read from
    /proc on Linux; elsewhere (or if that fails), now."""
    try:
        with open("/proc/self/stat", "rb") as stat_file:
            stat = stat_file.read()
        # The fields after the command name, which may itself hold spaces or parentheses;
        # the start time (field 22) is in clock ticks since boot.
        fields = stat[stat.rindex(b")") + 2 :].split()
        started_s = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        age_s = time.clock_gettime(time.CLOCK_BOOTTIME) - started_s
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic()
    return time.monotonic() - max(age_s, 0.0)


async def _serve(args: argparse.Namespace, started_at: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if args.exit_with_stdin:
        _stop_at_stdin_eof(loop, stop)
    # Booting, as a container would (or restoring its snapshot): a stop meanwhile ends
    # the process at once, since it has nothing to drain.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=args.boot_delay_s)
    if stop.is_set():
        return 0
    server = await start_renderer_server(
        args.host,
        args.port,
        slots=args.slots,
        fps=args.fps,
        preset=args.preset,
        work_dir=args.work_dir,
        started_at=started_at,
    )
    print(f"renderer listening on {server.address} ({args.slots} slots)", flush=True)
    await stop.wait()
    print(f"renderer draining (up to {args.grace_seconds:g} s)", file=sys.stderr, flush=True)
    await server.stop(args.grace_seconds)
    return 0


def _stop_at_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Sets `stop` once stdin reaches end of file or fails; what arrives before is
    ignored. A daemon thread reads it, so stdin may be a pipe, a file or /dev/null."""

    def read_to_eof() -> None:
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        # The loop may be closed already if the server stopped for another reason.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=read_to_eof, name="stdin-eof", daemon=True).start()
