"""The harder Modal model, on timelines worked out by hand: Modal's own queue, the
snapshot only after full boots have finished, failed restores, GPU scarcity, the
policy's autoscaler settings as Modal applies them, ready and starting containers
apart, and which inputs are cold. Then the seeded draws: same seed, same run; another
seed, another run."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from scheduler.cli import main as cli
from scheduler.policy import Plan, PolicyConfig, PolicyState, Signal
from scheduler.sim import (
    InhouseModel,
    ModalModel,
    SimConfig,
    SimPolicy,
    parse_config,
    parse_trace,
    simulate,
    summarize,
)
from scheduler.sim.draws import Z99, Draws, Spread
from scheduler.sim.policies import always_spill
from scheduler.sim.report import nearest_rank

TRACES = Path(__file__).parent / "data" / "traces"


def fleet(**modal: Any) -> SimConfig:
    """No in-house slots; 30 s full boots, 5 s restores once one full boot has finished,
    no buffer, a 60 s scaledown window, one cent a container-second."""
    model: dict[str, Any] = {
        "cold_start_ms": 30_000,
        "cold_start_snapshot_ms": 5_000,
        "snapshot_after": 1,
        "buffer_containers": 0,
        "scaledown_window_s": 60,
        "gpu_usd_per_s": 0.01,
    }
    model.update(modal)
    return SimConfig.of(InhouseModel(0), ModalModel(**model), PolicyConfig())


def spill_with(name: str = "spill", **autoscale: int) -> SimPolicy:
    """`always-spill` asking the autoscaler for these settings."""

    def decide(state: PolicyState, signal: Signal, config: PolicyConfig, now_ms: int) -> Plan:
        plan = always_spill(state, signal, config, now_ms)
        return dataclasses.replace(plan, autoscale=dataclasses.replace(plan.autoscale, **autoscale))

    return SimPolicy(name, decide)


def jobs(*rows: tuple[float, float]) -> str:
    return "arrival_s,render_s\n" + "".join(f"{a},{r}\n" for a, r in rows)


def test_the_snapshot_is_there_only_once_a_full_boot_has_finished() -> None:
    """The job at 10 s finds the first container still in its full boot, so its own
    container boots in full too (30 s, not a 5 s restore); by 200 s both have stopped
    and the third container restores the snapshot."""
    result = simulate(parse_trace(jobs((0, 10), (10, 10), (200, 10))), fleet(), spill_with())
    assert [j.latency_ms for j in result.jobs] == [40_000, 40_000, 15_000]
    assert [j.cold for j in result.jobs] == [True, True, True]
    assert result.cold_starts == 3


@pytest.mark.parametrize(("rate", "latency_ms"), [(0.0, 15_000), (1.0, 45_000)])
def test_a_failed_restore_falls_back_to_a_full_boot(rate: float, latency_ms: int) -> None:
    """With the snapshot there from the start, a restore takes 5 s; one that fails takes
    those 5 s and then a 30 s full boot."""
    cfg = fleet(snapshot_after=0, restore_failure_rate=rate)
    result = simulate(parse_trace(jobs((0, 10))), cfg, spill_with())
    assert result.jobs[0].latency_ms == latency_ms and result.jobs[0].cold


def test_gpu_scarcity_delays_the_boot_and_is_not_billed() -> None:
    """A 20 s wait for a GPU, a 30 s boot, a 10 s render and a 60 s idle tail: the job
    takes 60 s, and the container bills 100 s (30 + 10 + 60), not the wait."""
    result = simulate(parse_trace(jobs((0, 10))), fleet(gpu_wait_ms=20_000), spill_with())
    assert result.jobs[0].latency_ms == 60_000
    assert result.modal_gpu_ms == 100_000 and result.modal_usd == pytest.approx(1.0)
    assert result.end_ms == 120_000


@pytest.mark.parametrize(("window_s", "billed_ms"), [(60, 100_000), (10, 50_000), (0, 40_000)])
def test_the_policys_scaledown_window_is_the_one_applied(window_s: int, billed_ms: int) -> None:
    """The window the plan asks for, not the deployed one, decides when an idle container
    stops: a 30 s boot and a 10 s render, then the tail."""
    policy = spill_with(scaledown_window_s=window_s)
    result = simulate(parse_trace(jobs((0, 10))), fleet(), policy)
    assert result.modal_gpu_ms == billed_ms


def test_an_input_waiting_for_a_busy_containers_slot_is_not_cold() -> None:
    """Two inputs a container, at most two containers: jobs 0 and 1 wait for the first
    boot (cold). Job 2 at 50 s finds it full, waits in Modal's queue and a second
    container starts restoring (20 s); job 0 frees a slot at 65 s first, so job 2 runs
    there, waiting 15 s but for no boot: not cold. The second container idles from
    70 s. Meanwhile the policy saw one ready and one starting container apart."""
    seen: list[tuple[int, int, int]] = []

    def decide(state: PolicyState, signal: Signal, config: PolicyConfig, now_ms: int) -> Plan:
        seen.append((now_ms, signal.modal_ready_slots, signal.modal_starting_slots))
        return always_spill(state, signal, config, now_ms)

    cfg = fleet(concurrency=2, max_containers=2, cold_start_snapshot_ms=20_000)
    trace = parse_trace(jobs((0, 35), (0, 100), (50, 10)))
    result = simulate(trace, cfg, SimPolicy("recorded", decide))
    assert [j.cold for j in result.jobs] == [True, True, False]
    assert [j.start_ms for j in result.jobs] == [30_000, 30_000, 65_000]
    assert result.jobs[2].latency_ms == 25_000
    # At 0 s the container is asked for; at 50 s, after placing job 2, a second starts.
    assert (0, 0, 0) in seen and (50_000, 2, 2) in seen and (65_000, 2, 2) in seen
    by_time = {s.t_ms: s for s in result.series}
    assert (by_time[50_000].ready_containers, by_time[50_000].starting_containers) == (1, 1)
    assert (by_time[70_000].ready_containers, by_time[70_000].starting_containers) == (2, 0)


@pytest.mark.parametrize("how", ["prewarm", "buffer"])
def test_the_first_input_of_a_prewarmed_or_buffer_container_is_not_cold(how: str) -> None:
    """A container kept warm ahead of the job (pre-warmed by min_containers, or the
    spare that buffer_containers keeps beside a busy one) serves it at once: the job at
    40 s waited for no boot. Each booted-for-it input is cold."""
    trace = parse_trace(jobs((0, 100), (40, 10)))
    policy = spill_with(min_containers=2) if how == "prewarm" else spill_with(buffer_containers=1)
    result = simulate(trace, fleet(), policy)
    assert [j.cold for j in result.jobs] == [True, False]
    assert result.jobs[1].latency_ms == 10_000


def test_the_oracle_boots_ahead_of_the_jobs_it_knows_will_come() -> None:
    """Two 10 s jobs at 100 s: `bound` runs both on Modal from 100 s, so the oracle,
    looking a 30 s boot ahead, keeps two containers from 70 s; the jobs find them warm,
    and they stop after the 10 s drain window: 2 x 50 s billed."""
    result = simulate(parse_trace(jobs((100, 10), (100, 10))), fleet(), "oracle")
    assert [j.latency_ms for j in result.jobs] == [10_000, 10_000]
    assert [j.cold for j in result.jobs] == [False, False]
    assert result.cold_starts == 2 and result.modal_gpu_ms == 100_000


# --- the seeded draws -------------------------------------------------------------------

SPREAD = """
seed = {seed}
[inhouse]
slots = 8
[modal]
max_containers = 32
cold_start_s = 60
cold_start_p99_s = 200
cold_start_snapshot_s = 15
cold_start_snapshot_p99_s = 60
restore_failure_rate = 0.05
gpu_wait_s = 2
gpu_wait_p99_s = 90
render_noise_p99 = 1.3
"""


def test_a_spread_is_a_lognormal_with_the_given_median_and_p99() -> None:
    """The median and the 99th percentile come back exactly at their quantiles, and
    10,000 seeded draws land within a few percent of them."""
    spread = Spread(20_000, 60_000)
    assert (spread.at(0.0), spread.at(Z99)) == (20_000, 60_000)
    assert Spread(7_000, 7_000).at(3.0) == 7_000 and Spread(0, 0).at(1.0) == 0
    draws = Draws(seed=3)
    ordered = sorted(spread.at(draws.container(k).full_boot_z) for k in range(10_000))
    p50, p99 = nearest_rank(ordered, 50), nearest_rank(ordered, 99)
    assert p50 is not None and p99 is not None
    assert abs(p50 - 20_000) < 600 and abs(p99 - 60_000) < 3_000
    with pytest.raises(ValueError, match="p50 <= p99"):
        Spread(10, 5)


def test_the_same_seed_gives_the_same_run_and_another_seed_another() -> None:
    """On the flash crowd with spread-out boots, GPU waits, failed restores and render
    noise, one seed gives equal runs; a second seed moves boots and renders."""
    trace = parse_trace((TRACES / "flash_crowd.csv").read_text())
    one = simulate(trace, parse_config(SPREAD.format(seed=1)), "hysteresis")
    again = simulate(trace, parse_config(SPREAD.format(seed=1)), "hysteresis")
    other = simulate(trace, parse_config(SPREAD.format(seed=2)), "hysteresis")
    assert one == again
    assert one.jobs != other.jobs and summarize(one) != summarize(other)
    # The bound boots nothing: the render noise alone moves its bill with the seed.
    bound_one = simulate(trace, parse_config(SPREAD.format(seed=1)), "bound")
    bound_other = simulate(trace, parse_config(SPREAD.format(seed=2)), "bound")
    assert bound_one.modal_gpu_ms != bound_other.modal_gpu_ms


def test_the_command_prints_the_same_bytes_for_the_same_seed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`spillway simulate` twice with one seed prints identical output; another seed
    prints other numbers."""
    outputs = []
    for seed in (5, 5, 6):
        cfg = tmp_path / f"sim{seed}.toml"
        cfg.write_text(SPREAD.format(seed=seed))
        argv = ["simulate", "--trace", str(TRACES / "flash_crowd.csv"), "--config", str(cfg)]
        assert cli.main([*argv, "--json", "--policy", "spillway"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] != outputs[2]
