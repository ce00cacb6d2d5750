"""A finished job's MP4 is deleted from S3 at the job's `expires_at`."""

from __future__ import annotations

import asyncio

import redis.asyncio as aredis

from scheduler.store import keys
from tests.conftest import S3Server, Stack, assert_eventually
from tests.test_rest_e2e import FPS, create, http_client, s3_keys, wait_final


async def test_mp4s_expire_with_their_jobs(
    stack: Stack, s3: S3Server, redis_client: aredis.Redis
) -> None:
    renderer = await stack.start_renderer(slots=2, fps=FPS)
    scheduler = await stack.start_scheduler(
        SPILLWAY_INHOUSE_RENDERERS=f"{renderer.address}=2", SPILLWAY_EXPIRY_INTERVAL_S="0.1"
    )
    base = await stack.start_gateway(scheduler)
    async with http_client(base) as http:
        videos = [await create(http, prompt=p) for p in ("a heron", "a kingfisher")]
        for video in videos:
            assert (await wait_final(http, video["id"])).event == "video.completed"
        done = [(await http.get(f"/v1/videos/{v['id']}")).json() for v in videos]

    index = dict(await redis_client.zrange(keys.OBJECT_EXPIRY, 0, -1, withscores=True))
    objects = await asyncio.to_thread(s3_keys, s3)
    assert sorted(index) == sorted(objects) and len(objects) == 2
    # Each object is due when its video says it expires.
    expires = sorted(v["expires_at"] for v in done)
    assert sorted(int(score // 1000) for score in index.values()) == expires

    # Time passes for the first video only: its object is due now.
    first_key = next(k for k in index if done[0]["id"] in k)
    await redis_client.zadd(keys.OBJECT_EXPIRY, {first_key: 0}, xx=True)

    async def first_deleted() -> None:
        assert await asyncio.to_thread(s3_keys, s3) == [k for k in objects if k != first_key]
        assert await redis_client.zrange(keys.OBJECT_EXPIRY, 0, -1) == [
            k for k in index if k != first_key
        ]

    await assert_eventually(first_deleted)

    # Redis forgets the job at the same time (its TTL, hastened here): the video and its
    # content are then 404, saying why that may be.
    await redis_client.pexpire(keys.job(done[0]["id"]), 1)
    async with http_client(base) as http:

        async def gone() -> None:
            for path in ("", "/content"):
                response = await http.get(f"/v1/videos/{done[0]['id']}{path}")
                assert response.status_code == 404, response.text
                error = response.json()["error"]
                assert error["code"] == "not_found" and "expired" in error["message"]

        await assert_eventually(gone)
        assert (await http.get(f"/v1/videos/{done[1]['id']}/content")).status_code in (200, 307)
