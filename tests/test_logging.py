"""`setup_logging`: the level a process logs at, and `SPILLWAY_LOG_LEVEL` over it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from renderer.telemetry import setup_logging


@pytest.fixture(autouse=True)
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_the_process_level_applies_when_no_level_is_set(root_logger: logging.Logger) -> None:
    """Without SPILLWAY_LOG_LEVEL the root logger takes the level the process asks for."""
    setup_logging(logging.WARNING, environ={})
    assert root_logger.level == logging.WARNING


def test_log_level_setting_overrides_the_process_level(root_logger: logging.Logger) -> None:
    """SPILLWAY_LOG_LEVEL=debug (in any case) brings a server's DEBUG lines."""
    setup_logging(logging.INFO, environ={"SPILLWAY_LOG_LEVEL": "DEBUG"})
    assert root_logger.level == logging.DEBUG


def test_an_unknown_log_level_names_the_setting_and_value() -> None:
    """A misspelt level stops startup with a message naming the key and the value."""
    with pytest.raises(ValueError, match="SPILLWAY_LOG_LEVEL='verbose'"):
        setup_logging(logging.INFO, environ={"SPILLWAY_LOG_LEVEL": "verbose"})
