"""A loopback TCP proxy that can refuse connections, run as its own process:
`python tests/faults/tcp_proxy.py LISTEN_PORT TARGET_PORT [--throttle-bps N]`.

SIGUSR1 closes the listening socket (new connects get ECONNREFUSED) and resets every
open connection; SIGUSR2 listens on the same port again. A process of its own, so that
what the test process does (thousands of gRPC streams) cannot slow the proxy, and the
outage is as real to the scheduler as a dead S3 endpoint.

`--throttle-bps` paces what clients send, so an upload stays in flight long enough for
a test to freeze its sender in the middle of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import struct

_CHUNK = 4 * 1024


class Proxy:
    def __init__(self, listen_port: int, target_port: int, throttle_bps: int) -> None:
        self._listen_port = listen_port
        self._target_port = target_port
        self._throttle_bps = throttle_bps
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def accept(self) -> None:
        if self._server is None:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._throttle_bps:
                # A small receive window (inherited by accepted sockets) makes the pace
                # reach the sender; otherwise the kernel takes a whole upload at once.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _CHUNK)
            sock.bind(("127.0.0.1", self._listen_port))
            self._server = await asyncio.start_server(self._serve, sock=sock)
        print(f"proxy accepting on {self._listen_port}", flush=True)

    def refuse(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            # SO_LINGER 0: the peer sees a reset, as when a load balancer drops it.
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self._writers.clear()
        print(f"proxy refusing on {self._listen_port}", flush=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers.update((client_w, server_w))
        try:
            await asyncio.gather(
                self._pipe(client_r, server_w, self._throttle_bps),
                self._pipe(server_r, client_w, 0),
            )
        finally:
            for writer in (client_w, server_w):
                self._writers.discard(writer)
                writer.transport.abort()

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, throttle_bps: int
    ) -> None:
        try:
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
                if throttle_bps:
                    await asyncio.sleep(len(data) / throttle_bps)
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            writer.transport.abort()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("listen_port", type=int)
    parser.add_argument("target_port", type=int)
    parser.add_argument("--throttle-bps", type=int, default=0)
    args = parser.parse_args()
    proxy = Proxy(args.listen_port, args.target_port, args.throttle_bps)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reopening: set[asyncio.Task[None]] = set()

    def reopen() -> None:
        # The loop keeps only a weak reference to a task.
        task = loop.create_task(proxy.accept())
        reopening.add(task)
        task.add_done_callback(reopening.discard)

    loop.add_signal_handler(signal.SIGUSR1, proxy.refuse)
    loop.add_signal_handler(signal.SIGUSR2, reopen)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await proxy.accept()
    await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
