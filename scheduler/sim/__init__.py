"""A deterministic discrete-event simulator that replays a workload trace through the
very same `scheduler.policy.decide` the scheduler runs, and through baselines, against
models of the in-house fleet and of Modal (`spillway simulate`).

- `trace`: the CSV trace (`load_trace`, `parse_trace` -> `TraceJob`s);
- `config`: the TOML fleet and policy model (`load_config`, `parse_config` ->
  `SimConfig`), every key optional and documented there;
- `fleets`: the in-house fleet, Modal's containers and queue (`ContainerFleet`: boots
  and restores drawn from distributions, GPU scarcity, the policy's autoscaler settings,
  billed by `scheduler.policy.meter`) and the warm, busy-billed lower bound
  (`WarmFleet`);
- `draws`: the seeded random draws (`SimConfig.seed`), one stream per container and job;
- `policies`: `spillway`, `hysteresis`, `always-spill`, `inhouse-only`, `bound`, `oracle`, each
  a function with `decide`'s signature (`POLICIES`, `get_policy`);
- `engine`: `simulate(trace, config, policy) -> RunResult` (per-job records, mode
  changes, time series with ready and starting containers apart, Modal container time
  and cost);
- `report`: `summarize(result)` and its JSON-lines and table forms;
- `plot`: `plot_runs(results, path)`, the runs over time as a PNG (`--plot`; needs
  matplotlib, the `sim` extra, imported only then).
"""

from scheduler.sim.config import (
    InhouseModel,
    ModalModel,
    SimConfig,
    SimConfigError,
    load_config,
    parse_config,
)
from scheduler.sim.engine import JobResult, Outcome, Pool, RunResult, Sample, simulate
from scheduler.sim.policies import POLICIES, POLICY_NAMES, SimPolicy, get_policy
from scheduler.sim.report import summarize, to_json_lines, to_table
from scheduler.sim.trace import TraceError, TraceJob, load_trace, parse_trace

__all__ = [
    "POLICIES",
    "POLICY_NAMES",
    "InhouseModel",
    "JobResult",
    "ModalModel",
    "Outcome",
    "Pool",
    "RunResult",
    "Sample",
    "SimConfig",
    "SimConfigError",
    "SimPolicy",
    "TraceError",
    "TraceJob",
    "get_policy",
    "load_config",
    "load_trace",
    "parse_config",
    "parse_trace",
    "simulate",
    "summarize",
    "to_json_lines",
    "to_table",
]
