"""The capacity arithmetic of `spillway plan`, on numbers worked out by hand."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scheduler.policy.capacity import PlanInputs, plan_capacity


def test_budget_buys_the_containers_a_worst_month_can_pay_for() -> None:
    """$1/s GPUs, 1 h of bursts in 2 bursts with 100 s boot and 200 s idle each: one
    container costs 3600 + 600 = $4200 a month, so $10000 buys 2 containers."""
    result = plan_capacity(
        PlanInputs(
            budget_usd_month=10_000,
            gpu_usd_per_s=1.0,
            concurrency=2,
            render_s=60,
            burst_hours_month=1,
            bursts_month=2,
            cold_start_s=100,
            scaledown_window_s=200,
        )
    )
    assert result.container_usd_month == 4200
    assert result.max_containers == 2 and result.worst_month_usd == 8400
    assert result.usd_per_job == 30  # 60 s of a $1/s GPU shared by 2 inputs
    assert result.jobs_per_hour == 2 * 2 * 3600 / 60
    assert result.overhead_share == pytest.approx(600 / 4200)


def test_defaults_for_an_h100_fleet() -> None:
    """At the defaults ($0.001097/s, 60 h of bursts in 30, 30 s boots, 300 s idle), the
    issue's $100000 a month buys 403 containers; each costs about $248 a month."""
    result = plan_capacity(PlanInputs(budget_usd_month=100_000))
    assert result.container_usd_month == pytest.approx((216_000 + 9_900) * 0.001097)
    assert result.max_containers == 403
    assert result.worst_month_usd <= 100_000


@pytest.mark.parametrize(
    ("field", "value"),
    [("budget_usd_month", 0), ("render_s", -1), ("gpu_usd_per_s", float("nan"))],
)
def test_bad_inputs_are_refused_by_name(field: str, value: float) -> None:
    """A nonsensical input raises an error that names it."""
    with pytest.raises(ValueError, match=field):
        PlanInputs(**{"budget_usd_month": 1000, field: value})  # type: ignore[arg-type]


def test_cli_prints_the_plan_as_json_and_refuses_a_zero_budget() -> None:
    """`spillway plan --json` prints the inputs and the answer; a zero budget exits 2
    naming the input."""
    command = [sys.executable, "-m", "scheduler", "plan"]
    done = subprocess.run(
        [*command, "--budget-usd-month", "1000000", "--gpu-usd-per-s", "1", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    plan = json.loads(done.stdout)
    assert plan["max_containers"] == 4  # each container: (216000 + 30 x 330) s at $1/s
    assert plan["budget_usd_month"] == 1_000_000
    refused = subprocess.run(
        [*command, "--budget-usd-month", "0"], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2 and "budget_usd_month" in refused.stderr
