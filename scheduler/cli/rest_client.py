"""A small async client of the REST gateway, for `spillway submit`, `jobs`, `webhooks`
and the dev demo."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn


class ApiError(Exception):
    """The gateway answered with an error in the OpenAI shape."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        error = body.get("error") or {}
        super().__init__(f"HTTP {status}: {error.get('message', body)}")
        self.status = status
        self.code = error.get("code")


@dataclass(frozen=True)
class SseEvent:
    id: str
    event: str
    data: dict[str, Any]


class RestClient:
    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 30.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
        )

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._http.aclose()

    async def create(
        self,
        prompt: str,
        *,
        seconds: int,
        size: str,
        model: str | None = None,
        deadline_s: int | None = None,
        idempotency_key: str | None = None,
        priority: str | None = None,
        inhouse_only: bool = False,
    ) -> dict[str, Any]:
        form = {"prompt": prompt, "seconds": str(seconds), "size": size}
        if model:
            form["model"] = model
        if deadline_s:
            form["deadline_seconds"] = str(deadline_s)
        if priority:
            form["priority"] = priority
        if inhouse_only:
            form["inhouse_only"] = "true"
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = await self._http.post(
            "/videos", files={k: (None, v) for k, v in form.items()}, headers=headers
        )
        return _json(response)

    async def list(self, *, limit: int, after: str = "", order: str = "desc") -> dict[str, Any]:
        params: dict[str, str | int] = {"limit": limit, "order": order}
        if after:
            params["after"] = after
        return _json(await self._http.get("/videos", params=params))

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str | int] | None = None,
    ) -> dict[str, Any]:
        """One JSON request to a path under the base URL; the JSON answer."""
        return _json(await self._http.request(method, path, json=body, params=params))

    async def get(self, video_id: str) -> dict[str, Any]:
        return _json(await self._http.get(f"/videos/{video_id}"))

    async def delete(self, video_id: str) -> dict[str, Any]:
        return _json(await self._http.delete(f"/videos/{video_id}"))

    async def events(self, video_id: str, after: str = "") -> AsyncIterator[SseEvent]:
        """Follows the job's Server-Sent Events until the stream ends."""
        headers = {"Last-Event-ID": after} if after else {}
        async with self._http.stream(
            "GET", f"/videos/{video_id}/events", headers=headers, timeout=None
        ) as response:
            if response.status_code != 200:
                await response.aread()
                _json(response)
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                elif "data" in fields:
                    yield SseEvent(
                        fields.get("id", ""), fields.get("event", ""), json.loads(fields["data"])
                    )
                    fields = {}
                else:
                    fields = {}

    async def download(self, video_id: str, path: Path) -> int:
        """Saves the MP4, following the redirect to its presigned URL; returns its size."""
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        size = 0
        async with self._http.stream(
            "GET", f"/videos/{video_id}/content", follow_redirects=True
        ) as response:
            if response.status_code != 200:
                await response.aread()
                _json(response)
            out = await asyncio.to_thread(path.open, "wb")
            try:
                async for chunk in response.aiter_bytes():
                    await asyncio.to_thread(out.write, chunk)
                    size += len(chunk)
            finally:
                await asyncio.to_thread(out.close)
        return size


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        # Not the gateway answering (a proxy's error page, a wrong URL): say what came.
        text = " ".join(response.text.split())[:200]
        raise ApiError(response.status_code, {"error": {"message": text or "no body"}}) from None
    if response.status_code >= 400:
        raise ApiError(response.status_code, body)
    return body


async def watch_with_bar(
    client: RestClient, video_id: str, out: TextIO = sys.stderr
) -> dict[str, Any]:
    """Shows the job's progress from its events, as a rich progress bar on a terminal or
    a line per event elsewhere (a log, a pipe); returns the last event's data."""
    last: dict[str, Any] = {}
    if not out.isatty():
        async for event in client.events(video_id):
            last = event.data
            out.write(f"{int(last.get('progress') or 0)}% {_status(event)}\n")
            out.flush()
        return last
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    # Refreshed on each event rather than by rich's own thread: nothing changes between.
    with Progress(*columns, console=Console(file=out), auto_refresh=False) as bar:
        task = bar.add_task(video_id, total=100, status="")
        async for event in client.events(video_id):
            last = event.data
            bar.update(task, completed=int(last.get("progress") or 0), status=_status(event))
            bar.refresh()
    return last


def _status(event: SseEvent) -> str:
    return event.event.removeprefix("video.")
