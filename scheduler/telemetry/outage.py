"""One WARNING per outage, not one per failed call.

Loops that retry a dependency (Redis, S3, a fleet) report each try here: the first
failure after a success logs a WARNING naming the error, later ones log at DEBUG, and the
first success after failures logs how long the outage lasted and how many tries failed.
An error that is not what an outage raises (by default, a connection problem) is a bug,
and is always logged with its traceback.
"""

from __future__ import annotations

import logging
import time

import redis.exceptions
from botocore.exceptions import BotoCoreError

# What an unreachable or restarting dependency raises, as opposed to a defect.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    OSError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    BotoCoreError,
)


class Outage:
    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        expected: tuple[type[BaseException], ...] = CONNECTION_ERRORS,
    ) -> None:
        self._what = what
        self._log = logger
        self._expected = expected
        self._since: float | None = None
        self._failures = 0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException) -> None:
        self._failures += 1
        if not isinstance(exc, self._expected):
            self._log.error("%s failed", self._what, exc_info=exc)
        elif self._since is None:
            self._log.warning("%s failing: %s: %s", self._what, type(exc).__name__, exc)
        else:
            self._log.debug("%s still failing: %s", self._what, exc)
        if self._since is None:
            self._since = time.monotonic()

    def ok(self) -> None:
        if self._since is not None:
            self._log.warning(
                "%s recovered after %.1f s (%d failed tries)",
                self._what,
                time.monotonic() - self._since,
                self._failures,
            )
        self._since = None
        self._failures = 0
