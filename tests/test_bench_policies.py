"""tools/bench_policies.py and the sample config it runs by default: ratios to `bound`,
`--set` overrides, and a config whose [policy] is the shipped defaults."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from scheduler.policy import PolicyConfig
from scheduler.sim import SimConfig, load_config

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT / "tests" / "data" / "traces"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_policies", ROOT / "tools" / "bench_policies.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_sample_config_models_the_fleets_and_keeps_the_policy_defaults(
    bench: ModuleType,
) -> None:
    config = load_config(TRACES / "sim.toml")
    assert bench.SAMPLE_CONFIG == TRACES / "sim.toml"
    assert [p.name for p in bench.SAMPLE_TRACES] == [
        "steady.csv",
        "flash_crowd.csv",
        "scheduled_peaks.csv",
        "slow_ramp.csv",
    ]
    assert config.inhouse.slots == 8 and config.modal.max_containers == 32
    # The benchmark measures the policy as shipped: only the fleet fields differ.
    assert config.policy == SimConfig.of(modal=config.modal, policy=PolicyConfig()).policy


def test_json_rows_carry_ratios_to_bound(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--json", str(TRACES / "burst_12.csv"), str(TRACES / "cold_starts.csv")]
    assert bench.main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["trace"], r["policy"]) for r in rows[:5]] == [
        ("burst_12", p) for p in ("spillway", "hysteresis", "always-spill", "inhouse-only", "bound")
    ]
    assert len(rows) == 10
    for row in rows:
        if row["policy"] == "bound":
            assert row["p99_vs_bound"] == 1.0
        if row["policy"] == "inhouse-only":
            assert row["modal_usd"] == 0 and row["usd_vs_bound"] in (0.0, 1.0)
        assert row["failed"] == 0 and row["completed"] == row["jobs"]


def test_the_table_and_a_set_override(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """A table per trace and the verdict; `--set` changes one key (twelve in-house slots
    take all twelve 60 s jobs at once)."""
    trace = str(TRACES / "burst_12.csv")
    assert bench.main([trace]) == 0
    default = capsys.readouterr().out
    assert default.startswith("== burst_12 (12 jobs)\npolicy")
    assert "p99/bound" in default and "spillway vs hysteresis:" in default
    assert default.rstrip().endswith("of 1 traces")
    overrides = ["--set", "inhouse.slots=12", "--set", 'start_utc="01:00"']
    assert bench.main([*overrides, trace]) == 0
    lines = capsys.readouterr().out.splitlines()
    inhouse = next(line for line in lines if line.startswith("inhouse-only")).split()
    assert inhouse[4] == "60.0"  # twelve slots: nobody waits


def test_bad_inputs_exit_2_naming_them(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = str(TRACES / "one_job.csv")
    assert bench.main(["--set", "nope", trace]) == 2
    assert "--set 'nope': expected TABLE.KEY=VALUE" in capsys.readouterr().err
    assert bench.main(["--set", "policy.nope=1", trace]) == 2
    assert "unknown key(s) in [policy]: nope" in capsys.readouterr().err
    assert bench.main([str(TRACES / "none.csv")]) == 2
    assert "none.csv" in capsys.readouterr().err
