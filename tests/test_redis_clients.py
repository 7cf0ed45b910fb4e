"""Each event loop has one Redis client per URL, closed by close_redis_clients()."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from jobs_app.redis_clients import close_redis_clients, lua_script, redis_client

pytestmark = pytest.mark.redis
REDIS_URL = "redis://127.0.0.1:6379/0"
OTHER_URL = "redis://127.0.0.1:6379/1"


async def test_a_loop_gets_one_client_per_url_and_another_loop_its_own():
    client = redis_client(REDIS_URL)
    assert redis_client(REDIS_URL) is client
    assert redis_client(OTHER_URL) is not client

    async def in_its_own_loop() -> int:
        other = redis_client(REDIS_URL)
        await close_redis_clients()
        return id(other)

    assert await asyncio.to_thread(asyncio.run, in_its_own_loop()) != id(client)
    assert redis_client(REDIS_URL) is client  # the other loop's close left ours alone
    await close_redis_clients()


async def test_close_redis_clients_disconnects_and_the_next_call_opens_a_new_client():
    client = redis_client(REDIS_URL)
    connection_id = await client.client_id()
    await close_redis_clients()

    fresh = redis_client(REDIS_URL)
    assert fresh is not client
    for _ in range(50):  # Redis drops the closed connection on its next event-loop turn
        if not await fresh.client_list(client_id=[connection_id]):
            break
        await asyncio.sleep(0.02)
    assert await fresh.client_list(client_id=[connection_id]) == []
    await close_redis_clients()


async def test_a_script_runs_on_the_client_it_is_given_and_replies_are_str():
    # A source Redis has never seen, so the first call also takes the NOSCRIPT path.
    script = lua_script(f"-- {uuid.uuid4().hex}\nreturn {{ARGV[1], #KEYS}}")
    assert await script(["k"], ["hello"], client=redis_client(REDIS_URL)) == ["hello", 1]
    await close_redis_clients()
