"""`python -m renderer serve ...` (also `spillway renderer ...`): run an in-house renderer
until SIGINT or SIGTERM, then drain it."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from renderer.encoder import DEFAULT_PRESET, X264_PRESETS
from renderer.server import DEFAULT_FPS, DEFAULT_SLOTS, start_renderer_server
from renderer.validation import MAX_FPS

DEFAULT_PORT = 50061
DEFAULT_GRACE_SECONDS = 30.0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return asyncio.run(_serve(args))


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
    return parser


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def integer(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return integer


async def _serve(args: argparse.Namespace) -> int:
    server = await start_renderer_server(
        args.host,
        args.port,
        slots=args.slots,
        fps=args.fps,
        preset=args.preset,
        work_dir=args.work_dir,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"renderer listening on {server.address} ({args.slots} slots)", flush=True)
    await stop.wait()
    print(f"renderer draining (up to {args.grace_seconds:g} s)", file=sys.stderr, flush=True)
    await server.stop(args.grace_seconds)
    return 0
