"""`spillway jobs`: list, inspect, cancel, retry, watch and download render jobs through the
REST gateway, with the caller's API key, as `gh` or `kubectl` would: a table for people,
`--json` for scripts, one line on stderr for an expected failure.

Exit codes: 0 done; 1 the job failed or was cancelled, or the gateway refused the
request; 2 bad usage; 3 no such job; 4 the gateway could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from scheduler.cli.rest_client import ApiError, RestClient, watch_with_bar

OK, FAILED, USAGE, NOT_FOUND, UNREACHABLE = 0, 1, 2, 3, 4
ACTIONS = ("list", "get", "cancel", "retry", "watch", "download")


async def run(args: argparse.Namespace) -> int:
    name = f"spillway jobs {args.action}"
    if args.action != "list" and not args.id:
        return fail(name, "give the job's id (video_...)", USAGE)
    if args.action == "download" and not args.output:
        args.output = Path(f"{args.id}.mp4")
    try:
        async with RestClient(args.base_url, args.api_key) as client:
            return await _ACTIONS[args.action](client, args)
    except ApiError as exc:
        return fail(name, str(exc), NOT_FOUND if exc.status == 404 else FAILED)
    except httpx.TransportError as exc:
        return fail(name, f"cannot reach {args.base_url}: {exc}", UNREACHABLE)


async def _list(client: RestClient, args: argparse.Namespace) -> int:
    page = await client.list(limit=args.limit, after=args.after or "", order=args.order)
    if args.json:
        print(json.dumps(page, sort_keys=True))
    else:
        print(to_table(page["data"]))
        if page.get("has_more"):
            print(f"more: spillway jobs list --after {page['data'][-1]['id']}", file=sys.stderr)
    return OK


async def _get(client: RestClient, args: argparse.Namespace) -> int:
    video = await client.get(args.id)
    print(json.dumps(video, sort_keys=True) if args.json else to_detail(video))
    return OK


async def _cancel(client: RestClient, args: argparse.Namespace) -> int:
    deleted = await client.delete(args.id)
    print(json.dumps(deleted, sort_keys=True) if args.json else f"cancelled {deleted['id']}")
    return OK


async def _retry(client: RestClient, args: argparse.Namespace) -> int:
    video = await client.call("POST", f"/videos/{args.id}/retry")
    print(json.dumps(video, sort_keys=True) if args.json else f"retried {video['id']}: queued")
    return OK


async def _watch(client: RestClient, args: argparse.Namespace) -> int:
    last = await watch_with_bar(client, args.id)
    video = await client.get(args.id)
    if args.json:
        print(json.dumps(video, sort_keys=True))
    if video.get("status") != "completed":
        error = (video.get("error") or last.get("error") or {}).get("message", "")
        print(f"{args.id} {video.get('status')}: {error}".rstrip(": "), file=sys.stderr)
        return FAILED
    return OK


async def _download(client: RestClient, args: argparse.Namespace) -> int:
    size = await client.download(args.id, args.output)
    print(f"saved {args.output} ({size} bytes)")
    return OK


_ACTIONS = {
    "list": _list,
    "get": _get,
    "cancel": _cancel,
    "retry": _retry,
    "watch": _watch,
    "download": _download,
}


def fail(name: str, message: str, code: int) -> int:
    print(f"{name}: {message}", file=sys.stderr)
    return code


def when(epoch_s: Any) -> str:
    if not isinstance(epoch_s, int | float) or isinstance(epoch_s, bool):
        return "-"
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S")


def to_table(videos: list[dict[str, Any]]) -> str:
    if not videos:
        return "no jobs"
    rows = [("id", "status", "progress", "priority", "seconds", "size", "created (UTC)")]
    rows += [
        (
            v["id"],
            str(v.get("status", "")),
            f"{v.get('progress', 0)}%",
            str(v.get("priority", "")),
            str(v.get("seconds", "")),
            str(v.get("size", "")),
            when(v.get("created_at")),
        )
        for v in videos
    ]
    return table(rows)


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as aligned columns, the first row the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _placement(placement: dict[str, Any] | None) -> str | None:
    if not placement:
        return None
    reason = placement.get("reason")
    return f"{placement.get('pool')} ({reason})" if reason else placement.get("pool")


def to_detail(video: dict[str, Any]) -> str:
    fields = [
        ("id", video.get("id")),
        ("status", video.get("status")),
        ("progress", f"{video.get('progress', 0)}%"),
        ("priority", video.get("priority")),
        ("placement", _placement(video.get("placement"))),
        ("model", video.get("model")),
        ("seconds", video.get("seconds")),
        ("size", video.get("size")),
        ("created", when(video.get("created_at"))),
        ("completed", when(video.get("completed_at"))),
        ("expires", when(video.get("expires_at"))),
    ]
    if error := video.get("error"):
        fields.append(("error", f"{error.get('code')}: {error.get('message')}"))
    return "\n".join(f"{name:<10}{value}" for name, value in fields if value not in (None, ""))
