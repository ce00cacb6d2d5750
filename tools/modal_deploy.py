"""Deploys the Modal renderer into one Modal environment, from an empty workspace to a
baked snapshot, in order:

    .venv/bin/python tools/modal_deploy.py --env dev [--steps STEP,...] [--bake-attempts 5]
                                           [--redis-url redis://...]

1. environment  create the Modal environment (`dev`, `prod`) if it does not exist.
2. weights      copy SPILLWAY_MODAL_WEIGHTS_VERSION from SPILLWAY_MODAL_WEIGHTS_URL into
                the models Volume (`renderer.modal_weights`, run as an ephemeral app);
                a version already there is not copied again.
3. deploy       deploy `renderer.modal_app`; its image build precompiles the kernels
                on the pinned GPU against those weights.
4. bake         call `Renderer.bake` until a container says it was restored from the
                snapshot, at most --bake-attempts times: Modal takes the snapshot on
                a first boot after a deploy, and only a restore shows that it exists.
5. autoscaler   the deploy reset the class's autoscaler to its deployed defaults: apply
                again what the scheduler last applied (its Redis, --redis-url). Without
                a Redis URL the scheduler's reconcile loop does it within
                SPILLWAY_AUTOSCALE_INTERVAL_S.

Every step can run again safely, so a deploy that failed is run again whole. Settings
are the SPILLWAY_MODAL_* variables (`renderer.modal_config`), read when the modules
are imported; Modal's credentials are its own (`modal token new`, or MODAL_TOKEN_ID and
MODAL_TOKEN_SECRET). Exit status: 0 done, 1 a step failed, 2 bad usage or settings;
a failure prints one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, cast

from renderer.modal_config import ModalConfig
from scheduler.policy.model import Autoscale

STEPS = ("environment", "weights", "deploy", "bake", "autoscaler")
CLASS_NAME = "Renderer"
_ENVIRONMENT = re.compile(r"[A-Za-z0-9._-]{1,64}")


class DeployError(Exception):
    """A step failed; the message says which and why."""


@dataclass(frozen=True)
class Deployment:
    environment: str
    config: ModalConfig
    bake_attempts: int
    redis_url: str | None
    say: Callable[[str], None]


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", required=True, help="the Modal environment, e.g. dev or prod")
    parser.add_argument(
        "--steps",
        default=",".join(STEPS),
        help=f"comma-separated steps to run, always in this order: {','.join(STEPS)}",
    )
    parser.add_argument("--bake-attempts", type=int, default=5)
    parser.add_argument(
        "--redis-url",
        default=environ.get("REDIS_URL"),
        help="the scheduler's Redis, to re-apply its autoscaler settings (default $REDIS_URL)",
    )
    args = parser.parse_args(argv)
    try:
        if not _ENVIRONMENT.fullmatch(args.env):
            raise ValueError(f"--env must be a Modal environment name, got {args.env!r}")
        steps = chosen_steps(args.steps)
        if args.bake_attempts < 1:
            raise ValueError(f"--bake-attempts must be at least 1, got {args.bake_attempts}")
        config = ModalConfig.from_environ(environ)
    except ValueError as error:
        print(f"modal_deploy: {error}", file=sys.stderr)
        return 2
    deployment = Deployment(
        environment=args.env,
        config=config,
        bake_attempts=args.bake_attempts,
        redis_url=args.redis_url,
        say=lambda line: print(line, flush=True),
    )
    runners: dict[str, Callable[[Deployment], None]] = {
        "environment": ensure_environment,
        "weights": provision_weights,
        "deploy": deploy_app,
        "bake": bake_snapshot,
        "autoscaler": reapply_autoscaler,
    }
    for step in steps:
        deployment.say(f"== {step} ({args.env})")
        try:
            runners[step](deployment)
        except Exception as error:
            print(f"modal_deploy: {step} failed: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
    deployment.say(f"done: {', '.join(steps)} in {args.env}")
    return 0


def chosen_steps(raw: str) -> list[str]:
    """The named steps in the order they must run; ValueError for an unknown one."""
    names = {name.strip() for name in raw.split(",") if name.strip()}
    unknown = names - set(STEPS)
    if unknown or not names:
        raise ValueError(f"--steps takes some of {','.join(STEPS)}, got {raw!r}")
    return [step for step in STEPS if step in names]


def ensure_environment(deployment: Deployment) -> None:
    import modal.environments

    names = {item.name for item in modal.environments.list_environments()}
    if deployment.environment in names:
        deployment.say(f"environment {deployment.environment} exists")
        return
    modal.environments.create_environment(deployment.environment)
    deployment.say(f"created environment {deployment.environment}")


def provision_weights(deployment: Deployment) -> None:
    config = deployment.config
    if not config.weights_url:
        raise DeployError("SPILLWAY_MODAL_WEIGHTS_URL is not set: where are the weights?")
    import modal

    from renderer import modal_weights

    with modal.enable_output(), modal_weights.app.run(environment_name=deployment.environment):
        manifest = modal_weights.provision.remote(
            config.weights_url, config.weights_endpoint_url, config.weights_version
        )
    verb = "copied" if manifest["copied"] else "already in the Volume:"
    deployment.say(
        f"weights {verb} {manifest['version']} from {manifest['source']} "
        f"({len(manifest['files'])} files, {manifest['bytes']} bytes)"
    )


def deploy_app(deployment: Deployment) -> None:
    import modal

    from renderer import modal_app

    with modal.enable_output():
        modal_app.app.deploy(environment_name=deployment.environment)
    deployment.say(f"deployed {deployment.config.app} to {deployment.environment}")


def bake_snapshot(deployment: Deployment) -> None:
    import modal

    cls = modal.Cls.from_name(
        deployment.config.app, CLASS_NAME, environment_name=deployment.environment
    )
    bake(lambda: dict(cls().bake.remote()), deployment.bake_attempts, deployment.say)


def bake(call: Callable[[], dict[str, Any]], attempts: int, say: Callable[[str], None]) -> None:
    """Calls `Renderer.bake` until a container reports a restore from the snapshot.
    Each bake retires its container, so that the next one starts another."""
    for attempt in range(1, attempts + 1):
        report = call()
        say(
            f"bake {attempt}/{attempts}: container {report['container_id']} "
            f"{'restored from the snapshot' if report['restored'] else 'booted without it'} "
            f"(boot {report['boot_seconds']:.1f} s, restore {report['restore_seconds']:.1f} s, "
            f"render {report['render_seconds']:.1f} s)"
        )
        if report["restored"]:
            return
    raise DeployError(
        f"no container was restored from a snapshot in {attempts} bakes: cold starts "
        "will boot from scratch; see the containers' logs for snapshot errors"
    )


def reapply_autoscaler(deployment: Deployment) -> None:
    if not deployment.redis_url:
        deployment.say(
            "no --redis-url: the scheduler re-applies its autoscaler settings within "
            "SPILLWAY_AUTOSCALE_INTERVAL_S"
        )
        return
    settings = asyncio.run(_applied_settings(deployment.redis_url))
    if settings is None:
        deployment.say("the scheduler has applied no autoscaler settings yet")
        return
    asyncio.run(_apply(deployment, settings))
    deployment.say(f"re-applied {settings}")


async def _applied_settings(redis_url: str) -> Autoscale | None:
    import redis.asyncio as redis

    from scheduler.store import keys

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        applied = await client.hgetall(keys.AUTOSCALE)
    finally:
        await client.aclose()
    return autoscale_from(cast(dict[str, str], applied))


def autoscale_from(applied: Mapping[str, str]) -> Autoscale | None:
    """The settings the scheduler recorded (`Spillover.record_autoscale` writes the
    dataclass's fields, and who applied them when), if any."""
    if not applied:
        return None
    return Autoscale(**{field.name: int(applied[field.name]) for field in fields(Autoscale)})


async def _apply(deployment: Deployment, settings: Autoscale) -> None:
    from scheduler.pools.modal import ModalPool, ModalPoolConfig

    pool = ModalPool(
        ModalPoolConfig(
            app_name=deployment.config.app,
            class_name=CLASS_NAME,
            environment=deployment.environment,
        )
    )
    try:
        await pool.apply_autoscaler(settings)
    finally:
        await pool.close()


if __name__ == "__main__":
    sys.exit(main())
