"""Closing a Redis store that subscribes (the message bus, the tenant store's change feed) is bounded
whatever state Redis is in: coredis's subscriber retries without end in a task of its own, and the
store ends those retries as it closes. A real redis-server stopped (and restarted) under them."""

from __future__ import annotations

import anyio
import pytest

from asgi_mcp._stores.redis import RedisMessageBus, RedisTenantStore
from tests.kit.redis_server import RedisServer

pytestmark = pytest.mark.anyio

# Nothing to wait for in Redis: far below coredis's backoff (up to 16 s) and any reconnect.
BOUND = 3.0
SECRET = b"closing-test-secret-0123456789abcdef"


def cut(redis_server: RedisServer, restart: bool) -> None:
    redis_server.stop()
    if restart:
        redis_server.start()


@pytest.mark.parametrize("restart", [False, True], ids=["down", "restarted"])
async def test_the_message_bus_closes_at_once_with_redis_down_or_restarting(
    redis_server: RedisServer, restart: bool
) -> None:
    with anyio.fail_after(20), anyio.CancelScope() as closing:  # its deadline set as closing starts
        async with RedisMessageBus(redis_server.url, prefix="closing") as bus:
            async with bus.subscribe("alpha", "c"):
                cut(redis_server, restart)
            closing.deadline = anyio.current_time() + BOUND
    assert not closing.cancelled_caught, f"closing took more than {BOUND} s"


@pytest.mark.parametrize("restart", [False, True], ids=["down", "restarted"])
async def test_the_tenant_change_feed_closes_at_once_with_redis_down_or_restarting(
    redis_server: RedisServer, restart: bool
) -> None:
    with anyio.fail_after(20), anyio.CancelScope() as closing:
        store = RedisTenantStore(redis_server.url, secret=SECRET, prefix="closing")
        async with store, store.changes():
            cut(redis_server, restart)
            closing.deadline = anyio.current_time() + BOUND
    assert not closing.cancelled_caught, f"closing took more than {BOUND} s"
