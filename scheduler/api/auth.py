"""API keys: who is calling (a tenant) and what it may do (a scope).

Keys live hashed in Redis (`keys.API_KEYS`), created and revoked at run time by an
operator (`spillway keys`); the `SPILLWAY_API_KEYS` and `SPILLWAY_OPERATOR_KEYS`
variables remain as a bootstrap. The gateway forwards the caller's bearer key as gRPC
metadata. Each replica caches what it looked up for `cache_s`, so a revoked key stops
working on every replica within that long, with no restart.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import cast

import redis.asyncio as redis

from scheduler.api.errors import NotFound, PermissionDenied, Unauthenticated
from scheduler.store import keys

Metadata = Sequence[tuple[str, str | bytes]] | None


class Scope(StrEnum):
    TENANT = "tenant"
    """Its tenant's jobs and webhooks."""
    OPERATOR = "operator"
    """Also the platform: spillover status, keys, operator controls."""


@dataclass(frozen=True)
class Caller:
    tenant: str
    scope: Scope


@dataclass(frozen=True)
class KeyRecord:
    """A stored key, without the key itself."""

    id: str
    tenant: str
    scope: Scope
    name: str
    created_ms: int
    expires_ms: int
    """0: never."""
    hint: str
    """The key's last characters, to tell keys apart."""


class ApiKeys:
    def __init__(
        self,
        client: redis.Redis | None,
        tenant_keys: Mapping[str, str],
        operator_keys: Mapping[str, str] | None = None,
        *,
        cache_s: float = 2.0,
    ) -> None:
        self._r = client
        # Looked up by digest so that lookup time says nothing about a key's prefix.
        self._bootstrap = {_digest(k): Caller(t, Scope.TENANT) for k, t in tenant_keys.items()}
        for key, tenant in (operator_keys or {}).items():
            self._bootstrap[_digest(key)] = Caller(tenant, Scope.OPERATOR)
        self._cache_s = cache_s
        self._cache: dict[str, tuple[float, Caller | None]] = {}

    async def caller(self, metadata: Metadata) -> Caller:
        for name, value in metadata or ():
            if name == "authorization" and isinstance(value, str):
                scheme, _, key = value.partition(" ")
                if scheme.lower() == "bearer" and (found := await self._lookup(key)):
                    return found
                raise Unauthenticated("invalid API key")
        raise Unauthenticated("missing API key: send `authorization: Bearer <key>`")

    async def tenant(self, metadata: Metadata) -> str:
        return (await self.caller(metadata)).tenant

    async def operator(self, metadata: Metadata) -> Caller:
        caller = await self.caller(metadata)
        if caller.scope is not Scope.OPERATOR:
            raise PermissionDenied("this call needs an operator key; this key is a tenant's")
        return caller

    async def _lookup(self, key: str) -> Caller | None:
        digest = _digest(key)
        if (found := self._bootstrap.get(digest)) is not None or self._r is None:
            return found
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self._cache_s:
            return cached[1]
        raw = cast(str | None, await self._r.hget(keys.API_KEYS, digest))
        caller = None
        if raw is not None:
            record = _decode(raw)
            if not record.expires_ms or record.expires_ms > time.time() * 1000:
                caller = Caller(record.tenant, record.scope)
        if len(self._cache) > 10_000:
            # Bounded: a flood of made-up keys must not grow the cache without end.
            self._cache.clear()
        self._cache[digest] = (now, caller)
        return caller

    async def create(
        self, tenant: str, scope: Scope, name: str, ttl_s: int = 0
    ) -> tuple[str, KeyRecord]:
        """A new key (returned once, never stored) and its record."""
        assert self._r is not None
        key = f"sk-{secrets.token_urlsafe(32)}"
        now = int(time.time() * 1000)
        record = KeyRecord(
            id=f"key_{secrets.token_hex(8)}",
            tenant=tenant,
            scope=scope,
            name=name,
            created_ms=now,
            expires_ms=now + ttl_s * 1000 if ttl_s else 0,
            hint=key[-4:],
        )
        digest = _digest(key)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(keys.API_KEYS, digest, json.dumps(asdict(record)))
            pipe.hset(keys.API_KEY_IDS, record.id, digest)
            await pipe.execute()
        return key, record

    async def list(self) -> list[KeyRecord]:
        assert self._r is not None
        stored = cast(dict[str, str], await self._r.hgetall(keys.API_KEYS))
        return sorted((_decode(v) for v in stored.values()), key=lambda r: r.created_ms)

    async def revoke(self, key_id: str) -> KeyRecord:
        assert self._r is not None
        digest = cast(str | None, await self._r.hget(keys.API_KEY_IDS, key_id))
        raw = digest and cast(str | None, await self._r.hget(keys.API_KEYS, digest))
        if not digest or not raw:
            raise NotFound(f"API key {key_id!r} not found")
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.API_KEYS, digest)
            pipe.hdel(keys.API_KEY_IDS, key_id)
            await pipe.execute()
        self._cache.pop(digest, None)
        return _decode(raw)


def _decode(raw: str) -> KeyRecord:
    fields = json.loads(raw)
    return KeyRecord(**{**fields, "scope": Scope(fields["scope"])})


def _digest(key: str) -> str:
    return hashlib.sha256(key.strip().encode()).hexdigest()
