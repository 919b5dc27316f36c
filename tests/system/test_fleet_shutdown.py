"""Lifespan shutdown of a worker in a fleet is bounded whatever state Redis is in: down, restarted
with the worker not subscribed again yet, or back and subscribed. On asyncio and Trio, over the ASGI
interface, against a real redis-server stopped and restarted mid-run."""

from __future__ import annotations

import anyio
import coredis
import pytest

from asgi_mcp import McpApp, Tenants
from tests.kit.mcp_servers import factory_of
from tests.kit.memory import TokenClient, serving
from tests.kit.redis_server import RedisServer

pytestmark = pytest.mark.anyio

TOKEN = "sk-fleet-shutdown-alpha-4Rw8Jz"
# Shutdown waits for nothing in Redis: its bound is the app's own, not Redis's reconnects.
SHUTDOWN_BOUND = 5.0


def worker(url: str) -> McpApp:
    tenants = Tenants()
    tenants.add(TOKEN, factory_of("alpha"), label="alpha")
    return McpApp(tenants=tenants, redis_url=url, session_idle_timeout=60, json_response=True)


async def subscribed_again(url: str) -> None:
    """Observable only in Redis: polled, at most 10 s."""
    async with coredis.Redis.from_url(url, decode_responses=True) as redis:
        for _ in range(200):
            if await redis.pubsub_channels():
                return
            await anyio.sleep(0.05)
    raise AssertionError("the worker did not subscribe again")


@pytest.mark.parametrize("redis_state", ["down", "restarted", "back"])
async def test_shutdown_is_bounded_whatever_state_redis_is_in(redis_server: RedisServer, redis_state: str) -> None:
    with anyio.fail_after(30), anyio.CancelScope() as shutdown:  # its deadline set as shutdown starts
        async with serving(worker(redis_server.url)) as client:
            await TokenClient(client, TOKEN).open_session()  # the worker listens to the tenant's channel
            redis_server.stop()
            if redis_state != "down":
                redis_server.start()
            if redis_state == "back":
                await subscribed_again(redis_server.url)
            shutdown.deadline = anyio.current_time() + SHUTDOWN_BOUND
    assert not shutdown.cancelled_caught, f"shutdown took more than {SHUTDOWN_BOUND} s"
