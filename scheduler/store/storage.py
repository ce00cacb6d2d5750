"""Where finished MP4s go: a narrow object-store interface and its S3 implementation.

boto3 blocks, so every call that touches the network runs in a thread of the store's
own bounded pool: an S3 outage then ties up those threads, never the event loop's
default pool that file writes use. Its transfer manager uploads multipart above a
threshold with memory flat in the file size. boto3 retries a failed call only briefly;
the caller retries an upload for as long as the outage lasts (`scheduler.dispatch.attempt`).
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from scheduler.config import S3Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

CONTENT_TYPE = "video/mp4"

T = TypeVar("T")


class StorageError(Exception):
    """An object-store call failed; it names the bucket and key, and may be retried."""

    def __init__(self, action: str, bucket: str, key: str, cause: Exception) -> None:
        super().__init__(f"{action} s3://{bucket}/{key} failed: {cause}")
        self.bucket = bucket
        self.key = key


@dataclass(frozen=True)
class Uploaded:
    bucket: str
    key: str
    bytes: int
    parts: int


class ObjectStore(ABC):
    @property
    @abstractmethod
    def bucket(self) -> str: ...

    @abstractmethod
    def key_for(self, job_id: str, lease: int) -> str:
        """The object key of one attempt's MP4: derived from the job id and the attempt's
        lease, so that an upload retried by the same attempt overwrites, and a stale
        attempt (a replica frozen mid-upload that wakes after the job moved on) can
        never overwrite the object a newer attempt recorded as the job's."""

    @abstractmethod
    async def put_file(self, path: Path, key: str) -> Uploaded: ...

    @abstractmethod
    async def put_bytes(self, data: bytes, key: str) -> Uploaded: ...

    @abstractmethod
    def presign_get(self, key: str, expires_s: int) -> str: ...

    @abstractmethod
    async def delete(self, key: str) -> None: ...

    @abstractmethod
    async def check(self) -> None:
        """Raises `StorageError` unless the store answers now (readiness)."""

    @abstractmethod
    async def close(self) -> None:
        """Releases what the store holds (threads)."""


class S3ObjectStore(ObjectStore):
    def __init__(self, config: S3Config, client: S3Client, presign_client: S3Client) -> None:
        self._config = config
        self._client = client
        self._presign_client = presign_client
        self._transfer = TransferConfig(
            multipart_threshold=config.multipart_threshold_bytes,
            multipart_chunksize=config.part_bytes,
        )
        self._threads = ThreadPoolExecutor(config.threads, thread_name_prefix="s3")

    async def _in_thread(self, fn: functools.partial[T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn)

    @classmethod
    async def connect(cls, config: S3Config) -> S3ObjectStore:
        """Builds the clients off the event loop (boto3 reads credential files) and checks
        that the bucket exists, so a misconfigured bucket stops startup."""

        def build() -> S3ObjectStore:
            # Fail fast on a dead endpoint: the caller's own retries outlast an outage,
            # boto3's would only hold a thread.
            retries = Config(
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                max_pool_connections=config.threads * 10,
            )
            client = boto3.client(
                "s3",
                endpoint_url=config.endpoint_url,
                region_name=config.region,
                config=retries,
            )
            presign = boto3.client(
                "s3",
                endpoint_url=config.public_endpoint_url or config.endpoint_url,
                region_name=config.region,
                config=Config(signature_version="s3v4"),
            )
            try:
                client.head_bucket(Bucket=config.bucket)
            except (BotoCoreError, ClientError) as exc:
                raise StorageError("head bucket", config.bucket, "", exc) from exc
            if config.lifecycle_days:
                try:
                    _put_expiry_rule(client, config)
                except (BotoCoreError, ClientError) as exc:
                    log.warning(
                        "could not put the lifecycle rule on s3://%s (%s); the expiry "
                        "sweep alone deletes expired videos",
                        config.bucket,
                        exc,
                    )
            return cls(config, client, presign)

        return await asyncio.to_thread(build)

    @property
    def bucket(self) -> str:
        return self._config.bucket

    def key_for(self, job_id: str, lease: int) -> str:
        return f"{self._config.key_prefix}{job_id}/{lease}.mp4"

    async def put_file(self, path: Path, key: str) -> Uploaded:
        def upload() -> int:
            size = path.stat().st_size
            if size < self._config.multipart_threshold_bytes:
                # One request: upload_file would build a transfer manager and its
                # threads for every call, which costs more than the PUT itself.
                with path.open("rb") as body:
                    self._client.put_object(
                        Bucket=self.bucket, Key=key, Body=body, ContentType=CONTENT_TYPE
                    )
                return size
            self._client.upload_file(
                str(path),
                self.bucket,
                key,
                ExtraArgs={"ContentType": CONTENT_TYPE},
                Config=self._transfer,
            )
            return size

        return await self._upload(upload, key)

    async def put_bytes(self, data: bytes, key: str) -> Uploaded:
        def upload() -> int:
            if len(data) < self._config.multipart_threshold_bytes:
                # bytes, not a file object: botocore sends a file with "Expect:
                # 100-continue" and waits for the server's go-ahead, whatever its size.
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, ContentType=CONTENT_TYPE
                )
            else:
                self._client.upload_fileobj(
                    io.BytesIO(data),
                    self.bucket,
                    key,
                    ExtraArgs={"ContentType": CONTENT_TYPE},
                    Config=self._transfer,
                )
            return len(data)

        return await self._upload(upload, key)

    async def _upload(self, upload: Callable[[], int], key: str) -> Uploaded:
        try:
            size = await self._in_thread(functools.partial(upload))
        # The transfer manager wraps the client's errors in S3UploadFailedError.
        except (BotoCoreError, ClientError, S3UploadFailedError, OSError) as exc:
            raise StorageError("upload", self.bucket, key, exc) from exc
        parts = 1
        if size >= self._config.multipart_threshold_bytes:
            parts = math.ceil(size / self._config.part_bytes)
        return Uploaded(bucket=self.bucket, key=key, bytes=size, parts=parts)

    def presign_get(self, key: str, expires_s: int) -> str:
        # Signing is local computation: no network, so it stays on the loop.
        url: str = self._presign_client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
        )
        return url

    async def delete(self, key: str) -> None:
        try:
            await self._in_thread(
                functools.partial(self._client.delete_object, Bucket=self.bucket, Key=key)
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError("delete", self.bucket, key, exc) from exc

    async def check(self) -> None:
        try:
            await self._in_thread(functools.partial(self._client.head_bucket, Bucket=self.bucket))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError("head bucket", self.bucket, "", exc) from exc

    async def close(self) -> None:
        def close() -> None:
            self._threads.shutdown(wait=True, cancel_futures=True)
            self._client.close()
            self._presign_client.close()

        await asyncio.to_thread(close)


def _put_expiry_rule(client: S3Client, config: S3Config) -> None:
    """Adds (or updates) spillway's own rule, keeping the bucket's other rules: a put
    replaces the bucket's whole lifecycle configuration."""
    rule_id = f"spillway-expiry:{config.key_prefix}"[:255]
    try:
        rules = client.get_bucket_lifecycle_configuration(Bucket=config.bucket)["Rules"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
            raise
        rules = []
    ours: Any = {
        "ID": rule_id,
        "Filter": {"Prefix": config.key_prefix},
        "Status": "Enabled",
        "Expiration": {"Days": config.lifecycle_days},
    }
    client.put_bucket_lifecycle_configuration(
        Bucket=config.bucket,
        LifecycleConfiguration={"Rules": [*(r for r in rules if r.get("ID") != rule_id), ours]},
    )
