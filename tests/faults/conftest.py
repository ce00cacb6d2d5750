"""The fault suite's fixture: a fresh fleet of real processes per test, killed (by PID)
afterwards, whose logs are attached to the report of a test that fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest

from tests.conftest import S3Server
from tests.faults.harness import Fleet

_FLEET = pytest.StashKey[Fleet]()


@pytest.fixture
async def fleet(
    request: pytest.FixtureRequest, tmp_path: Path, s3: S3Server
) -> AsyncIterator[Fleet]:
    """Redis (AOF) and S3 behind a proxy, started; renderers and replicas are the test's.
    Parametrize indirectly with {"s3_throttle_bps": N} to slow uploads."""
    fleet = Fleet(tmp_path, s3, **getattr(request, "param", {}))
    request.node.stash[_FLEET] = fleet
    try:
        await fleet.start()
        yield fleet
    finally:
        fleet.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    fleet = item.stash.get(_FLEET, None)
    if fleet is not None and report.failed and report.when != "teardown":
        report.sections.append(("fault suite: process logs", fleet.logs()))
    return report
