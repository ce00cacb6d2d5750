"""A stand-in for SGLang's HTTP server: the endpoints `renderer.sglang_engine` uses,
answering as SGLang does, with knobs for the ways a real server boots slowly or dies.

    python tests/sglang_standin.py --port N [SGLang launch flags] [--standin-* knobs]

It accepts and ignores SGLang's launch flags, so it starts from the exact command line
the engine builds, and reports that command line at `GET /server_info`. Misuse that
kills a real server (generating or resuming while memory is released or not) kills it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VOCAB_SIZE = 32_000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--context-length",
        type=int,
        default=None,
        help="refuse, as SGLang does, a generate whose prompt and new tokens exceed it",
    )
    parser.add_argument(
        "--standin-boot-s",
        type=float,
        default=0.0,
        help="answer /health with 503 for this long, as SGLang does while it warms up",
    )
    parser.add_argument(
        "--standin-exit-on-boot",
        type=int,
        default=None,
        help="log a fatal error and exit with this code instead of serving",
    )
    parser.add_argument(
        "--standin-die-after",
        type=int,
        default=None,
        help="crash, without answering, on the generate after this many",
    )
    parser.add_argument("--standin-exit-code", type=int, default=1, help="the code of a crash")
    parser.add_argument(
        "--standin-children",
        type=int,
        default=0,
        help="child processes to start, as SGLang forks its scheduler and detokenizer",
    )
    parser.add_argument(
        "--standin-ignore-sigterm", action="store_true", help="keep running on SIGTERM"
    )
    args, _ = parser.parse_known_args(argv)

    if args.standin_ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.standin_exit_on_boot is not None:
        crash(args.standin_exit_on_boot, "torch.OutOfMemoryError: CUDA out of memory (stand-in)")
    children = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        for _ in range(args.standin_children)
    ]
    state = State(args, sys.argv[1:] if argv is None else argv, [c.pid for c in children])
    server = ThreadingHTTPServer((args.host, args.port), handler(state))
    print(f"stand-in SGLang serving on {args.host}:{args.port}", file=sys.stderr, flush=True)
    server.serve_forever()


class State:
    def __init__(self, args: argparse.Namespace, argv: list[str], children: list[int]) -> None:
        self.args = args
        self.argv = argv
        self.children = children
        self.ready_at = time.monotonic() + args.standin_boot_s
        self.lock = threading.Lock()
        self.generates = 0
        self.released = False

    def info(self) -> dict[str, Any]:
        with self.lock:
            return {
                "pid": os.getpid(),
                "children": self.children,
                "argv": self.argv,
                "generates": self.generates,
                "released": self.released,
            }


def crash(code: int, message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    os._exit(code)


def handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path in ("/health", "/health_generate"):
                booting = time.monotonic() < state.ready_at
                self.reply(HTTPStatus.SERVICE_UNAVAILABLE if booting else HTTPStatus.OK, None)
            elif self.path == "/server_info":
                self.reply(HTTPStatus.OK, state.info())
            elif self.path in ("/release_memory_occupation", "/resume_memory_occupation"):
                self.do_POST()
            else:
                self.reply(HTTPStatus.NOT_FOUND, {"detail": "Not Found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/generate":
                self.generate(body)
            elif self.path == "/release_memory_occupation":
                with state.lock:
                    state.released = True
                self.reply(HTTPStatus.OK, None)
            elif self.path == "/resume_memory_occupation":
                with state.lock:
                    if not state.released:
                        crash(state.args.standin_exit_code, "KeyError: 'weights' (stand-in)")
                    state.released = False
                self.reply(HTTPStatus.OK, None)
            else:
                self.reply(HTTPStatus.NOT_FOUND, {"detail": "Not Found"})

        def generate(self, body: dict[str, Any]) -> None:
            text = body.get("text")
            count = (body.get("sampling_params") or {}).get("max_new_tokens", 128)
            if not isinstance(text, str) or not isinstance(count, int) or count < 0:
                self.reply(
                    HTTPStatus.BAD_REQUEST, {"error": {"message": "text and max_new_tokens"}}
                )
                return
            # One token a word: a stand-in tokenizer.
            total = len(text.split()) + count
            if state.args.context_length is not None and total > state.args.context_length:
                self.reply(
                    HTTPStatus.BAD_REQUEST,
                    {
                        "error": {
                            "message": "Requested token count exceeds the model's maximum "
                            f"context length of {state.args.context_length} tokens. You "
                            f"requested a total of {total} tokens."
                        }
                    },
                )
                return
            with state.lock:
                if state.released:
                    crash(
                        state.args.standin_exit_code,
                        "CUDA error: an illegal memory access was encountered (stand-in)",
                    )
                if state.args.standin_die_after == state.generates:
                    crash(state.args.standin_exit_code, "scheduler died (stand-in)")
                state.generates += 1
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
            ids = [(seed + i) % VOCAB_SIZE for i in range(count)]
            self.reply(
                HTTPStatus.OK,
                {
                    "text": " ".join(map(str, ids)),
                    "output_ids": ids,
                    "meta_info": {"completion_tokens": count, "finish_reason": {"type": "length"}},
                },
            )

        def reply(self, status: HTTPStatus, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


if __name__ == "__main__":
    main()
