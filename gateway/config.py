"""The gateway's configuration: read once at startup from an environment mapping.

Every setting is one environment variable, named by a constant below. A value that does
not parse stops startup with a `ConfigError` naming the variable and the value: a typo
must never fall back to a default silently.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

SCHEDULER_ADDR = "SPILLWAY_SCHEDULER_ADDR"
"""The Scheduler's gRPC target: ``host:port`` (default ``127.0.0.1:50051``), or a
``dns:``, ``ipv4:``, ``ipv6:`` or ``unix:`` target as gRPC names them."""

CONTENT_MODE = "SPILLWAY_CONTENT_MODE"
"""How ``GET /v1/videos/{id}/content`` serves the MP4: ``redirect`` (default) answers a
redirect to the presigned URL; ``proxy`` streams the bytes through the gateway."""

MAX_BODY_BYTES = "SPILLWAY_GATEWAY_MAX_BODY_BYTES"
"""Largest request body the gateway reads, in bytes (default 1048576)."""

POLL_AFTER_MS = "SPILLWAY_POLL_AFTER_MS"
"""The ``openai-poll-after-ms`` hint sent with a queued or running video when the
scheduler sends no estimate of its own (default 1000)."""

TIMEOUT_S = "SPILLWAY_GATEWAY_TIMEOUT_S"
"""Deadline of each unary call to the scheduler, in seconds (default 10)."""

MODELS = "SPILLWAY_MODELS"
"""Comma-separated models that ``GET /v1/models`` lists, the first the default (default
``sora-2,sora-2-pro``): the scheduler's variable of the same name, read here too."""

ACCESS_LOG = "SPILLWAY_ACCESS_LOG"
"""1 logs a line per request (default 0: requests are counted and timed on ``/metrics``
and traced; a log line each costs more than the rest of a small request's handling)."""

_T = TypeVar("_T")
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")


class ConfigError(ValueError):
    """An environment variable holds a value the gateway cannot use."""


class ContentMode(StrEnum):
    REDIRECT = "redirect"
    PROXY = "proxy"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything the gateway reads from its environment; see the constants above."""

    scheduler_addr: str = "127.0.0.1:50051"
    content_mode: ContentMode = ContentMode.REDIRECT
    max_body_bytes: int = 1_048_576
    poll_after_ms: int = 1000
    timeout_s: float = 10.0
    models: tuple[str, ...] = ("sora-2", "sora-2-pro")
    access_log: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> GatewayConfig:
        """Build the config from `environ`; unset variables keep their defaults."""
        defaults = cls()
        return cls(
            scheduler_addr=_read(environ, SCHEDULER_ADDR, _address, defaults.scheduler_addr),
            content_mode=_read(environ, CONTENT_MODE, ContentMode, defaults.content_mode),
            max_body_bytes=_read(environ, MAX_BODY_BYTES, _positive_int, defaults.max_body_bytes),
            poll_after_ms=_read(environ, POLL_AFTER_MS, _positive_int, defaults.poll_after_ms),
            timeout_s=_read(environ, TIMEOUT_S, _positive_seconds, defaults.timeout_s),
            models=_read(environ, MODELS, _models, defaults.models),
            access_log=_read(environ, ACCESS_LOG, _flag, defaults.access_log),
        )


def _read(environ: Mapping[str, str], key: str, parse: Callable[[str], _T], default: _T) -> _T:
    value = environ.get(key)
    if value is None:
        return default
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigError(f"{key}={value!r} is invalid: {exc}") from None


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    has_port = bool(sep and host and port.isascii() and port.isdecimal())
    # gRPC would read a bare "host" as port 443, which is never what was meant here.
    if any(c.isspace() for c in value) or not (has_port or value.startswith(_SCHEMES)):
        raise ValueError("expected host:port or a gRPC target such as unix:/path")
    return value


def _positive_int(value: str) -> int:
    if not (value.isascii() and value.isdecimal()) or int(value) == 0:
        raise ValueError("expected a positive integer")
    return int(value)


def _positive_seconds(value: str) -> float:
    seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError("expected a positive number of seconds")
    return seconds


def _models(value: str) -> tuple[str, ...]:
    models = tuple(m.strip() for m in value.split(","))
    if not all(models):
        raise ValueError("expected comma-separated model names")
    return models


def _flag(value: str) -> bool:
    if value not in ("0", "1"):
        raise ValueError("expected 0 or 1")
    return value == "1"
