"""A replica killed mid-delivery: another replica delivers the same event."""

from __future__ import annotations

import json

import grpc
import pytest
from spillway.v1 import webhooks_pb2 as pb
from spillway.v1 import webhooks_pb2_grpc

from tests.conftest import WebhookReceiver
from tests.faults.harness import AUTH, Fleet, eventually

pytestmark = pytest.mark.faults

# A claimed delivery is the claimer's for 2 x timeout + 5 s: then another replica may
# send it again.
TIMEOUT_S = 2


@pytest.mark.timeout(120)
async def test_a_replica_killed_mid_delivery_leaves_it_to_another(
    fleet: Fleet, receiver: WebhookReceiver
) -> None:
    """kill -9 the replica while the receiver holds its request: the other replica
    sends the same event (same webhook-id) once the claim lapses."""
    await fleet.start_renderers(1, slots=2, fps=8)
    env = {
        "SPILLWAY_WEBHOOK_ALLOW_LOCAL": "1",
        "SPILLWAY_WEBHOOK_TIMEOUT_S": str(TIMEOUT_S),
        "SPILLWAY_WEBHOOK_POLL_S": "0.1",
    }
    (first,) = await fleet.start_replicas(1, **env)
    async with grpc.aio.insecure_channel(first.address) as channel:
        await webhooks_pb2_grpc.WebhooksStub(channel).CreateWebhookEndpoint(
            pb.CreateWebhookEndpointRequest(
                name="hook", url=receiver.url, event_types=["video.completed"]
            ),
            metadata=AUTH,
            timeout=10,
        )
    receiver.hold = True
    client = fleet.client()
    submitted = await client.submit(1)
    assert not submitted.errors, submitted.errors
    await client.wait_terminal(submitted.ids, within=60)
    assert await client.statuses(submitted.ids) == ["completed"]

    await eventually(lambda: len(receiver.received) == 1, within=20, what="the first send")
    (second,) = await fleet.start_replicas(1, **env)
    first.kill()
    receiver.hold = False
    receiver.released.set()

    await eventually(
        lambda: len(receiver.received) == 2, within=4 * TIMEOUT_S + 20, what="the resend"
    )
    held, resent = receiver.received
    assert held.headers["webhook-id"] == resent.headers["webhook-id"]
    assert held.body == resent.body
    event = json.loads(resent.body)
    assert (event["type"], event["data"]["id"]) == ("video.completed", submitted.ids[0])
    print(f"\nwebhook resent by {second.name} after {first.name} was killed mid-delivery")
