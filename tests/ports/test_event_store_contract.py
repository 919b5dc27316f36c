"""The EventStore contract (event_store_contract.py) for the in-memory store and the Redis store.

The Redis store runs against a real redis-server (tests/kit/redis_server.py) on asyncio and Trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mcp.server.streamable_http import EventStore

from asgi_mcp import InMemoryEventStore
from tests.kit.redis_server import RedisServer

from .event_store_contract import EventStoreContract, StoreFactory


class TestInMemoryEventStore(EventStoreContract):
    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        shared: list[InMemoryEventStore] = []

        @asynccontextmanager
        async def open_store(**bounds: Any) -> AsyncIterator[EventStore]:
            # One process, one store: every "worker" handle is the same object.
            if not shared:
                shared.append(InMemoryEventStore(**bounds))
            yield shared[0]

        return open_store


class TestRedisEventStore(EventStoreContract):
    @pytest.fixture
    def store_factory(self, shared_redis: RedisServer, redis_prefix: str) -> StoreFactory:
        from asgi_mcp import RedisEventStore

        @asynccontextmanager
        async def open_store(**bounds: Any) -> AsyncIterator[EventStore]:
            # A client of its own per handle, as another worker would have.
            async with RedisEventStore(shared_redis.url, prefix=redis_prefix, **bounds) as store:
                yield store

        return open_store
