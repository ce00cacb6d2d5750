"""The `spillway` command.

spillway dev        the whole stack on loopback, with a sample render
spillway submit     submit a render through the REST gateway, watch it, save it
spillway jobs       list, get, cancel, retry, watch or download jobs through the gateway
spillway webhooks   register, test and inspect webhook endpoints through the gateway
spillway keys       create, list or revoke API keys (operator scope, over gRPC)
spillway admin      operator controls: the spill kill switch, pause dispatch, cancel queued
spillway spillover  the spillover policy's status (mode, pools, spend), from a scheduler
spillway fleet      list, add, drain or remove in-house renderers (in Redis, at run time)
spillway simulate   replay a workload trace through the policy and baselines (no servers)
spillway plan       the largest max_containers a monthly GPU budget pays for
spillway scheduler  run one scheduler replica (configured by SPILLWAY_* variables)
spillway renderer   run an in-house renderer (same as `python -m renderer serve`)
spillway gateway    run the REST gateway (same as `python -m gateway`)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import uvloop

from renderer.telemetry import setup_logging, setup_tracing
from scheduler.api.validation import DEFAULT_SIZE, SECONDS, SIZES
from scheduler.cli import admin as admin_cli
from scheduler.cli import apikeys as apikeys_cli
from scheduler.cli import fleet as fleet_cli
from scheduler.cli import jobs as jobs_cli
from scheduler.cli import webhooks as webhooks_cli
from scheduler.config import ConfigError, SchedulerConfig
from scheduler.policy.capacity import PlanInputs
from scheduler.sim.policies import POLICY_NAMES


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # These hand their arguments to the component's own parser.
    if argv and argv[0] == "renderer":
        from renderer.cli import main as renderer_main

        return renderer_main(["serve", *argv[1:]])
    if argv and argv[0] == "gateway":
        from gateway import config as gateway_config
        from gateway.cli import main as gateway_main
        from scheduler.settings_doc import epilog

        wants_help = "-h" in argv or "--help" in argv
        return gateway_main(argv[1:], epilog=epilog((gateway_config,)) if wants_help else None)
    # Listing the settings parses the config modules' source: only for its own help.
    args = _parser(settings_help=argv[:1] == ["scheduler"]).parse_args(argv)
    try:
        # A replica logs its events by default; interactive commands only problems.
        verbose = args.verbose or args.command == "scheduler"
        setup_logging(logging.INFO if verbose else logging.WARNING)
        return int(args.run(args))
    except (ConfigError, ValueError) as exc:
        print(f"spillway: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser(*, settings_help: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spillway", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="run the whole stack locally with a sample render")
    dev.add_argument("--port", type=int, default=8000, help="gateway port (%(default)s)")
    dev.add_argument(
        "--metrics-port",
        type=int,
        default=9464,
        help="scheduler's Prometheus port (%(default)s; 0 picks a free one)",
    )
    dev.add_argument(
        "--inhouse-slots", type=int, default=2, help="in-house renderer slots (%(default)s)"
    )
    dev.add_argument(
        "--burst",
        type=int,
        default=12,
        metavar="N",
        help="after the sample, submit N jobs at once and show them spill and drain back "
        "(%(default)s; 0 skips it)",
    )
    dev.add_argument(
        "--no-demo", dest="demo", action="store_false", help="skip the sample and the burst"
    )
    dev.add_argument(
        "--once",
        action="store_true",
        help="exit after the demo: the sample, then the burst (--burst 0 for the sample alone)",
    )
    dev.add_argument(
        "--trace",
        action="store_true",
        help="print every span to stderr (or set OTEL_EXPORTER_OTLP_ENDPOINT to export)",
    )
    dev.add_argument("--prompt", default="a paper boat drifting down a rainy street")
    dev.add_argument("--seconds", type=int, choices=SECONDS, default=4)
    dev.add_argument("--size", choices=list(SIZES), default=DEFAULT_SIZE)
    dev.add_argument("-o", "--output", type=Path, default=Path("out/sample.mp4"))
    dev.set_defaults(run=_dev)

    submit = commands.add_parser("submit", help="submit a render through the REST gateway")
    submit.add_argument("prompt")
    submit.add_argument("--seconds", type=int, choices=SECONDS, default=4)
    submit.add_argument("--size", choices=list(SIZES), default=DEFAULT_SIZE)
    submit.add_argument("--model", default=None)
    submit.add_argument(
        "--deadline",
        type=int,
        metavar="SECONDS",
        help="the job is useless this long after submit: still queued then, it fails "
        "with 'expired'",
    )
    submit.add_argument(
        "--idempotency-key",
        help="the same key with the same request returns the first job, never a second",
    )
    submit.add_argument(
        "--priority",
        choices=("interactive", "batch"),
        help="the class: interactive (default) is served first; batch renders in-house "
        "on slots left free and never spills unless an operator allows it",
    )
    submit.add_argument(
        "--inhouse-only", action="store_true", help="never spill this job off the in-house fleet"
    )
    submit.add_argument("--json", action="store_true", help="print the video as JSON")
    submit.add_argument("--watch", action="store_true", help="show progress until it ends")
    submit.add_argument("-o", "--output", type=Path, help="save the MP4 here (implies --watch)")
    _add_gateway_arguments(submit)
    submit.set_defaults(run=_submit)

    jobs = commands.add_parser(
        "jobs",
        help="list, get, cancel, retry, watch or download render jobs (through the gateway)",
        description=jobs_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    jobs.add_argument("action", choices=jobs_cli.ACTIONS)
    jobs.add_argument("id", nargs="?", help="the job's id (video_...), for all but list")
    jobs.add_argument("--json", action="store_true", help="JSON instead of a table")
    jobs.add_argument("--limit", type=int, default=20, help="for list (%(default)s, max 100)")
    jobs.add_argument("--after", help="for list: the page after this id")
    jobs.add_argument("--order", choices=("desc", "asc"), default="desc", help="for list")
    jobs.add_argument("-o", "--output", type=Path, help="for download (default ID.mp4)")
    _add_gateway_arguments(jobs)
    jobs.set_defaults(run=_jobs)

    webhooks = commands.add_parser(
        "webhooks",
        help="register, test and inspect webhook endpoints (through the gateway)",
        description=webhooks_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    webhooks_cli.add_arguments(webhooks)
    _add_gateway_arguments(webhooks)
    webhooks.set_defaults(run=_webhooks)

    api_keys = commands.add_parser(
        "keys",
        help="create, list or revoke API keys (an operator key, over gRPC)",
        description=apikeys_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    apikeys_cli.add_arguments(api_keys)
    api_keys.set_defaults(run=lambda args: asyncio.run(apikeys_cli.run(args)))

    admin = commands.add_parser(
        "admin",
        help="operator controls: spill off|auto|force, dispatch pause|resume, "
        "batch inhouse|spill, cancel-queued",
        description=admin_cli.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    admin_cli.add_arguments(admin)
    admin.set_defaults(run=lambda args: asyncio.run(admin_cli.run(args)))

    spill = commands.add_parser("spillover", help="show the spillover policy's status")
    spill.add_argument("--json", action="store_true", help="one JSON object")
    apikeys_cli.add_connection_arguments(spill)
    spill.set_defaults(run=_spillover)

    fleet = commands.add_parser(
        "fleet",
        help="list, add, drain or remove in-house renderers, live",
        description="The in-house fleet lives in Redis (SPILLWAY_INHOUSE_RENDERERS only "
        "seeds it); every scheduler replica sees a change at once. drain: no new work, "
        "what runs finishes; remove: forget it, what runs finishes.",
    )
    fleet.add_argument("action", choices=fleet_cli.ACTIONS)
    fleet.add_argument("address", nargs="?", help="the renderer's host:port")
    fleet.add_argument("--slots", type=int, default=2, help="for add (%(default)s)")
    fleet.add_argument("--json", action="store_true", help="for list: one JSON array")
    fleet.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="(REDIS_URL, default %(default)s)",
    )
    fleet.set_defaults(run=_fleet)

    simulate = commands.add_parser(
        "simulate", help="replay a workload trace through the policy and baselines"
    )
    simulate.add_argument(
        "--trace", type=Path, required=True, help="CSV: arrival_s,render_s[,priority]"
    )
    simulate.add_argument(
        "--config", type=Path, help="TOML fleet and policy model (every key optional)"
    )
    simulate.add_argument(
        "--policy",
        action="append",
        choices=POLICY_NAMES,
        metavar="NAME",
        help=f"run this policy (repeatable; default all: {', '.join(POLICY_NAMES)})",
    )
    simulate.add_argument("--json", action="store_true", help="one JSON object per policy")
    simulate.add_argument(
        "--plot",
        type=Path,
        metavar="OUT.png",
        help="also draw queue depth, mode, containers and latency over time to this PNG "
        "(needs matplotlib: pip install 'spillway[sim]')",
    )
    simulate.set_defaults(run=_simulate)

    plan = commands.add_parser(
        "plan", help="the largest max_containers a monthly GPU budget pays for"
    )
    defaults = PlanInputs(budget_usd_month=1.0)
    plan.add_argument("--budget-usd-month", type=float, required=True)
    plan.add_argument("--gpu-usd-per-s", type=float, default=defaults.gpu_usd_per_s)
    plan.add_argument("--concurrency", type=int, default=defaults.concurrency)
    plan.add_argument(
        "--render-s", type=float, default=defaults.render_s, help="a warm render's GPU time"
    )
    plan.add_argument(
        "--burst-hours-month",
        type=float,
        default=defaults.burst_hours_month,
        help="hours a month the fleet may run flat out (%(default)s)",
    )
    plan.add_argument("--bursts-month", type=int, default=defaults.bursts_month)
    plan.add_argument("--cold-start-s", type=float, default=defaults.cold_start_s)
    plan.add_argument("--scaledown-window-s", type=float, default=defaults.scaledown_window_s)
    plan.add_argument("--json", action="store_true", help="one JSON object")
    plan.set_defaults(run=_plan)

    from scheduler.settings_doc import epilog

    scheduler = commands.add_parser(
        "scheduler",
        help="run one scheduler replica",
        description="Runs one scheduler replica, configured by its environment.",
        epilog=epilog() if settings_help else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scheduler.set_defaults(run=_scheduler)
    # Listed for --help; main() hands their arguments over before parsing.
    commands.add_parser("renderer", help="run an in-house renderer (see --help there)")
    commands.add_parser("gateway", help="run the REST gateway (see --help there)")
    return parser


def _add_gateway_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url",
        default=os.environ.get("SPILLWAY_BASE_URL", "http://127.0.0.1:8000/v1"),
        help="gateway URL (SPILLWAY_BASE_URL, default %(default)s)",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("SPILLWAY_API_KEY"), help="(SPILLWAY_API_KEY)"
    )


def _dev(args: argparse.Namespace) -> int:
    from scheduler.cli.devstack import DevOptions, StackError, run

    options = DevOptions(
        port=args.port,
        metrics_port=args.metrics_port,
        inhouse_slots=args.inhouse_slots,
        burst=args.burst if args.demo else 0,
        demo=args.demo,
        once=args.once,
        prompt=args.prompt,
        seconds=args.seconds,
        size=args.size,
        output=args.output,
    )
    if args.trace:
        # Inherited by the renderer and burst processes, so their spans print too.
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "console")
    shutdown = setup_tracing("spillway-dev")
    try:
        return asyncio.run(run(options))
    except StackError as exc:
        print(f"spillway dev: {exc}", file=sys.stderr)
        return 1
    finally:
        shutdown()


def _submit(args: argparse.Namespace) -> int:
    import httpx

    from scheduler.cli.rest_client import ApiError

    if not args.api_key:
        print("spillway submit: set SPILLWAY_API_KEY or pass --api-key", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_submit_async(args))
    except ApiError as exc:
        print(f"spillway submit: {exc}", file=sys.stderr)
        return 1
    except httpx.TransportError as exc:
        print(f"spillway submit: cannot reach {args.base_url}: {exc}", file=sys.stderr)
        return jobs_cli.UNREACHABLE


def _jobs(args: argparse.Namespace) -> int:
    if not args.api_key:
        print(
            f"spillway jobs {args.action}: set SPILLWAY_API_KEY or pass --api-key", file=sys.stderr
        )
        return jobs_cli.USAGE
    return asyncio.run(jobs_cli.run(args))


def _webhooks(args: argparse.Namespace) -> int:
    if not args.api_key:
        print(
            f"spillway webhooks {args.action}: set SPILLWAY_API_KEY or pass --api-key",
            file=sys.stderr,
        )
        return jobs_cli.USAGE
    return asyncio.run(webhooks_cli.run(args))


async def _submit_async(args: argparse.Namespace) -> int:
    from scheduler.cli.rest_client import RestClient, watch_with_bar

    async with RestClient(args.base_url, args.api_key) as client:
        video = await client.create(
            args.prompt,
            seconds=args.seconds,
            size=args.size,
            model=args.model,
            deadline_s=args.deadline,
            idempotency_key=args.idempotency_key,
            priority=args.priority,
            inhouse_only=args.inhouse_only,
        )
        print(json.dumps(video, sort_keys=True) if args.json else video["id"], flush=True)
        if not (args.watch or args.output):
            return 0
        last = await watch_with_bar(client, video["id"])
        if last.get("status") != "completed":
            error = last.get("error") or {}
            print(f"{video['id']} failed: {error.get('message', last)}", file=sys.stderr)
            return 1
        if args.output:
            size = await client.download(video["id"], args.output)
            print(f"saved {args.output} ({size} bytes)")
    return 0


def _spillover(args: argparse.Namespace) -> int:
    import grpc

    from scheduler.cli import spillover as spillover_cli

    if not args.api_key:
        print("spillway spillover: set SPILLWAY_API_KEY or pass --api-key", file=sys.stderr)
        return 2
    try:
        status = asyncio.run(spillover_cli.fetch(args.addr, args.api_key))
    except grpc.aio.AioRpcError as exc:
        print(
            f"spillway spillover: {args.addr}: {exc.code().name}: {exc.details()}", file=sys.stderr
        )
        return 1
    print(spillover_cli.to_json(status) if args.json else spillover_cli.to_table(status))
    return 0


def _fleet(args: argparse.Namespace) -> int:
    status, text = asyncio.run(
        fleet_cli.run(args.redis_url, args.action, args.address, args.slots, as_json=args.json)
    )
    print(text, file=sys.stderr if status else sys.stdout)
    return status


def _plan(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from scheduler.policy.capacity import plan_capacity

    inputs = PlanInputs(
        budget_usd_month=args.budget_usd_month,
        gpu_usd_per_s=args.gpu_usd_per_s,
        concurrency=args.concurrency,
        render_s=args.render_s,
        burst_hours_month=args.burst_hours_month,
        bursts_month=args.bursts_month,
        cold_start_s=args.cold_start_s,
        scaledown_window_s=args.scaledown_window_s,
    )
    result = plan_capacity(inputs)
    if args.json:
        print(
            json.dumps({**dataclasses.asdict(inputs), **dataclasses.asdict(result)}, sort_keys=True)
        )
        return 0
    print(
        f"max_containers   {result.max_containers}   "
        f"(SPILLWAY_SPILL_MAX_CONTAINERS, SPILLWAY_MODAL_MAX_CONTAINERS)\n"
        f"worst month      ${result.worst_month_usd:,.2f} of ${inputs.budget_usd_month:,.2f}: "
        f"{inputs.burst_hours_month:g} h flat out in {inputs.bursts_month} bursts, each "
        f"booting every container and idling it {inputs.scaledown_window_s:g} s after\n"
        f"per container    ${result.container_usd_month:,.2f} a month at worst "
        f"({result.overhead_share:.1%} of it booting and idling)\n"
        f"per job          ${result.usd_per_job:.4f} ({inputs.render_s:g} s render, "
        f"{inputs.concurrency} per container)\n"
        f"throughput       {result.jobs_per_hour:,.0f} jobs an hour with every container busy"
    )
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from scheduler.sim import cli as sim_cli

    return sim_cli.run(args.trace, args.config, args.policy, as_json=args.json, plot=args.plot)


def _scheduler(args: argparse.Namespace) -> int:
    from scheduler.server import serve

    config = SchedulerConfig.from_env()
    shutdown = setup_tracing("spillway-scheduler")
    try:
        uvloop.run(serve(config))
    finally:
        shutdown()
    return 0
