"""Webhook endpoints: a tenant's registered receivers, their signing secrets and their
delivery log, in Redis.

The deliveries themselves are queued by the Lua step that ends a job (see
`webhook_outbox` in `lua/prelude.lua`) and sent by `scheduler.dispatch.webhook_delivery`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import json
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.typing import EncodableT, FieldT

from scheduler.api.errors import InvalidArgument
from scheduler.store import keys
from scheduler.store.jobs import ordered_id
from scheduler.store.jobstore import load_script, page_ids

EVENT_TYPES = ("video.completed", "video.failed")
"""The events a video raises: its terminal statuses as the OpenAI Videos API names them
(a cancelled video raises none, as there)."""

SECRET_GRACE_S = 24 * 3600
"""How long a rotated-out secret keeps signing beside the new one."""

MAX_ENDPOINTS_PER_TENANT = 20
_MAX_URL = 2048
_ID = re.compile(r"^we_[0-9a-f]{32}$")


def new_endpoint_id() -> str:
    return ordered_id("we_")


def is_endpoint_id(value: str) -> bool:
    return bool(_ID.match(value))


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass(frozen=True)
class Endpoint:
    id: str
    tenant: str
    name: str
    url: str
    event_types: tuple[str, ...]
    created_ms: int
    updated_ms: int
    secret: str
    disabled: str

    @property
    def secret_hint(self) -> str:
        return f"whsec_...{self.secret[-4:]}"

    @classmethod
    def from_hash(cls, endpoint_id: str, h: dict[str, str]) -> Endpoint:
        return cls(
            id=endpoint_id,
            tenant=h["tenant"],
            name=h["name"],
            url=h["url"],
            event_types=tuple(t for t in h["event_types"].split(",") if t),
            created_ms=int(h["created_ms"]),
            updated_ms=int(h["updated_ms"]),
            secret=h["secret"],
            disabled=h.get("disabled", ""),
        )


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver one event, as the endpoint's log records it."""

    event_id: str
    event_type: str
    video_id: str
    attempt: int
    status_code: int
    error: str
    outcome: str
    at_ms: int


class Targets:
    """Which URLs webhooks may be sent to. By default only https to public addresses:
    a tenant must not make spillway call into its own network (SSRF). The local stack
    allows plain http and loopback or private addresses."""

    def __init__(self, *, allow_local: bool) -> None:
        self.allow_local = allow_local

    def check_url(self, url: str, field: str = "url") -> str:
        """The URL if its form is acceptable; resolving it is `refusal`'s job."""
        if not url or len(url) > _MAX_URL:
            raise InvalidArgument(field, f"must be 1 to {_MAX_URL} characters")
        parts = urlsplit(url)
        allowed = ("https", "http") if self.allow_local else ("https",)
        if parts.scheme not in allowed:
            raise InvalidArgument(
                field, "must be an https URL" + ("" if self.allow_local else " (http is refused)")
            )
        if not parts.hostname:
            raise InvalidArgument(field, "must name a host")
        if parts.username or parts.password:
            raise InvalidArgument(field, "must not carry credentials")
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise InvalidArgument(field, "has a malformed port") from None
        return url

    async def refusal(self, url: str) -> str | None:
        """Why a request to the URL must not be sent now, or None: every address its host
        resolves to must be public (checked at each delivery, as DNS may change)."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            return f"could not resolve {host}: {exc.strerror or exc}"
        if self.allow_local:
            return None
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if not address.is_global:
                return f"{host} resolves to {address}, which is not a public address"
        return None


class WebhookStore:
    def __init__(self, client: redis.Redis, *, log_maxlen: int = 1000) -> None:
        self._r = client
        self.log_maxlen = log_maxlen
        self._claim: AsyncScript = client.register_script(load_script("webhook_claim"))
        self._result: AsyncScript = client.register_script(load_script("webhook_result"))

    async def create(
        self, tenant: str, name: str, url: str, event_types: Sequence[str]
    ) -> Endpoint:
        index = keys.tenant_webhooks(tenant)
        if await self._r.zcard(index) >= MAX_ENDPOINTS_PER_TENANT:
            raise InvalidArgument(
                "url",
                f"a tenant may register at most {MAX_ENDPOINTS_PER_TENANT} endpoints; "
                "delete one first",
                reason="too_many_endpoints",
            )
        endpoint_id = new_endpoint_id()
        now = _now_ms()
        fields: dict[FieldT, EncodableT] = {
            "tenant": tenant,
            "name": name,
            "url": url,
            "event_types": ",".join(event_types),
            "created_ms": now,
            "updated_ms": now,
            "secret": new_secret(),
            "disabled": "",
        }
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(keys.webhook_endpoint(endpoint_id), mapping=fields)
            pipe.zadd(index, {endpoint_id: 0})
            await pipe.execute()
        return Endpoint.from_hash(endpoint_id, {str(k): str(v) for k, v in fields.items()})

    async def get(self, tenant: str, endpoint_id: str) -> Endpoint | None:
        if not is_endpoint_id(endpoint_id):
            return None
        h = cast(dict[str, str], await self._r.hgetall(keys.webhook_endpoint(endpoint_id)))
        if not h or h["tenant"] != tenant:
            return None
        return Endpoint.from_hash(endpoint_id, h)

    async def list_page(
        self, tenant: str, *, after: str, limit: int
    ) -> tuple[list[Endpoint], bool]:
        """Newest first, after the id `after`; and whether more follow."""
        ids, has_more = await page_ids(
            self._r, keys.tenant_webhooks(tenant), after=after, limit=limit, order="desc"
        )
        async with self._r.pipeline(transaction=False) as pipe:
            for endpoint_id in ids:
                pipe.hgetall(keys.webhook_endpoint(endpoint_id))
            hashes = await pipe.execute()
        endpoints = [Endpoint.from_hash(i, h) for i, h in zip(ids, hashes, strict=True) if h]
        return endpoints, has_more

    async def update(
        self,
        endpoint: Endpoint,
        *,
        name: str | None = None,
        url: str | None = None,
        event_types: Sequence[str] | None = None,
    ) -> Endpoint:
        """Sets what is given; any change re-enables an endpoint a 410 disabled."""
        fields: dict[FieldT, EncodableT] = {}
        if name is not None and name != endpoint.name:
            fields["name"] = name
        if url is not None and url != endpoint.url:
            fields["url"] = url
        if event_types is not None and tuple(event_types) != endpoint.event_types:
            fields["event_types"] = ",".join(event_types)
        if not fields and not endpoint.disabled:
            return endpoint
        now = _now_ms()
        fields |= {"updated_ms": now, "disabled": ""}
        await self._r.hset(keys.webhook_endpoint(endpoint.id), mapping=fields)
        return dataclasses.replace(
            endpoint,
            name=endpoint.name if name is None else name,
            url=endpoint.url if url is None else url,
            event_types=endpoint.event_types if event_types is None else tuple(event_types),
            updated_ms=now,
            disabled="",
        )

    async def delete(self, endpoint: Endpoint) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(keys.webhook_endpoint(endpoint.id), keys.webhook_log(endpoint.id))
            pipe.zrem(keys.tenant_webhooks(endpoint.tenant), endpoint.id)
            await pipe.execute()

    async def rotate_secret(self, endpoint: Endpoint, *, keep_old: bool) -> Endpoint:
        now = _now_ms()
        secret = new_secret()
        fields: dict[FieldT, EncodableT] = {
            "secret": secret,
            "old_secret": endpoint.secret if keep_old else "",
            "old_until_ms": now + SECRET_GRACE_S * 1000 if keep_old else 0,
            "updated_ms": now,
        }
        await self._r.hset(keys.webhook_endpoint(endpoint.id), mapping=fields)
        return dataclasses.replace(endpoint, secret=secret, updated_ms=now)

    async def secrets(self, endpoint: Endpoint) -> list[str]:
        """The secrets that sign a delivery now: the current one, and the old one during
        its grace period."""
        old, until = cast(
            list[str | None],
            await self._r.hmget(keys.webhook_endpoint(endpoint.id), ["old_secret", "old_until_ms"]),
        )
        if old and int(until or 0) > _now_ms():
            return [endpoint.secret, old]
        return [endpoint.secret]

    async def deliveries(self, endpoint: Endpoint, limit: int) -> list[Delivery]:
        entries = cast(
            list[tuple[str, dict[str, str]]],
            await self._r.xrevrange(keys.webhook_log(endpoint.id), count=limit),
        )
        out = []
        for _, fields in entries:
            d = json.loads(fields["d"])
            out.append(
                Delivery(
                    event_id=d["event_id"],
                    event_type=d.get("event_type", ""),
                    video_id=d.get("video_id", ""),
                    attempt=int(d["attempt"]),
                    status_code=int(d["status_code"]),
                    error=d["error"],
                    outcome=d["outcome"],
                    at_ms=int(d["t"]),
                )
            )
        return out

    async def claim(
        self, batch: int, visibility_s: float, per_endpoint: int, in_flight: dict[str, int]
    ) -> list[Claimed]:
        """Up to `batch` due deliveries, at most `per_endpoint` in flight to each endpoint
        counting `in_flight` (this replica's, by endpoint id)."""
        pairs = [x for ep, n in in_flight.items() for x in (ep, n)]
        rows = await self._claim(
            args=[batch, int(visibility_s * 1000), self.log_maxlen, per_endpoint, *pairs]
        )
        return [
            Claimed(member, url, body, int(attempt), secrets.split())
            for member, url, body, attempt, secrets in rows
        ]

    async def result(
        self,
        claimed: Claimed,
        outcome: str,
        *,
        status_code: int = 0,
        error: str = "",
        retry_in_s: float = 0.0,
        retry_window_s: float = 0.0,
    ) -> str:
        """Records an attempt; returns the outcome logged (a retry past the window is
        `gave_up`)."""
        return cast(
            str,
            await self._result(
                args=[
                    claimed.member,
                    claimed.attempt,
                    outcome,
                    status_code,
                    error,
                    int(retry_in_s * 1000),
                    int(retry_window_s * 1000),
                    self.log_maxlen,
                ]
            ),
        )


@dataclass(frozen=True)
class Claimed:
    """A delivery this replica now sends."""

    member: str
    url: str
    body: str
    attempt: int
    secrets: list[str]

    @property
    def event_id(self) -> str:
        return self.member.partition(" ")[0]

    @property
    def endpoint_id(self) -> str:
        return self.member.partition(" ")[2]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
