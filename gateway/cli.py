"""``python -m gateway`` / ``spillway gateway``: serve the gateway with uvicorn.

Settings come from the environment (see `gateway.config`); the command line only says
where to listen.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from gateway.app import create_app
from gateway.config import ConfigError, GatewayConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="spillway gateway", description="Serve the REST gateway to the scheduler."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    args = parser.parse_args(argv)
    try:
        config = GatewayConfig.from_env()
    except ConfigError as exc:
        print(f"spillway gateway: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(config), host=args.host, port=args.port, lifespan="on")
    return 0
