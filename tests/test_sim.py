"""The simulator on traces small enough to work out by hand: one job, a known wait, cold
starts and the snapshot, billing, the caps, the queue bound and timeout, and the real
policy's dwell and spill rules. Plus input errors and the command's output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scheduler.api import validation
from scheduler.cli import main as cli
from scheduler.policy import Mode, PolicyConfig, Reason, decide
from scheduler.sim import (
    POLICY_NAMES,
    InhouseModel,
    JobResult,
    ModalModel,
    Outcome,
    Pool,
    RunResult,
    SimConfig,
    SimConfigError,
    TraceError,
    get_policy,
    load_trace,
    parse_config,
    parse_trace,
    simulate,
    summarize,
    trace,
)

TRACES = Path(__file__).parent / "data" / "traces"


def config(slots: int = 2, policy: dict[str, Any] | None = None, **modal: Any) -> SimConfig:
    """A fleet with round numbers: 30 s boots, 5 s restores after 2 boots, no buffer, a
    60 s scaledown window, one cent a GPU-second."""
    model: dict[str, Any] = {
        "cold_start_ms": 30_000,
        "cold_start_snapshot_ms": 5_000,
        "snapshot_after": 2,
        "buffer_containers": 0,
        "scaledown_window_s": 60,
        "gpu_usd_per_s": 0.01,
    }
    model.update(modal)
    return SimConfig.of(InhouseModel(slots), ModalModel(**model), PolicyConfig(**(policy or {})))


def run(name: str, cfg: SimConfig, policy: str) -> RunResult:
    return simulate(load_trace(TRACES / name), cfg, policy)


def latencies_s(result: RunResult) -> list[float | None]:
    return [None if j.latency_ms is None else j.latency_ms / 1000 for j in result.jobs]


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_one_job_on_an_idle_inhouse_fleet_finishes_at_arrival_plus_render(policy: str) -> None:
    """A job arriving at 5 s with a 42 s render and a free slot renders in-house at once
    and completes at 47 s, whatever the policy."""
    result = run("one_job.csv", config(), policy)
    assert result.jobs == (
        JobResult(
            index=0,
            arrival_ms=5_000,
            priority=0,
            outcome=Outcome.COMPLETED,
            pool=Pool.INHOUSE,
            dispatch_ms=5_000,
            start_ms=5_000,
            finish_ms=47_000,
            cold=False,
        ),
    )
    assert result.modal_gpu_ms == 0 and result.transitions == ()


def test_a_third_job_waits_for_one_of_two_slots() -> None:
    """Two slots and three 10 s jobs at once, never spilling: the third starts when the
    first two finish, at 10 s, and completes at 20 s."""
    result = run("three_at_once.csv", config(slots=2), "inhouse-only")
    assert latencies_s(result) == [10, 10, 20]
    assert result.jobs[2].dispatch_ms == 10_000


def test_higher_priority_jumps_the_line_and_equal_priority_is_first_in_first_out() -> None:
    """With one slot busy until 10 s, the priority-5 job that arrived at 2 s goes before
    the priority-0 job that arrived at 1 s."""
    result = run("priorities.csv", config(slots=1), "inhouse-only")
    assert [j.dispatch_ms for j in result.jobs] == [0, 20_000, 10_000]


def test_cold_starts_warm_reuse_and_the_switch_to_snapshot_restores() -> None:
    """No in-house slots, always spilling: the two jobs at 0 s each boot a container (30 s,
    the first two boots are full) and finish at 40 s; the job at 50 s finds an idle one
    within its 60 s scaledown window and is warm; by 200 s both have stopped, so that
    job boots a third container, which restores the snapshot (5 s)."""
    result = run("cold_starts.csv", config(slots=0), "always-spill")
    assert latencies_s(result) == [40, 40, 10, 15]
    assert [j.cold for j in result.jobs] == [True, True, False, True]
    assert [j.start_ms for j in result.jobs] == [30_000, 30_000, 50_000, 205_000]
    assert all(j.pool is Pool.MODAL for j in result.jobs)
    assert result.cold_starts == 3


def test_containers_bill_boot_busy_and_idle_time_and_the_bound_only_busy_time() -> None:
    """Same trace at $0.01/s: container A lives 0-120 s (idle from 60 s after the warm job),
    B 0-100 s (idle from 40 s), C 200-275 s: 295 GPU-s, $2.95. The lower bound pays
    only the four 10 s renders: 40 GPU-s, $0.40, with no job waiting for a boot."""
    spill = run("cold_starts.csv", config(slots=0), "always-spill")
    bound = run("cold_starts.csv", config(slots=0), "bound")
    assert summarize(spill)["modal_gpu_s"] == 295.0
    assert summarize(spill)["modal_usd"] == 2.95
    assert summarize(bound)["modal_gpu_s"] == 40.0
    assert summarize(bound)["modal_usd"] == 0.4
    assert latencies_s(bound) == [10, 10, 10, 10]
    assert spill.end_ms == 275_000


def test_max_containers_is_never_exceeded() -> None:
    """Three 10 s jobs at once on at most 2 containers: two boot and finish at 40 s; the
    third waits in the queue, then takes a warm container at 40 s and finishes at 50 s."""
    result = run("three_at_once.csv", config(slots=0, max_containers=2), "always-spill")
    assert latencies_s(result) == [40, 40, 50]
    assert result.jobs[2].dispatch_ms == 40_000 and not result.jobs[2].cold
    assert max(s.containers for s in result.series) == 2
    assert result.cold_starts == 2


def test_buffer_containers_boot_an_idle_spare_while_inputs_run() -> None:
    """With one buffer container, the first spilled job boots two containers, its own
    and an idle spare; the job at 35 s takes the spare warm, and with two busy the
    fleet boots a third spare."""
    trace_ = parse_trace("arrival_s,render_s\n0,10\n35,10\n")
    result = simulate(trace_, config(slots=0, buffer_containers=1), "always-spill")
    assert latencies_s(result) == [40, 10]
    assert [j.cold for j in result.jobs] == [True, False]
    assert result.cold_starts == 3


def test_the_queue_bound_refuses_arrivals_as_shed() -> None:
    """One busy slot and a bound of 2 queued: the fourth and fifth arrivals are refused."""
    trace_ = parse_trace("arrival_s,render_s\n0,100\n1,10\n2,10\n3,10\n4,10\n")
    for policy in POLICY_NAMES:
        result = simulate(trace_, config(slots=1, policy={"max_queued": 2}), policy)
        if policy in ("always-spill", "bound", "oracle"):
            continue  # Modal takes them, so the queue never fills
        assert [j.outcome for j in result.jobs] == [Outcome.COMPLETED] * 3 + [Outcome.SHED] * 2
        assert summarize(result)["shed"] == 2


def test_the_queue_timeout_fails_a_waiting_job_under_the_engines_rule() -> None:
    """One slot busy for 100 s and a 30 s queue timeout: the job that arrived at 10 s
    never spills and fails at 40 s."""
    trace_ = parse_trace("arrival_s,render_s\n0,100\n10,10\n")
    result = simulate(trace_, config(slots=1, policy={"queue_timeout_ms": 30_000}), "inhouse-only")
    assert [j.outcome for j in result.jobs] == [Outcome.COMPLETED, Outcome.TIMED_OUT]
    assert result.jobs[1].finish_ms == 40_000
    assert summarize(result)["timed_out"] == 1


def test_spillway_rescues_one_timed_out_job_on_modal_and_sheds_the_one_it_cannot() -> None:
    """One busy slot, one Modal container, a 30 s timeout: at 30 s the policy sends one of
    the two overdue jobs to Modal (timeout_rescue) and sheds the other (Modal full)."""
    trace_ = parse_trace("arrival_s,render_s\n0,100\n0,100\n0,100\n")
    cfg = config(slots=1, max_containers=1, policy={"queue_timeout_ms": 30_000})
    result = simulate(trace_, cfg, "spillway")
    assert [j.outcome for j in result.jobs] == [
        Outcome.COMPLETED,
        Outcome.COMPLETED,
        Outcome.TIMED_OUT,
    ]
    rescued = result.jobs[1]
    assert rescued.pool is Pool.MODAL and rescued.dispatch_ms == 30_000 and rescued.cold
    assert result.jobs[2].finish_ms == 30_000


def test_spillway_runs_the_real_policy_through_a_burst() -> None:
    """Twelve 60 s jobs at once on 2 slots (watermarks 4/1, enter dwell 2 s, exit dwell
    10 s, spill wait 30 s): the real `decide` waits out the enter dwell and at 2 s spills
    the 9 jobs Modal finishes sooner (30 s cold start + 60 s beats the 90 s or more the
    in-house line would take them) and keeps the next in line, job 11. The in-house queue
    is then at the low watermark: back to normal at 12 s. Job 11 has waited 30 s at
    30 s: spill mode again at 32 s (Modal, all booting, would be no sooner for it), and
    normal at 70 s, 10 s after it went in-house. The containers bill their boot, render
    and a 10 s drain window: 9 x 100 s."""
    assert get_policy("spillway").decide is decide
    policy = {
        "high_watermark": 4,
        "low_watermark": 1,
        "enter_dwell_ms": 2_000,
        "exit_dwell_ms": 10_000,
        "min_mode_ms": 10_000,
        "spill_wait_ms": 30_000,
        "drain_scaledown_window_s": 10,
        "max_spill_per_decision": 100,
    }
    cfg = config(slots=2, policy=policy, snapshot_after=100)
    result = run("burst_12.csv", cfg, "spillway")
    spilled = [j for j in result.jobs if j.pool is Pool.MODAL]
    assert [j.index for j in spilled] == list(range(2, 11))
    assert {j.dispatch_ms for j in spilled} == {2_000}
    assert {j.latency_ms for j in spilled} == {92_000}
    assert result.jobs[11].dispatch_ms == 60_000
    assert [(t.at_ms, t.new, t.reason) for t in result.transitions] == [
        (2_000, Mode.SPILL, Reason.DEPTH_ABOVE_HIGH),
        (12_000, Mode.NORMAL, Reason.DEPTH_BELOW_LOW),
        (32_000, Mode.SPILL, Reason.WAIT_ABOVE_MAX),
        (70_000, Mode.NORMAL, Reason.DEPTH_BELOW_LOW),
    ]
    modes = [(s.t_ms, s.mode) for s in result.series]
    assert (2_000, Mode.SPILL) in modes and (70_000, Mode.NORMAL) in modes
    summary = summarize(result)
    assert summary["spilled"] == 9 and summary["mode_changes"] == 4
    assert summary["completed"] == 12 and summary["latency_s"]["max"] == 120.0
    assert summary["modal_gpu_s"] == 900.0


def test_plain_hysteresis_spills_at_once_and_flips_straight_back() -> None:
    """The baseline has no dwell: at 0 s the in-house queue of 10 reaches the high
    watermark, everything waiting goes to Modal, the queue is empty, and it leaves spill
    mode in the same instant."""
    cfg = config(slots=2, policy={"high_watermark": 4, "low_watermark": 1})
    result = run("burst_12.csv", cfg, "hysteresis")
    assert summarize(result)["spilled"] == 10
    assert [(t.at_ms, t.new) for t in result.transitions] == [(0, Mode.SPILL), (0, Mode.NORMAL)]


def test_a_prewarm_window_boots_containers_only_when_the_clock_lines_up() -> None:
    """A window 08:00-08:10 keeps one container warm: a run starting at 08:00 boots it at
    once (billed its 30 s boot and, once the trace is over at 5 s, the 10 s drain
    window), one starting at 07:00 does not."""
    toml = """
        start_utc = "{start}"
        [inhouse]
        slots = 1
        [modal]
        cold_start_s = 30
        scaledown_window_s = 60
        [policy]
        prewarm_windows = ["08:00-08:10=1"]
    """
    trace_ = parse_trace("arrival_s,render_s\n0,5\n")
    at_eight = simulate(trace_, parse_config(toml.format(start="08:00")), "spillway")
    at_seven = simulate(trace_, parse_config(toml.format(start="07:00")), "spillway")
    assert at_eight.modal_gpu_ms == 40_000 and at_eight.cold_starts == 1
    assert at_seven.modal_gpu_ms == 0 and at_seven.cold_starts == 0


def test_the_same_trace_and_config_give_the_same_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    """Two runs of the command over a sample trace print identical output."""
    outputs = []
    for _ in range(2):
        assert cli.main(["simulate", "--trace", str(TRACES / "steady.csv"), "--json"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == len(POLICY_NAMES)


def test_the_command_prints_one_json_object_per_policy_in_order(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`--json` prints each policy's summary on its own line with the documented keys;
    `--policy` picks and orders them."""
    cfg = tmp_path / "sim.toml"
    cfg.write_text("[inhouse]\nslots = 2\n")
    argv = ["simulate", "--trace", str(TRACES / "three_at_once.csv"), "--config", str(cfg)]
    assert cli.main([*argv, "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["policy"] for r in rows] == list(POLICY_NAMES)
    assert set(rows[0]) == {
        "policy",
        "jobs",
        "completed",
        "shed",
        "timed_out",
        "spilled",
        "latency_s",
        "modal_gpu_s",
        "modal_usd",
        "mode_changes",
    }
    assert set(rows[0]["latency_s"]) == {"p50", "p95", "p99", "max"}
    assert rows[3] == {
        "policy": "inhouse-only",
        "jobs": 3,
        "completed": 3,
        "shed": 0,
        "timed_out": 0,
        "spilled": 0,
        "latency_s": {"p50": 10.0, "p95": 20.0, "p99": 20.0, "max": 20.0},
        "modal_gpu_s": 0.0,
        "modal_usd": 0.0,
        "mode_changes": 0,
    }
    assert cli.main([*argv, "--policy", "bound", "--policy", "spillway"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[0] == "policy"
    assert [line.split()[0] for line in table[1:]] == ["bound", "spillway"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("arrival_s,render_s\n0,10\n1,ten\n", "line 3: render_s='ten': not a number"),
        ("arrival_s,render_s\n-1,10\n", "line 2: arrival_s='-1': must be 0 or more"),
        ("arrival_s,render_s\n0,0\n", "line 2: render_s='0': must be more than 0"),
        ("arrival_s,render_s,priority\n0,1,10\n", "line 2: priority='10': must be 0 to 9"),
        ("arrival_s,render_s\n0,1,2\n", "line 2: expected 2 fields"),
        ("arrival_s,duration_s\n0,1\n", "line 1: header missing column(s) render_s"),
        ("arrival_s,render_s,tenant\n0,1,a\n", "unknown column(s) tenant"),
        ("arrival_s,render_s\n", "no jobs"),
        ("", "empty"),
    ],
)
def test_trace_errors_name_the_line_and_field(text: str, expected: str) -> None:
    """A bad row, value or header is refused with the line and the field named."""
    with pytest.raises(TraceError, match=r"^t\.csv: ") as info:
        parse_trace(text, name="t.csv")
    assert expected in str(info.value)


def test_a_trace_out_of_order_is_sorted_stably_by_arrival() -> None:
    """Rows need not be sorted; equal arrivals keep the file's order."""
    jobs = parse_trace("arrival_s,render_s\n5,1\n0,2\n5,3\n0.001,4\n")
    assert [(j.arrival_ms, j.render_ms) for j in jobs] == [
        (0, 2000),
        (1, 4000),
        (5000, 1000),
        (5000, 3000),
    ]
    assert [j.index for j in jobs] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[modal]\ncolds_start_s = 3\n", "unknown key(s) in [modal]: colds_start_s"),
        ("[gpu]\nx = 1\n", "unknown key(s) in the top level: gpu"),
        ("[inhouse]\nslots = 2.5\n", "[inhouse] slots = 2.5: expected an integer"),
        ("[modal]\nconcurrency = 0\n", "[modal] concurrency = 0: must be at least 1"),
        ("[modal]\nrender_speedup = 0\n", "[modal] render_speedup = 0: must be more than 0"),
        ('[policy]\nenter_dwell_s = "2"\n', "[policy] enter_dwell_s = '2': expected a number"),
        ('[policy]\nprewarm_windows = ["9-10=1"]\n', "[policy] prewarm_windows = '9-10=1'"),
        ("[policy]\nlow_watermark = 8\n", "[policy] need 0 <= low_watermark < high_watermark"),
        ('start_utc = "25:00"\n', "start_utc = '25:00': no such time of day"),
        ("[modal\n", "not valid TOML"),
    ],
)
def test_config_errors_name_the_key(text: str, expected: str) -> None:
    """A key the simulator does not know, or a bad value, is refused with the key named."""
    with pytest.raises(SimConfigError, match=r"^sim\.toml: ") as info:
        parse_config(text, name="sim.toml")
    assert expected in str(info.value)


def test_config_defaults_and_the_policy_plans_for_the_modal_fleet() -> None:
    """An empty file gives the documented defaults; the policy's fleet settings are the
    [modal] ones and its durations are milliseconds."""
    cfg = parse_config(
        "[modal]\nmax_containers = 3\nconcurrency = 2\n[policy]\nenter_dwell_s = 0.25\n"
    )
    assert cfg.policy.max_containers == 3 and cfg.policy.concurrency == 2
    assert cfg.policy.enter_dwell_ms == 250 and cfg.policy.modal_cap == 6
    default = parse_config("")
    assert default == SimConfig.of()
    assert default.inhouse.slots == 8 and default.modal.cold_start_ms == 60_000
    assert default.policy.high_watermark == 8 and default.start_utc_s == 0


def test_bad_inputs_make_the_command_exit_2_naming_the_problem(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A bad trace, a bad config or a missing file: exit status 2 and one line saying
    where."""
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,render_s\n0,x\n")
    assert cli.main(["simulate", "--trace", str(bad)]) == 2
    assert "bad.csv: line 2: render_s='x'" in capsys.readouterr().err
    cfg = tmp_path / "sim.toml"
    cfg.write_text("[modal]\nmax = 3\n")
    argv = ["simulate", "--trace", str(TRACES / "one_job.csv"), "--config", str(cfg)]
    assert cli.main(argv) == 2
    assert "unknown key(s) in [modal]: max" in capsys.readouterr().err
    assert cli.main(["simulate", "--trace", str(tmp_path / "none.csv")]) == 2
    assert "none.csv" in capsys.readouterr().err


def test_the_signal_is_read_as_the_scheduler_reads_it() -> None:
    """The priority range is that of `scheduler.api.validation` (the sample sizes and
    quantiles are shared through `scheduler.policy.estimates`)."""
    assert trace.MAX_PRIORITY == validation.MAX_PRIORITY
