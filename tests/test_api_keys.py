"""API keys in Redis, with scopes: an operator creates and revokes them at run time, a
revoked or expired key is refused by every replica without a restart, and a tenant's key
gets PERMISSION_DENIED on operator calls."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from spillway.v1 import admin_pb2 as apb
from spillway.v1 import admin_pb2_grpc, scheduler_pb2_grpc
from spillway.v1 import scheduler_pb2 as pb

from tests.conftest import (
    API_KEY,
    AUTH,
    OPERATOR_AUTH,
    OPERATOR_KEY,
    Stack,
    assert_eventually,
    run_spillway,
)

SUBMIT = pb.SubmitRenderRequest(prompt="a key test", seconds=4, size="720x1280")


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


async def test_keys_created_revoked_and_expired_on_every_replica(stack: Stack) -> None:
    await stack.start_renderer()
    replicas = [await stack.start_scheduler(SPILLWAY_KEY_CACHE_S="0.2") for _ in range(2)]
    channels = [grpc.aio.insecure_channel(r.address) for r in replicas]
    try:
        admin = admin_pb2_grpc.AdminStub(channels[0])
        jobs = [scheduler_pb2_grpc.SchedulerStub(c) for c in channels]
        created = await admin.CreateApiKey(
            apb.CreateApiKeyRequest(tenant="initech", name="ci"), metadata=OPERATOR_AUTH
        )
        assert created.secret.startswith("sk-") and created.key.id.startswith("key_")
        assert created.key.hint == created.secret[-4:]
        # Known to both replicas at once: keys live in Redis.
        for stub in jobs:
            submitted = await stub.SubmitRender(SUBMIT, metadata=bearer(created.secret))
            assert submitted.job.id
        listed = await admin.ListApiKeys(apb.ListApiKeysRequest(), metadata=OPERATOR_AUTH)
        assert [(k.id, k.tenant, k.scope) for k in listed.keys] == [
            (created.key.id, "initech", apb.KEY_SCOPE_TENANT)
        ]
        assert created.secret not in str(listed)

        await admin.RevokeApiKey(apb.RevokeApiKeyRequest(id=created.key.id), metadata=OPERATOR_AUTH)

        async def code(stub: scheduler_pb2_grpc.SchedulerStub) -> grpc.StatusCode:
            try:
                await stub.SubmitRender(SUBMIT, metadata=bearer(created.secret))
            except grpc.aio.AioRpcError as refused:
                return refused.code()
            return grpc.StatusCode.OK

        async def refused_everywhere() -> None:
            assert [await code(stub) for stub in jobs] == [grpc.StatusCode.UNAUTHENTICATED] * 2

        await assert_eventually(refused_everywhere, within=5)

        short = await admin.CreateApiKey(
            apb.CreateApiKeyRequest(tenant="initech", ttl_seconds=1), metadata=OPERATOR_AUTH
        )
        assert (await jobs[1].SubmitRender(SUBMIT, metadata=bearer(short.secret))).job.id
        await asyncio.sleep(1.3)
        with pytest.raises(grpc.aio.AioRpcError) as expired:
            await jobs[1].SubmitRender(SUBMIT, metadata=bearer(short.secret))
        assert expired.value.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        for channel in channels:
            await channel.close()


async def test_a_tenant_key_is_refused_operator_calls(stack: Stack) -> None:
    await stack.start_renderer()
    scheduler = await stack.start_scheduler()
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        calls = [
            admin.CreateApiKey(apb.CreateApiKeyRequest(tenant="acme"), metadata=AUTH),
            admin.ListApiKeys(apb.ListApiKeysRequest(), metadata=AUTH),
            admin.RevokeApiKey(apb.RevokeApiKeyRequest(id="key_0"), metadata=AUTH),
            scheduler_pb2_grpc.SchedulerStub(channel).GetSpillover(
                pb.GetSpilloverRequest(), metadata=AUTH
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await call
            assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        # An operator key is a tenant's key too.
        submitted = await scheduler_pb2_grpc.SchedulerStub(channel).SubmitRender(
            SUBMIT, metadata=OPERATOR_AUTH
        )
        assert submitted.job.id
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await admin.CreateApiKey(apb.CreateApiKeyRequest(tenant="a b"), metadata=OPERATOR_AUTH)
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def keys_cli(address: str, key: str, *args: str) -> tuple[int, str, str]:
    code, out, err = await run_spillway(
        "keys", *args, "--addr", address, env={"SPILLWAY_API_KEY": key}
    )
    assert "Traceback" not in err, err
    return code, out, err


async def test_the_keys_cli(stack: Stack) -> None:
    await stack.start_renderer()
    scheduler = await stack.start_scheduler()
    address = scheduler.address
    code, out, _ = await keys_cli(address, OPERATOR_KEY, "create", "--tenant", "hooli", "--json")
    created = json.loads(out)
    assert code == 0 and created["key"]["tenant"] == "hooli"
    code, out, _ = await keys_cli(address, OPERATOR_KEY, "list")
    assert out.splitlines()[0].split()[:4] == ["id", "tenant", "scope", "name"]
    assert out.splitlines()[1].split()[:3] == [created["key"]["id"], "hooli", "tenant"]
    code, out, _ = await keys_cli(address, OPERATOR_KEY, "revoke", created["key"]["id"])
    assert (code, out.strip()) == (0, f"revoked {created['key']['id']}")
    code, _, err = await keys_cli(address, OPERATOR_KEY, "revoke", created["key"]["id"])
    assert code == 3 and err.startswith("spillway keys revoke: NOT_FOUND")
    code, _, err = await keys_cli(address, API_KEY, "list")
    assert code == 1 and "PERMISSION_DENIED" in err and len(err.splitlines()) == 1
    code, _, err = await keys_cli("127.0.0.1:1", OPERATOR_KEY, "list")
    assert code == 4 and err.startswith("spillway keys list: cannot reach")
