"""Client CPU per upload of a small MP4: `S3ObjectStore.put_file` against boto3's
`upload_file` (what it used before), side by side, against moto's S3 server.

    .venv/bin/python tools/bench_upload.py [--uploads 150] [--bytes 200000]

Starts moto on a free port; alternates the two paths twice so drift on a noisy machine
shows. CPU is this process's (`time.process_time`): what a replica pays per job.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig

from scheduler.config import S3Config
from scheduler.store.storage import CONTENT_TYPE, S3ObjectStore

BUCKET = "bench-uploads"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main(uploads: int, size: int) -> None:
    port = _free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.1)
        results = asyncio.run(measure(f"http://127.0.0.1:{port}", uploads, size))
    finally:
        moto.kill()
        moto.wait()
    ours, theirs = min(results["put_file"]), min(results["upload_file"])
    print(f"{uploads} uploads of {size} bytes, client CPU ms per upload (best of 2 rounds)")
    print(f"  S3ObjectStore.put_file   {ours:.2f}")
    print(f"  boto3 upload_file        {theirs:.2f}")
    print(f"  ratio                    {ours / theirs:.2f}x")


async def measure(endpoint: str, uploads: int, size: int) -> dict[str, list[float]]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "bench")
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    config = S3Config(BUCKET, endpoint, None, "us-east-1", "v/", 8 << 20, 8 << 20, 60, 1, 0)
    store = await S3ObjectStore.connect(config)
    transfer = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20)
    results: dict[str, list[float]] = {"put_file": [], "upload_file": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        path.write_bytes(os.urandom(size))
        for _ in range(2):
            start = time.process_time()
            for i in range(uploads):
                await store.put_file(path, f"s{i}")
            results["put_file"].append((time.process_time() - start) / uploads * 1000)
            start = time.process_time()
            for i in range(uploads):
                # The baseline runs on the loop's thread: nothing else runs meanwhile.
                client.upload_file(
                    str(path),
                    BUCKET,
                    f"b{i}",
                    ExtraArgs={"ContentType": CONTENT_TYPE},
                    Config=transfer,
                )
            results["upload_file"].append((time.process_time() - start) / uploads * 1000)
    await store.close()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=150)
    parser.add_argument("--bytes", type=int, default=200_000)
    args = parser.parse_args()
    main(args.uploads, args.bytes)
