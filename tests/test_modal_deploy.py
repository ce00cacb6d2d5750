"""The deploy as code: the weights copy against a real S3 server, the weights app offline,
and `tools/modal_deploy.py`'s steps, bake loop and autoscaler re-apply, without Modal."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis.asyncio as aredis

from renderer.modal_weights import MARKER, copy_version
from scheduler.dispatch.fleet import Fleet
from scheduler.dispatch.spillover import Spillover
from scheduler.policy import PolicyConfig
from scheduler.policy.model import Autoscale
from tests.conftest import S3Server
from tests.test_modal_app import offline_env

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = {
    "config.json": b'{"max_position_embeddings": 4096}',
    "model-00001-of-00002.safetensors": b"\x00" * 4096,
    "model-00002-of-00002.safetensors": b"\x01" * 1000,
    "tokenizer/tokenizer.json": b"{}",
}


@pytest.fixture(scope="module")
def deploy() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "modal_deploy", ROOT / "tools" / "modal_deploy.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def put_version(s3: S3Server, version: str, files: dict[str, bytes]) -> None:
    client = s3.client()
    for name, data in files.items():
        client.put_object(Bucket=s3.bucket, Key=f"weights/renderer/{version}/{name}", Body=data)


def test_a_weights_version_is_copied_once_and_marked(s3: S3Server, tmp_path: Path) -> None:
    """A pinned version is copied file by file into <models>/<version>, marked complete
    with its manifest, and a second run finds the mark and copies nothing."""
    put_version(s3, "v7", WEIGHTS)
    put_version(s3, "v8", {"config.json": b"{}"})
    store = f"s3://{s3.bucket}/weights/renderer"

    first = copy_version(s3.client(), store, "v7", tmp_path)
    again = copy_version(s3.client(), store, "v7", tmp_path)

    folder = tmp_path / "v7"
    assert {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} == {
        *WEIGHTS,
        MARKER,
    }
    assert all((folder / name).read_bytes() == data for name, data in WEIGHTS.items())
    assert first.files == {name: len(data) for name, data in WEIGHTS.items()}
    assert (first.copied, again.copied) == (True, False)
    assert again.files == first.files and again.source == f"{store}/v7/"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v7"]


def test_an_interrupted_copy_starts_over(s3: S3Server, tmp_path: Path) -> None:
    """A staging folder left by an interrupted copy, and a version folder without its
    mark, are replaced by a whole copy."""
    put_version(s3, "v7", WEIGHTS)
    (tmp_path / ".staging-v7").mkdir()
    (tmp_path / ".staging-v7" / "half.safetensors").write_bytes(b"half")
    (tmp_path / "v7").mkdir()
    (tmp_path / "v7" / "stale.bin").write_bytes(b"stale")

    manifest = copy_version(s3.client(), f"s3://{s3.bucket}/weights/renderer/", "v7", tmp_path)

    assert manifest.copied and not (tmp_path / "v7" / "stale.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v7"]


@pytest.mark.parametrize(
    ("files", "problem"),
    [({}, "has no weights version at"), ({"model.safetensors": b"x"}, "has no config.json")],
    ids=["missing", "no-config"],
)
def test_a_version_the_store_cannot_serve_is_refused(
    s3: S3Server, tmp_path: Path, files: dict[str, bytes], problem: str
) -> None:
    """A version the store does not have, or one without a config.json, is refused with
    its store path, and nothing is written."""
    put_version(s3, "v9", files)

    with pytest.raises(FileNotFoundError, match=problem) as raised:
        copy_version(s3.client(), f"s3://{s3.bucket}/weights/renderer", "v9", tmp_path)

    assert f"s3://{s3.bucket}/weights/renderer/v9/" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_the_weights_app_imports_offline(tmp_path: Path) -> None:
    """The weights app imports without Modal, as its own app beside the renderer's, with
    the models Volume mounted writable and the store's Secret attached."""
    script = (
        "import json, renderer.modal_weights as w\n"
        "from modal._utils.async_utils import synchronizer\n"
        "from tests.test_modal_app import _closure\n"
        "f = _closure(synchronizer._translate_in(w.provision)._load)\n"
        "print(json.dumps({'app': w.app.name, 'secrets': [s._name for s in f['secrets']],"
        " 'volumes': {p: v.name for p, v in f['validated_volumes_no_cloud_buckets']}}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        cwd=ROOT,
        env=offline_env(
            tmp_path,
            SPILLWAY_MODAL_APP="renderer-staging",
            SPILLWAY_MODAL_WEIGHTS_SECRET="weights-store",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "app": "renderer-staging-weights",
        "secrets": ["weights-store"],
        "volumes": {"/models": "spillway-models"},
    }


def test_steps_run_in_the_deploy_order(deploy: ModuleType) -> None:
    """Whatever order steps are named in, they run in the deploy's order; an unknown
    step is refused."""
    assert deploy.chosen_steps("bake, weights,deploy") == ["weights", "deploy", "bake"]
    with pytest.raises(ValueError, match="--steps takes some of"):
        deploy.chosen_steps("weights,build")


def report(restored: bool) -> dict[str, Any]:
    return {
        "container_id": "ta-01",
        "restored": restored,
        "boot_seconds": 0.0 if restored else 95.0,
        "restore_seconds": 4.0,
        "render_seconds": 2.0,
        "bytes": 1000,
    }


def test_the_bake_stops_at_the_first_restore(deploy: ModuleType) -> None:
    """Bakes go on while containers boot without the snapshot, and stop at the first
    that was restored from it, saying so for each."""
    reports = iter([report(False), report(False), report(True), report(True)])
    lines: list[str] = []

    deploy.bake(lambda: next(reports), 5, lines.append)

    assert len(lines) == 3
    assert "booted without it" in lines[0] and "restored from the snapshot" in lines[2]


def test_a_bake_that_never_restores_fails_the_deploy(deploy: ModuleType) -> None:
    """A snapshot that no container restores within the attempts fails the step, saying
    that cold starts would boot from scratch."""
    with pytest.raises(deploy.DeployError, match=r"no container was restored .* in 2 bakes"):
        deploy.bake(lambda: report(False), 2, lambda line: None)


@pytest.mark.parametrize(
    ("argv", "environ", "status", "message"),
    [
        (["--env", "a b"], {}, 2, "--env must be a Modal environment name"),
        (["--env", "dev", "--steps", "build"], {}, 2, "--steps takes some of"),
        (["--env", "dev"], {"SPILLWAY_MODAL_GPU": "A10G"}, 2, "SPILLWAY_MODAL_GPU must be"),
        (["--env", "dev", "--steps", "weights"], {}, 1, "SPILLWAY_MODAL_WEIGHTS_URL is not set"),
    ],
)
def test_a_deploy_that_cannot_go_on_says_why_in_one_line(
    deploy: ModuleType,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    environ: dict[str, str],
    status: int,
    message: str,
) -> None:
    """Bad usage or settings exit 2 and a step that cannot run exits 1, each with one
    line on stderr, before anything reaches Modal."""
    assert deploy.main(argv, environ) == status

    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


async def test_the_autoscaler_settings_the_scheduler_applied_are_read_back(
    deploy: ModuleType, redis_url: str
) -> None:
    """What the scheduler records as applied (`Spillover.record_autoscale`) reads back
    as the same settings, for the deploy to apply again; nothing recorded reads as
    None."""
    settings = Autoscale(
        min_containers=2, buffer_containers=1, max_containers=8, scaledown_window_s=120
    )
    client = aredis.Redis.from_url(redis_url, decode_responses=True)
    spillover = Spillover(
        client,
        PolicyConfig(),
        inhouse_pool="inhouse",
        spill_pool="modal",
        fleet=Fleet(client, eject_after=1),
    )
    assert await deploy._applied_settings(redis_url) is None

    await spillover.record_autoscale(settings, "replica-1")
    await client.aclose()

    assert await deploy._applied_settings(redis_url) == settings
