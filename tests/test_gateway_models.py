"""What the official client's callers reach for besides videos: `models.list()`, the
`x-request-id` of each response, and the API's docs page."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from tests.conftest import API_KEY, Stack
from tests.test_rest_e2e import Gateway, start_gateway


@pytest.fixture
async def gateway(stack: Stack) -> AsyncIterator[Gateway]:
    gw = await start_gateway(stack, SPILLWAY_MODELS="sora-2-pro,sora-2")
    async with gw.http:
        yield gw


async def test_official_client_lists_and_retrieves_models(gateway: Gateway) -> None:
    async with openai.AsyncOpenAI(base_url=f"{gateway.base}/v1", api_key=API_KEY) as client:
        models = [m.id async for m in client.models.list()]
        assert models == ["sora-2-pro", "sora-2"]
        assert (await client.models.retrieve("sora-2")).owned_by == "spillway"
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("sora-3")


async def test_every_response_has_a_request_id(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.base) as http:
        ok = await http.get("/v1/models", headers={"authorization": f"Bearer {API_KEY}"})
        refused = await http.get("/v1/videos")
        echoed = await http.get("/healthz", headers={"x-request-id": "lb-7f3a.2"})
        unsafe = await http.get("/healthz", headers={"x-request-id": "a b\tc"})
    ids = [r.headers.get("x-request-id", "") for r in (ok, refused)]
    assert refused.status_code == 401
    assert all(i.startswith("req_") for i in ids) and ids[0] != ids[1]
    assert echoed.headers["x-request-id"] == "lb-7f3a.2"
    assert unsafe.headers["x-request-id"].startswith("req_")


async def test_docs_page_is_served(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.base) as http:
        docs = await http.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text
