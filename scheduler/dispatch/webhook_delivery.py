"""Sends webhook deliveries: every replica claims what is due from the Redis outbox and
POSTs it, signed per Standard Webhooks.

At least once: a delivery leaves the outbox only when the receiver answered 2xx (or 410,
which disables the endpoint), or its retry window closed. A replica that dies mid-send
leaves its claim to lapse, and another replica sends the same event again with the same
`webhook-id`, which receivers de-duplicate on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from datetime import UTC, datetime

import httpx
from standardwebhooks.webhooks import Webhook

from scheduler.config import DeliveryConfig
from scheduler.store.webhooks import Claimed, Targets, WebhookStore
from scheduler.tasks import cancel_and_wait, cancel_requested
from scheduler.telemetry.metrics import SchedulerMetrics
from scheduler.telemetry.outage import Outage

log = logging.getLogger(__name__)

_USER_AGENT = "spillway-webhooks/1"
_MAX_ERROR = 300


def backoff_s(config: DeliveryConfig, attempt: int) -> float:
    """Exponential with equal jitter: replicas and endpoints retrying together spread
    out, and no retry comes sooner than half its step."""
    step: float = min(config.backoff_max_s, config.backoff_s * 2 ** min(attempt - 1, 30))
    return step / 2 + random.uniform(0, step / 2)


class Sender:
    """Signs and POSTs one event body. One HTTP client per replica; redirects are never
    followed (a redirect could lead past the target check)."""

    def __init__(self, targets: Targets, timeout_s: float) -> None:
        self._targets = targets
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": _USER_AGENT},
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def post(self, url: str, event_id: str, body: str, secrets: list[str]) -> int:
        """The receiver's status. Raises `Refused` for a target that must not be called,
        httpx errors for one that could not be reached."""
        if refusal := await self._targets.refusal(url):
            raise Refused(refusal)
        now = datetime.now(UTC)
        signature = " ".join(Webhook(s).sign(event_id, now, body) for s in secrets)
        response = await self._http.post(
            url,
            content=body.encode(),
            headers={
                "content-type": "application/json",
                "webhook-id": event_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signature,
            },
        )
        return response.status_code


class Refused(Exception):
    """The target resolves where webhooks may not go."""


class WebhookDelivery:
    """Owned, started and stopped by the scheduler server."""

    def __init__(
        self,
        store: WebhookStore,
        sender: Sender,
        config: DeliveryConfig,
        metrics: SchedulerMetrics,
    ) -> None:
        self._store = store
        self._sender = sender
        self._config = config
        self._metrics = metrics
        self._in_flight: dict[str, int] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._outage = Outage("webhook delivery", log)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-delivery")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        # Unfinished sends are claimed again by a replica once their claim lapses.
        for send in list(self._sends):
            await cancel_and_wait(send)
        await self._sender.close()

    async def _run(self) -> None:
        while True:
            claimed: list[Claimed] = []
            try:
                free = self._config.concurrency - sum(self._in_flight.values())
                if free > 0:
                    claimed = await self._store.claim(
                        free,
                        self._config.visibility_s,
                        self._config.per_endpoint,
                        self._in_flight,
                    )
                self._outage.ok()
            except Exception as exc:
                if cancel_requested():
                    raise asyncio.CancelledError from exc
                self._outage.failed(exc)
            for delivery in claimed:
                self._start_send(delivery)
            if not claimed:
                await asyncio.sleep(self._config.poll_s)

    def _start_send(self, delivery: Claimed) -> None:
        endpoint = delivery.endpoint_id
        self._in_flight[endpoint] = self._in_flight.get(endpoint, 0) + 1
        task = asyncio.create_task(self._send(delivery), name=f"webhook-{delivery.event_id}")
        self._sends.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._sends.discard(t)
            left = self._in_flight[endpoint] - 1
            if left:
                self._in_flight[endpoint] = left
            else:
                del self._in_flight[endpoint]

        task.add_done_callback(done)

    async def _send(self, delivery: Claimed) -> None:
        started = time.monotonic()
        status, error = 0, ""
        try:
            status = await self._sender.post(
                delivery.url, delivery.event_id, delivery.body, delivery.secrets
            )
        except Refused as exc:
            outcome, error = "dropped", f"target refused: {exc}"
        except httpx.HTTPError as exc:
            outcome, error = "retry", f"{type(exc).__name__}: {exc}"[:_MAX_ERROR]
        else:
            if 200 <= status < 300:
                outcome = "delivered"
            elif status == 410:
                outcome = "disabled"
            else:
                outcome, error = "retry", f"the receiver answered {status}"
        try:
            logged = await self._store.result(
                delivery,
                outcome,
                status_code=status,
                error=error,
                retry_in_s=backoff_s(self._config, delivery.attempt),
                retry_window_s=self._config.retry_window_s,
            )
        except Exception as exc:
            # The claim lapses and the delivery is sent again: at least once.
            if cancel_requested():
                raise asyncio.CancelledError from exc
            self._outage.failed(exc)
            return
        self._metrics.webhook_delivery(logged, time.monotonic() - started)
        level = logging.INFO if logged == "delivered" else logging.WARNING
        log.log(
            level,
            "webhook %s to endpoint %s, attempt %d: %s%s",
            delivery.event_id,
            delivery.endpoint_id,
            delivery.attempt,
            logged,
            f" ({error})" if error else "",
        )


def sample_event(event_type: str) -> tuple[str, str]:
    """A test event's id and body: the shape of a real one, about a video that does not
    exist."""
    now = int(time.time())
    event_id = f"evt_test_{now}{random.randrange(10**6):06d}"
    status = event_type.removeprefix("video.")
    data: dict[str, object] = {"id": "video_test", "object": "video", "status": status}
    if status == "failed":
        data["error"] = {"code": "test", "message": "a test event"}
    body = {"id": event_id, "object": "event", "type": event_type, "created_at": now}
    return event_id, json.dumps(body | {"data": data}, separators=(",", ":"))
