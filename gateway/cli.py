"""``python -m gateway`` / ``spillway gateway``: serve the gateway with uvicorn.

Settings come from the environment (see `gateway.config`); the command line only says
where to listen. Traces follow the standard ``OTEL_*`` variables and logs are JSON lines
on stderr (see `renderer.telemetry`), uvicorn's own included.
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from gateway.app import create_app
from gateway.config import GatewayConfig
from renderer.telemetry import setup_logging, setup_tracing

SERVICE_NAME = "spillway-gateway"
"""The traces' service name, unless OTEL_SERVICE_NAME says otherwise."""


def main(argv: list[str] | None = None, *, epilog: str | None = None) -> int:
    """`epilog`: more help, such as the settings list that `spillway gateway` adds."""
    parser = argparse.ArgumentParser(
        prog="spillway gateway",
        description="Serve the REST gateway to the scheduler.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    args = parser.parse_args(argv)
    try:
        config = GatewayConfig.from_env()
        setup_logging(logging.INFO)
        shutdown_tracing = setup_tracing(SERVICE_NAME)
    # A ConfigError, or a bad OTEL_TRACES_EXPORTER, SPILLWAY_LOG_FORMAT or SPILLWAY_LOG_LEVEL.
    except ValueError as exc:
        print(f"spillway gateway: {exc}", file=sys.stderr)
        return 2
    try:
        # log_config=None: uvicorn's records go through the root logger set up above.
        uvicorn.run(
            create_app(config),
            host=args.host,
            port=args.port,
            lifespan="on",
            log_config=None,
            access_log=config.access_log,
        )
    finally:
        shutdown_tracing()
    return 0
