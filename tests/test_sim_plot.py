"""`spillway simulate --plot`: a real PNG next to the unchanged table, a clear error
without matplotlib, and the latency panel's rolling p95 on numbers worked by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

from scheduler.cli import main as cli
from scheduler.sim import POLICY_NAMES, load_trace, parse_config, simulate
from scheduler.sim.cli import simulate_all
from scheduler.sim.plot import PlotError, _mode_line, _rolling_p95, plot_runs

TRACES = Path(__file__).parent / "data" / "traces"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def argv(tmp_path: Path) -> list[str]:
    """Twelve jobs at once on two in-house slots: every policy but inhouse-only spills."""
    cfg = tmp_path / "sim.toml"
    cfg.write_text("[inhouse]\nslots = 2\n[modal]\ncold_start_s = 20\n")
    return ["simulate", "--trace", str(TRACES / "burst_12.csv"), "--config", str(cfg)]


def test_plot_writes_a_png_and_prints_the_same_table(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 0
    table = capsys.readouterr().out
    out = tmp_path / "runs.png"
    assert cli.main([*argv, "--plot", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == table and captured.err == ""
    lines = table.splitlines()
    assert lines[0].split()[0] == "policy" and len(lines) == 1 + len(POLICY_NAMES)
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (1200, 1000)
        # Not a blank canvas: lines in several colours were drawn.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or ()) > 20


def test_plot_with_json_and_one_policy(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "one.png"
    assert cli.main([*argv, "--json", "--policy", "spillway", "--plot", str(out)]) == 0
    assert capsys.readouterr().out.startswith('{"completed": 12')
    assert out.read_bytes()[:8] == PNG_SIGNATURE


def test_without_matplotlib_the_error_says_to_install_the_extra(
    argv: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The table still prints; the plot fails with exit 1 and the pip command."""
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)
    out = tmp_path / "runs.png"
    assert cli.main([*argv, "--plot", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("policy")
    assert "needs matplotlib" in captured.err and "pip install 'spillway[sim]'" in captured.err
    assert not out.exists()
    results = simulate_all(load_trace(TRACES / "one_job.csv"), parse_config(""), ["bound"])
    with pytest.raises(PlotError, match=r"spillway\[sim\]"):
        plot_runs(results, out)


def test_an_unwritable_plot_path_exits_1_naming_it(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "missing" / "runs.png"
    assert cli.main([*argv, "--plot", str(out)]) == 1
    assert "runs.png" in capsys.readouterr().err


def test_rolling_p95_covers_the_trailing_window() -> None:
    """Finishes at 0, 10 and 70 s with a 60 s window: the third sees only itself."""
    finished = [(0, 5_000), (10_000, 20_000), (70_000, 1_000)]
    times, p95 = _rolling_p95(finished, 60_000)
    assert times == [0.0, 10_000 / 60_000, 70_000 / 60_000]
    assert p95 == [5.0, 20.0, 1.0]


def test_the_mode_line_comes_from_the_transitions_on_the_traces_clock() -> None:
    """Plain hysteresis spills and flips back within one instant: the line still shows
    a spike there, at minutes from the trace's start, not from midnight."""
    cfg = parse_config('start_utc = "01:00"\n[inhouse]\nslots = 2\n')
    result = simulate(load_trace(TRACES / "burst_12.csv"), cfg, "hysteresis")
    assert [t.at_ms for t in result.transitions] == [3_600_000, 3_600_000]
    end_min = result.end_ms / 60_000
    assert _mode_line(result, cfg.start_ms, end_min) == (
        [0.0, 0.0, 0.0, 0.0, 0.0, end_min],
        [0, 0, 1, 1, 0, 0],
    )
