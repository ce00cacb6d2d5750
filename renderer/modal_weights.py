"""The weights step of a deploy: a Modal function, in an app of its own, that copies one
pinned weights version from a private S3-compatible store into the models Volume.

An app of its own, with a small image, because it must run before the renderer's image
exists: that image's build precompiles kernels against these very weights. The store's
credentials are a Modal Secret attached to this function alone (the renderer reads the
Volume, never the store). `tools/modal_deploy.py` runs it as its `weights` step.

A version is copied once. The copy goes to a staging folder, each file is checked
against the size the store lists, and only then is the folder renamed to
/models/<version> and marked complete with its manifest; a later run that finds the mark
does nothing, and one that finds a staging folder (an interrupted copy) starts over.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import modal

from renderer.modal_config import MODELS_DIR, ModalConfig

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BOTO3_REQUIREMENT = "boto3==1.44.8"
MARKER = ".complete.json"
"""Written last into a version's folder: its manifest. A folder without it is not a
version."""
COPY_TIMEOUT_S = 4 * 3600

CONFIG = ModalConfig.from_environ(os.environ)

app = modal.App(f"{CONFIG.app}-weights")
image = modal.Image.debian_slim(python_version="3.11").uv_pip_install(BOTO3_REQUIREMENT)
models_volume = modal.Volume.from_name(CONFIG.models_volume, create_if_missing=True)


@dataclass(frozen=True)
class Manifest:
    version: str
    source: str
    files: dict[str, int]
    """Each file's path in the version's folder, and its size in bytes."""
    copied: bool
    """False when the version was already there."""

    @property
    def bytes(self) -> int:
        return sum(self.files.values())


def split_store_url(url: str) -> tuple[str, str]:
    """`s3://bucket/prefix` as (bucket, prefix without slashes at its ends)."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def copy_version(client: S3Client, store_url: str, version: str, models_dir: Path) -> Manifest:
    """Copies `<store_url>/<version>/` to `<models_dir>/<version>/`, unless it is there.
    Raises FileNotFoundError when the store has no such version or it has no
    config.json, and OSError when a file arrives with another size than listed."""
    target = models_dir / version
    marker = target / MARKER
    if marker.is_file():
        done = json.loads(marker.read_text())
        return Manifest(version, done["source"], done["files"], copied=False)
    bucket, prefix = split_store_url(store_url)
    source = f"{prefix}/{version}/" if prefix else f"{version}/"
    listed: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=source):
        for item in page.get("Contents", []):
            relative = item["Key"].removeprefix(source)
            if relative and not relative.endswith("/"):
                listed[relative] = item["Size"]
    where = f"s3://{bucket}/{source}"
    if not listed:
        raise FileNotFoundError(f"the store has no weights version at {where}")
    if "config.json" not in listed:
        raise FileNotFoundError(f"{where} has no config.json: SGLang could not serve it")
    staging = models_dir / f".staging-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    for relative, size in sorted(listed.items()):
        path = staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, source + relative, str(path))
        if path.stat().st_size != size:
            raise OSError(
                f"{where}{relative} arrived with {path.stat().st_size} bytes, listed {size}"
            )
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    manifest = Manifest(version, where, listed, copied=True)
    marker.write_text(json.dumps({"source": where, "files": listed}, sort_keys=True))
    return manifest


@app.function(
    image=image,
    volumes={MODELS_DIR: models_volume},
    secrets=[modal.Secret.from_name(CONFIG.weights_secret)],
    timeout=COPY_TIMEOUT_S,
)
def provision(store_url: str, endpoint_url: str, version: str) -> dict[str, Any]:
    """Copies the version into the Volume and commits it; returns its manifest."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint_url or None)
    manifest = copy_version(client, store_url, version, Path(MODELS_DIR))
    models_volume.commit()
    return {**asdict(manifest), "bytes": manifest.bytes}
