"""Webhooks end to end: endpoints managed with the official `openai` client, deliveries
to a real receiver (uvicorn on a free port) verified with that client's
`webhooks.verify_signature`, retries through a receiver that is down, 410, and the
target guard."""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import openai
import pytest

from tests.conftest import (
    API_KEY,
    OTHER_API_KEY,
    Stack,
    WebhookReceiver,
    assert_eventually,
    run_spillway,
)
from tests.test_rest_e2e import FPS, Gateway, assert_openai_error, create, http_client, wait_final

LOCAL = {
    "SPILLWAY_WEBHOOK_ALLOW_LOCAL": "1",
    "SPILLWAY_WEBHOOK_BACKOFF_S": "0.2",
    "SPILLWAY_WEBHOOK_BACKOFF_MAX_S": "0.5",
    "SPILLWAY_WEBHOOK_POLL_S": "0.05",
    "SPILLWAY_WEBHOOK_TIMEOUT_S": "2",
}
EVENTS = ["video.completed", "video.failed"]


@pytest.fixture
async def drained(stack: Stack) -> AsyncIterator[tuple[Gateway, str]]:
    """A gateway allowing loopback webhooks, whose only renderer is drained: a job with
    a short deadline fails `expired`, and re-adding the renderer lets others complete."""
    renderer = await stack.start_renderer(slots=2, fps=FPS)
    scheduler = await stack.start_scheduler(
        SPILLWAY_INHOUSE_RENDERERS=f"{renderer.address}=2", **LOCAL
    )
    await scheduler.fleet.edit("drain", renderer.address)
    base = await stack.start_gateway(scheduler)
    async with http_client(base) as http:
        yield Gateway(base, scheduler, http), renderer.address


async def until(predicate: Callable[[], bool | Awaitable[bool]], within: float = 15.0) -> None:
    async def check() -> None:
        result = predicate()
        assert await result if inspect.isawaitable(result) else result

    await assert_eventually(check, within=within)


def client(gateway: Gateway, key: str = API_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.base}/v1", api_key=key, max_retries=0)


def events_for(receiver: WebhookReceiver, video_id: str) -> list[dict[str, Any]]:
    found = [json.loads(r.body) for r in receiver.received]
    return [e for e in found if e["data"]["id"] == video_id]


async def test_endpoints_through_the_official_client(
    drained: tuple[Gateway, str], receiver: WebhookReceiver
) -> None:
    gateway, _ = drained
    async with client(gateway) as oai, client(gateway, OTHER_API_KEY) as other:
        assert (await oai.webhooks.event_types.list()).data == EVENTS
        created = await oai.webhooks.create(
            name="renders", url=receiver.url, event_types=["video.completed"]
        )
        assert created.id.startswith("we_") and created.object == "webhook_endpoint"
        assert created.signing_secret.startswith("whsec_")
        assert created.signing_secret_hint == f"whsec_...{created.signing_secret[-4:]}"
        assert created.event_types == ["video.completed"]

        fetched = await oai.webhooks.retrieve(created.id)
        assert fetched.url == receiver.url and not hasattr(fetched, "signing_secret")
        assert [e.id async for e in oai.webhooks.list()] == [created.id]
        # Another tenant sees none of it.
        assert [e.id async for e in other.webhooks.list()] == []
        with pytest.raises(openai.NotFoundError):
            await other.webhooks.retrieve(created.id)

        updated = await oai.webhooks.update(created.id, name="all video events", event_types=EVENTS)
        assert (updated.name, updated.event_types) == ("all video events", EVENTS)

        # A test event arrives signed with the current secret.
        result = await oai.webhooks.test(created.id, event_type="video.failed")
        assert (result.status_code, result.event_type) == (200, "video.failed")
        sample = receiver.received[-1]
        oai.webhooks.verify_signature(sample.body, sample.headers, secret=created.signing_secret)
        assert json.loads(sample.body)["type"] == "video.failed"

        # Rotation: both secrets verify during the grace period; without it only the new.
        rotated = await oai.webhooks.rotate_secret(created.id)
        assert rotated.signing_secret != created.signing_secret
        await oai.webhooks.test(created.id, event_type="video.completed")
        signed = receiver.received[-1]
        for secret in (created.signing_secret, rotated.signing_secret):
            oai.webhooks.verify_signature(signed.body, signed.headers, secret=secret)
        fresh = await oai.webhooks.rotate_secret(
            created.id, keep_old_secret_active_for_24_hours=False
        )
        await oai.webhooks.test(created.id, event_type="video.completed")
        signed = receiver.received[-1]
        oai.webhooks.verify_signature(signed.body, signed.headers, secret=fresh.signing_secret)
        with pytest.raises(openai.InvalidWebhookSignatureError):
            oai.webhooks.verify_signature(
                signed.body, signed.headers, secret=rotated.signing_secret
            )

        with pytest.raises(openai.BadRequestError) as refused:
            await oai.webhooks.create(name="x", url=receiver.url, event_types=["batch.completed"])
        assert refused.value.code == "invalid_value"

        deleted = await oai.webhooks.delete(created.id)
        assert deleted.deleted and deleted.object == "webhook_endpoint.deleted"
        with pytest.raises(openai.NotFoundError):
            await oai.webhooks.retrieve(created.id)


async def test_completed_and_failed_each_delivered_once(
    drained: tuple[Gateway, str], receiver: WebhookReceiver
) -> None:
    gateway, renderer = drained
    async with client(gateway) as oai:
        endpoint = await oai.webhooks.create(name="all", url=receiver.url, event_types=EVENTS)
        late = await create(gateway.http, prompt="too late", deadline_seconds=1)
        assert (await wait_final(gateway.http, late["id"])).event == "video.failed"
        await gateway.scheduler.fleet.edit("add", renderer, 2)
        done = await create(gateway.http, prompt="a harbour")
        assert (await wait_final(gateway.http, done["id"])).event == "video.completed"

        await until(lambda: len(receiver.received) == 2)
        for request in receiver.received:
            # Verified by the official client, not by our code.
            oai.webhooks.verify_signature(
                request.body, request.headers, secret=endpoint.signing_secret
            )
            event = json.loads(request.body)
            assert request.headers["webhook-id"] == event["id"]
            assert event["object"] == "event" and event["id"].startswith("evt_")
        (failed,) = events_for(receiver, late["id"])
        assert failed["type"] == "video.failed"
        assert failed["data"]["error"]["code"] == "expired"
        (completed,) = events_for(receiver, done["id"])
        assert completed["type"] == "video.completed"

    deliveries = (await gateway.http.get(f"/v1/webhook_endpoints/{endpoint.id}/deliveries")).json()
    assert sorted((d["video_id"], d["outcome"]) for d in deliveries["data"]) == sorted(
        [(late["id"], "delivered"), (done["id"], "delivered")]
    )


async def test_a_receiver_down_for_a_while_gets_the_event_after(
    drained: tuple[Gateway, str], receiver: WebhookReceiver
) -> None:
    gateway, renderer = drained
    async with client(gateway) as oai:
        endpoint = await oai.webhooks.create(
            name="flaky", url=receiver.url, event_types=["video.completed"]
        )
    await receiver.stop()  # the port now refuses connections
    await gateway.scheduler.fleet.edit("add", renderer, 2)
    video = await create(gateway.http)
    assert (await wait_final(gateway.http, video["id"])).event == "video.completed"

    log = f"/v1/webhook_endpoints/{endpoint.id}/deliveries"

    async def retried() -> bool:
        data = (await gateway.http.get(log)).json()["data"]
        return sum(d["outcome"] == "retrying" for d in data) >= 2

    await until(retried)
    receiver.status = 503  # up, but failing
    await receiver.start()
    await until(lambda: len(receiver.received) >= 1)
    receiver.status = 200

    async def delivered() -> bool:
        data = (await gateway.http.get(log)).json()["data"]
        return data[0]["outcome"] == "delivered"

    await until(delivered)
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert len(ids) == 1, "every retry carries the same webhook-id"
    data = (await gateway.http.get(log)).json()["data"]
    assert data[0]["attempt"] == len(data) and data[0]["status_code"] == 200
    assert any(d["status_code"] == 503 for d in data)
    assert any(d["status_code"] is None and "Connect" in d["error"] for d in data)


async def test_410_disables_the_endpoint(
    drained: tuple[Gateway, str], receiver: WebhookReceiver
) -> None:
    gateway, renderer = drained
    receiver.status = 410
    async with client(gateway) as oai:
        endpoint = await oai.webhooks.create(
            name="gone", url=receiver.url, event_types=["video.completed"]
        )
        await gateway.scheduler.fleet.edit("add", renderer, 2)
        first = await create(gateway.http, prompt="one")
        assert (await wait_final(gateway.http, first["id"])).event == "video.completed"
        await until(lambda: len(receiver.received) == 1)

        async def disabled() -> bool:
            found = await oai.webhooks.retrieve(endpoint.id)
            return bool((found.model_extra or {}).get("disabled_reason"))

        await until(disabled)
        second = await create(gateway.http, prompt="two")
        assert (await wait_final(gateway.http, second["id"])).event == "video.completed"
        # An update re-enables it; the second video's event was not queued meanwhile.
        await oai.webhooks.update(endpoint.id, name="back")
        receiver.status = 200
        third = await create(gateway.http, prompt="three")
        assert (await wait_final(gateway.http, third["id"])).event == "video.completed"
        await until(lambda: len(receiver.received) == 2)
    assert [e["data"]["id"] for e in map(json.loads, (r.body for r in receiver.received))] == [
        first["id"],
        third["id"],
    ]


async def test_loopback_and_plain_http_are_refused_by_default(stack: Stack) -> None:
    renderer = await stack.start_renderer(slots=1, fps=FPS)
    scheduler = await stack.start_scheduler(SPILLWAY_INHOUSE_RENDERERS=f"{renderer.address}=1")
    base = await stack.start_gateway(scheduler)
    async with http_client(base) as http:
        for url, says in [
            ("http://example.com/hook", "https"),
            ("https://127.0.0.1:9/hook", "not a public address"),
            ("https://10.1.2.3/hook", "not a public address"),
            ("https://[::1]/hook", "not a public address"),
            ("https://user:pw@example.com/hook", "credentials"),
        ]:
            response = await http.post(
                "/v1/webhook_endpoints",
                json={"name": "n", "url": url, "event_types": ["video.completed"]},
            )
            assert_openai_error(response, 400, param="url")
            assert says in response.json()["error"]["message"], response.json()
        unknown = await http.get("/v1/webhook_endpoints/we_" + "0" * 32)
        assert_openai_error(unknown, 404, param=None, code="not_found")
        listed = await http.get("/v1/webhook_endpoints")
        assert listed.json() == {
            "object": "list",
            "data": [],
            "first_id": None,
            "last_id": None,
            "has_more": False,
        }


async def spillway(base: str, *args: str) -> tuple[int, str, str]:
    env = {"SPILLWAY_BASE_URL": f"{base}/v1", "SPILLWAY_API_KEY": API_KEY}
    code, out, err = await run_spillway(*args, env=env)
    assert "Traceback" not in err, err
    return code, out, err


async def test_the_webhooks_cli(drained: tuple[Gateway, str], receiver: WebhookReceiver) -> None:
    gateway, _ = drained
    code, out, _ = await spillway(
        gateway.base, "webhooks", "create", "--name", "ops", "--url", receiver.url, "--json"
    )
    created = json.loads(out)
    assert code == 0 and created["event_types"] == EVENTS and created["signing_secret"]

    code, out, _ = await spillway(gateway.base, "webhooks", "list")
    assert out.splitlines()[0].split() == ["id", "name", "url", "events", "state"]
    assert out.splitlines()[1].split()[:2] == [created["id"], "ops"]

    code, out, _ = await spillway(
        gateway.base, "webhooks", "test", created["id"], "--event", "video.failed"
    )
    assert (code, out.strip()) == (0, "video.failed -> HTTP 200")
    async with client(gateway) as oai:
        request = receiver.received[-1]
        oai.webhooks.verify_signature(
            request.body, request.headers, secret=created["signing_secret"]
        )

    receiver.status = 500
    code, out, _ = await spillway(gateway.base, "webhooks", "test", created["id"])
    assert (code, out.strip()) == (1, "video.completed -> HTTP 500")

    code, out, _ = await spillway(gateway.base, "webhooks", "rotate-secret", created["id"])
    assert code == 0 and "whsec_" in out and "shown only now" in out

    code, _, err = await spillway(gateway.base, "webhooks", "get", "we_" + "0" * 32)
    assert code == 3 and err.startswith("spillway webhooks get: HTTP 404")
    code, _, err = await spillway(gateway.base, "webhooks", "create", "--url", receiver.url)
    assert code == 2 and "--name" in err

    code, out, _ = await spillway(gateway.base, "webhooks", "delete", created["id"])
    assert (code, out.strip()) == (0, f"deleted {created['id']}")
