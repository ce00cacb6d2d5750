"""Where finished MP4s go: a narrow object-store interface and its S3 implementation.

boto3 blocks, so every call that touches the network runs in a thread; its transfer
manager uploads multipart above a threshold with memory flat in the file size.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from scheduler.config import S3Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CONTENT_TYPE = "video/mp4"


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
    def key_for(self, job_id: str) -> str:
        """The object key of a job's MP4: derived from the id alone, so a retried upload
        overwrites rather than duplicates."""

    @abstractmethod
    async def put_file(self, path: Path, key: str) -> Uploaded: ...

    @abstractmethod
    def presign_get(self, key: str, expires_s: int) -> str: ...

    @abstractmethod
    async def delete(self, key: str) -> None: ...


class S3ObjectStore(ObjectStore):
    def __init__(self, config: S3Config, client: S3Client, presign_client: S3Client) -> None:
        self._config = config
        self._client = client
        self._presign_client = presign_client
        self._transfer = TransferConfig(
            multipart_threshold=config.multipart_threshold_bytes,
            multipart_chunksize=config.part_bytes,
        )

    @classmethod
    async def connect(cls, config: S3Config) -> S3ObjectStore:
        """Builds the clients off the event loop (boto3 reads credential files) and checks
        that the bucket exists, so a misconfigured bucket stops startup."""

        def build() -> S3ObjectStore:
            retries = Config(retries={"max_attempts": 5, "mode": "standard"})
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
            return cls(config, client, presign)

        return await asyncio.to_thread(build)

    @property
    def bucket(self) -> str:
        return self._config.bucket

    def key_for(self, job_id: str) -> str:
        return f"{self._config.key_prefix}{job_id}.mp4"

    async def put_file(self, path: Path, key: str) -> Uploaded:
        def upload() -> int:
            self._client.upload_file(
                str(path),
                self.bucket,
                key,
                ExtraArgs={"ContentType": CONTENT_TYPE},
                Config=self._transfer,
            )
            return path.stat().st_size

        try:
            size = await asyncio.to_thread(upload)
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
            await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError("delete", self.bucket, key, exc) from exc
