"""`spillway scheduler --help` lists every variable the scheduler reads, each explained."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from scheduler.config import SchedulerConfig
from scheduler.settings_doc import settings


class _Recording(Mapping[str, str]):
    """An environment that remembers every variable asked for."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def test_help_lists_every_variable_the_config_reads() -> None:
    env = _Recording({"SPILLWAY_API_KEYS": "sk-test-key=acme"})
    SchedulerConfig.from_env(env)
    listed = dict(settings())
    assert {"REDIS_URL", "SPILLWAY_LEASE_S", "SPILLWAY_HIGH_WATERMARK"} <= env.asked
    assert env.asked - set(listed) == set()
    assert [name for name, doc in listed.items() if not doc] == []


def test_the_readme_table_names_every_setting() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert [name for name, _ in settings() if f"`{name}`" not in readme] == []


def test_scheduler_help_prints_them() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scheduler", "scheduler", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for name in ("REDIS_URL", "SPILLWAY_API_KEYS", "SPILLWAY_HIGH_WATERMARK"):
        assert f"\n  {name}\n" in result.stdout


def test_gateway_help_lists_its_settings_and_the_readme_names_them() -> None:
    from gateway import config as gateway_config

    result = subprocess.run(
        [sys.executable, "-m", "scheduler", "gateway", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    names = [name for name, _ in settings((gateway_config,))]
    assert "SPILLWAY_SCHEDULER_ADDR" in names
    assert [n for n in names if f"\n  {n}\n" not in result.stdout] == []
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert [n for n in names if f"`{n}`" not in readme] == []
