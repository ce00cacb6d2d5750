"""The stand-ins `tools/bench.py` measures spillway against, each run as its own process
so that its CPU is counted apart:

    python tools/bench_servers.py renderer PORT LOG   null renderer: a tiny MP4 at once
    python tools/bench_servers.py s3 PORT             null S3 sink: accepts every PUT
    python tools/bench_servers.py bare-api PORT REDIS bare FastAPI: one HGETALL per GET
    python tools/bench_servers.py echo PORT           bare gRPC server-stream fan-out

The null renderer appends `<prompt> <unix time>` per Render call to LOG, so that the bench
can tell when each job reached a renderer.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from spillway.v1 import renderer_pb2, renderer_pb2_grpc

CLIP = os.urandom(4096)
"""What the null renderer answers; the scheduler checks only its size and sha256."""
CLIP_SHA256 = hashlib.sha256(CLIP).hexdigest()
ECHO_WATCH = "/bench.Echo/Watch"
ECHO_PUBLISH = "/bench.Echo/Publish"


class NullRenderer(renderer_pb2_grpc.RendererServicer):
    def __init__(self, log: Any) -> None:
        self._log = log

    async def Render(
        self, request: renderer_pb2.RenderRequest, context: Any
    ) -> AsyncIterator[renderer_pb2.RenderResponse]:
        self._log.write(f"{request.prompt.replace(' ', '_')} {time.time():.6f}\n")
        yield renderer_pb2.RenderResponse(progress=renderer_pb2.RenderProgress(percent=50))
        yield renderer_pb2.RenderResponse(chunk=CLIP)
        yield renderer_pb2.RenderResponse(
            metadata=renderer_pb2.RenderMetadata(
                container_id="null",
                bytes=len(CLIP),
                sha256=CLIP_SHA256,
                duration_seconds=request.seconds,
                frames=request.seconds * 24,
                fps=24,
                engine="null",
            )
        )


async def _until_stopped(stop_server: Callable[[], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await stop_server()


async def renderer(port: int, log_path: str) -> None:
    # Buffered appends stay on the loop: the log is written once, at the end.
    with open(log_path, "w") as log:  # noqa: ASYNC230
        server = grpc.aio.server()
        renderer_pb2_grpc.add_RendererServicer_to_server(NullRenderer(log), server)
        probe = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(probe, server)
        await probe.set("", health_pb2.HealthCheckResponse.SERVING)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await _until_stopped(lambda: server.stop(0))


async def s3_sink(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every S3 call the scheduler makes (HEAD bucket, PUT, multipart, DELETE)
    with success, reading and dropping the body."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    body = b""
    if scope["method"] == "POST":
        # Multipart uploads: boto3 parses the start's and the end's XML.
        query = scope["query_string"]
        tag = (
            "InitiateMultipartUploadResult"
            if b"uploads" in query
            else "CompleteMultipartUploadResult"
        )
        body = f'<{tag}><UploadId>u</UploadId><ETag>"0"</ETag></{tag}>'.encode()
    headers = [(b"etag", b'"0"'), (b"content-length", str(len(body)).encode())]
    status = 204 if scope["method"] == "DELETE" else 200
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def bare_api(redis_url: str) -> Any:
    """What the gateway's GET /v1/videos/{id} amounts to at the least: one HGETALL."""
    import redis.asyncio as redis
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    app = FastAPI()

    @app.get("/v1/videos/{video_id}")
    async def get(video_id: str) -> JSONResponse:
        return JSONResponse(await client.hgetall(f"spw:job:{video_id}"))

    return app


async def echo(port: int) -> None:
    """A server-stream per watcher; each Publish sends its payload to every stream."""
    streams: set[asyncio.Queue[bytes]] = set()

    async def watch(request: bytes, context: Any) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        streams.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            streams.discard(queue)

    async def publish(request: bytes, context: Any) -> bytes:
        for queue in streams:
            queue.put_nowait(request)
        return str(len(streams)).encode()

    def identity(b: bytes) -> bytes:
        return b

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Watch": grpc.unary_stream_rpc_method_handler(watch, identity, identity),
            "Publish": grpc.unary_unary_rpc_method_handler(publish, identity, identity),
        },
    )
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 10000)])
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await _until_stopped(lambda: server.stop(0))


def main(argv: list[str]) -> None:
    kind, port = argv[0], int(argv[1])
    if kind == "renderer":
        asyncio.run(renderer(port, argv[2]))
    elif kind == "echo":
        asyncio.run(echo(port))
    else:
        app = s3_sink if kind == "s3" else bare_api(argv[2])
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main(sys.argv[1:])
