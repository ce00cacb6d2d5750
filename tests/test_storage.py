"""Uploads to a real S3 server: a small MP4 in one PUT, a large one in parts; both
arrive whole, with their content type."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from scheduler.config import ConfigError, S3Config, SchedulerConfig
from scheduler.store.storage import CONTENT_TYPE, S3ObjectStore
from tests.conftest import S3_REGION, S3Server

MIB = 1024 * 1024


def _config(s3: S3Server) -> S3Config:
    return S3Config(
        bucket=s3.bucket,
        endpoint_url=s3.endpoint_url,
        public_endpoint_url=None,
        region=S3_REGION,
        key_prefix="videos/",
        multipart_threshold_bytes=6 * MIB,
        part_bytes=5 * MIB,
        presign_expires_s=60,
        threads=2,
        lifecycle_days=0,
    )


@pytest.mark.parametrize("source", ["file", "bytes"])
async def test_small_and_multipart_uploads_arrive_whole(
    s3: S3Server, tmp_path: Path, source: str
) -> None:
    """From a file or from memory, a small MP4 goes up in one PUT and a large one in
    parts."""
    store = await S3ObjectStore.connect(_config(s3))
    try:
        sizes = {"small": 200_000, "large": 11 * MIB}
        uploaded = {}
        for name, size in sizes.items():
            path = tmp_path / f"{name}.mp4"
            path.write_bytes(os.urandom(size))
            key = f"videos/{name}.mp4"
            if source == "file":
                result = await store.put_file(path, key)
            else:
                result = await store.put_bytes(path.read_bytes(), key)
            uploaded[name] = (path, result)
    finally:
        await store.close()

    assert uploaded["small"][1].parts == 1 and uploaded["large"][1].parts == 3
    client = s3.client()
    for name, (path, result) in uploaded.items():
        got = await asyncio.to_thread(client.get_object, Bucket=s3.bucket, Key=result.key)
        body = got["Body"].read()
        assert (result.bytes, len(body)) == (sizes[name], sizes[name])
        assert hashlib.sha256(body).digest() == hashlib.sha256(path.read_bytes()).digest()
        assert got["ContentType"] == CONTENT_TYPE
    large = await asyncio.to_thread(
        client.head_object, Bucket=s3.bucket, Key=uploaded["large"][1].key
    )
    # A multipart object's ETag ends with its part count.
    assert large["ETag"].strip('"').endswith("-3")


async def test_the_lifecycle_rule_is_put_beside_the_buckets_own(s3: S3Server) -> None:
    """SPILLWAY_S3_LIFECYCLE_DAYS puts a rule for the key prefix, again idempotently,
    and keeps the rules the bucket already had."""
    client = s3.client()
    theirs = {
        "ID": "logs",
        "Filter": {"Prefix": "logs/"},
        "Status": "Enabled",
        "Expiration": {"Days": 30},
    }
    client.put_bucket_lifecycle_configuration(
        Bucket=s3.bucket, LifecycleConfiguration={"Rules": [theirs]}
    )
    env = {
        "SPILLWAY_API_KEYS": "sk-test-0001=acme",
        "SPILLWAY_S3_BUCKET": s3.bucket,
        "SPILLWAY_S3_ENDPOINT_URL": s3.endpoint_url,
        "SPILLWAY_S3_LIFECYCLE_DAYS": "2",
    }
    config = SchedulerConfig.from_env(env).s3
    for days in (2, 3):
        store = await S3ObjectStore.connect(dataclasses.replace(config, lifecycle_days=days))
        await store.close()
    rules = client.get_bucket_lifecycle_configuration(Bucket=s3.bucket)["Rules"]
    by_id = {r["ID"]: r for r in rules}
    assert set(by_id) == {"logs", "spillway-expiry:videos/"}
    assert by_id["spillway-expiry:videos/"]["Expiration"] == {"Days": 3}
    assert by_id["spillway-expiry:videos/"]["Filter"] == {"Prefix": "videos/"}

    with pytest.raises(ConfigError, match="SPILLWAY_S3_LIFECYCLE_DAYS=1"):
        SchedulerConfig.from_env(
            {**env, "SPILLWAY_S3_LIFECYCLE_DAYS": "1", "SPILLWAY_RETENTION_S": "90000"}
        )
