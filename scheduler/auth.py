"""API keys to tenants. The gateway forwards the caller's bearer key as gRPC metadata."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from scheduler.errors import Unauthenticated


class ApiKeys:
    def __init__(self, keys: Mapping[str, str]) -> None:
        # Looked up by digest so that lookup time says nothing about a key's prefix.
        self._tenants = {_digest(key): tenant for key, tenant in keys.items()}

    def tenant(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
        for name, value in metadata or ():
            if name == "authorization" and isinstance(value, str):
                scheme, _, key = value.partition(" ")
                if scheme.lower() == "bearer" and (tenant := self._tenants.get(_digest(key))):
                    return tenant
                raise Unauthenticated("invalid API key")
        raise Unauthenticated("missing API key: send `authorization: Bearer <key>`")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.strip().encode()).digest()
