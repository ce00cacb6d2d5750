"""Per-tenant quotas: a tenant over its share of the queue, or submitting faster than
its rate, is refused with 429 and Retry-After, and nothing is written; other tenants
are not affected, and an idempotent retry of an accepted submit is never refused."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import OTHER_API_KEY, Stack
from tests.test_rest_e2e import FPS, VALID, bearer, http_client


def refused_429(response: httpx.Response, code: str) -> dict[str, Any]:
    """A 429 in the OpenAI shape (the official client's RateLimitError), with its code."""
    assert response.status_code == 429, response.text
    error: dict[str, Any] = response.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", code)
    return error


async def drained_gateway(stack: Stack, **env: str) -> str:
    renderer = await stack.start_renderer(slots=2, fps=FPS)
    scheduler = await stack.start_scheduler(
        SPILLWAY_INHOUSE_RENDERERS=f"{renderer.address}=2", **env
    )
    await scheduler.fleet.edit("drain", renderer.address)
    return await stack.start_gateway(scheduler)


async def test_a_tenant_over_its_queue_share_is_refused(stack: Stack) -> None:
    base = await drained_gateway(stack, SPILLWAY_TENANT_MAX_QUEUED="3")
    async with http_client(base) as http:
        accepted = []
        for i in range(3):
            response = await http.post(
                "/v1/videos", json=VALID, headers={"idempotency-key": f"k{i}"}
            )
            assert response.status_code == 200, response.text
            accepted.append(response.json()["id"])
        refused = await http.post("/v1/videos", json=VALID)
        error = refused_429(refused, "tenant_queue_full")
        assert "your share" in error["message"]
        assert int(refused.headers["retry-after"]) >= 1
        # A retry of an accepted submit answers as before.
        again = await http.post("/v1/videos", json=VALID, headers={"idempotency-key": "k0"})
        assert (again.status_code, again.json()["id"]) == (200, accepted[0])
        listed = (await http.get("/v1/videos")).json()["data"]
        assert sorted(v["id"] for v in listed) == sorted(accepted)
        other = await http.post("/v1/videos", json=VALID, headers=bearer(OTHER_API_KEY))
        assert other.status_code == 200, other.text


async def test_a_tenant_over_its_rate_waits_retry_after(stack: Stack) -> None:
    base = await drained_gateway(
        stack, SPILLWAY_TENANT_SUBMIT_RATE_PER_S="1", SPILLWAY_TENANT_SUBMIT_BURST="2"
    )
    async with http_client(base) as http:
        for _ in range(2):
            assert (await http.post("/v1/videos", json=VALID)).status_code == 200
        refused = await http.post("/v1/videos", json=VALID)
        refused_429(refused, "rate_limited")
        wait_s = int(refused.headers["retry-after"])
        assert wait_s >= 1
        other = await http.post("/v1/videos", json=VALID, headers=bearer(OTHER_API_KEY))
        assert other.status_code == 200
        await asyncio.sleep(wait_s)
        assert (await http.post("/v1/videos", json=VALID)).status_code == 200
        assert len((await http.get("/v1/videos")).json()["data"]) == 3
