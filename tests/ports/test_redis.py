"""The Redis implementations against the port contracts, on asyncio and Trio, against a real redis-server.

Each handle a contract test opens is a client of its own on the same server and key prefix, as another
worker's would be; every test has a prefix of its own (`redis_prefix`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

import anyio
import pytest

from asgi_mcp import (
    FleetRoster,
    MessageBus,
    RateLimitStore,
    SessionDirectory,
    SessionSlots,
    StoreUnavailable,
    TenantStore,
)
from tests.kit.redis_server import RedisServer

from ._contract import MAX_BUFFERED, StoreFactory
from .fleet_roster_contract import FleetRosterContract
from .message_bus_contract import MessageBusContract
from .rate_limit_contract import RateLimitStoreContract
from .session_directory_contract import SessionDirectoryContract, session
from .session_slots_contract import SLOT_TTL, SessionSlotsContract
from .tenant_store_contract import TenantStoreContract

SECRET = b"k" * 32


class TestRedisTenantStore(TenantStoreContract):
    @pytest.fixture
    def store_factory(self, shared_redis: RedisServer, redis_prefix: str) -> StoreFactory[TenantStore]:
        from asgi_mcp._stores.redis import RedisTenantStore

        @asynccontextmanager
        async def handle() -> AsyncGenerator[TenantStore, None]:
            async with RedisTenantStore(
                shared_redis.url, secret=SECRET, prefix=redis_prefix, max_buffered=MAX_BUFFERED
            ) as store:
                yield store

        return handle


class TestRedisSessionDirectory(SessionDirectoryContract):
    @pytest.fixture
    def store_factory(self, shared_redis: RedisServer, redis_prefix: str) -> StoreFactory[SessionDirectory]:
        from asgi_mcp._stores.redis import RedisSessionDirectory

        @asynccontextmanager
        async def handle() -> AsyncGenerator[SessionDirectory, None]:
            async with RedisSessionDirectory(shared_redis.url, prefix=redis_prefix) as directory:
                yield directory

        return handle


class TestRedisFleetRoster(FleetRosterContract):
    @pytest.fixture
    def store_factory(self, shared_redis: RedisServer, redis_prefix: str) -> StoreFactory[FleetRoster]:
        from asgi_mcp._stores.redis import RedisFleetRoster

        @asynccontextmanager
        async def handle() -> AsyncGenerator[FleetRoster, None]:
            async with RedisFleetRoster(shared_redis.url, prefix=redis_prefix) as roster:
                yield roster

        return handle


class TestRedisMessageBus(MessageBusContract):
    @pytest.fixture
    def store_factory(self, shared_redis: RedisServer, redis_prefix: str) -> StoreFactory[MessageBus]:
        from asgi_mcp._stores.redis import RedisMessageBus

        @asynccontextmanager
        async def handle() -> AsyncGenerator[MessageBus, None]:
            async with RedisMessageBus(shared_redis.url, prefix=redis_prefix, max_buffered=MAX_BUFFERED) as bus:
                yield bus

        return handle


class TestRedisRateLimitStore(RateLimitStoreContract):
    @pytest.fixture
    async def store(self, shared_redis: RedisServer, redis_prefix: str) -> AsyncGenerator[RateLimitStore, None]:
        from asgi_mcp._stores.redis import RedisRateLimitStore

        async with RedisRateLimitStore(shared_redis.url, prefix=redis_prefix) as store:
            yield store


class TestRedisSessionSlots(SessionSlotsContract):
    @pytest.fixture
    def store_factory(self, shared_redis: RedisServer, redis_prefix: str) -> StoreFactory[SessionSlots]:
        from asgi_mcp._stores.redis import RedisSessionSlots

        @asynccontextmanager
        async def handle() -> AsyncGenerator[SessionSlots, None]:
            async with RedisSessionSlots(shared_redis.url, prefix=redis_prefix, ttl=SLOT_TTL) as slots:
                yield slots

        return handle


@pytest.mark.anyio
async def test_a_tenants_buckets_are_one_hash_that_expires_when_full_again_and_forget_deletes_it(
    shared_redis: RedisServer, redis_prefix: str
) -> None:
    from asgi_mcp import Rate
    from asgi_mcp._stores.redis import RedisRateLimitStore

    with anyio.fail_after(10):
        async with RedisRateLimitStore(shared_redis.url, prefix=redis_prefix) as store:
            client = store.connection.client
            await store.take("alpha", "requests", Rate(burst=10, per_second=1.0), 1_000.0)
            await store.take("alpha", "tools/call", Rate(burst=2, per_second=0.01), 1_000.0)
            key = f"{redis_prefix}:rl:alpha"
            assert set(await client.hkeys(key)) == {"requests", "tools/call"}
            # The slower bucket needs 100 s to be full again; the hash lives exactly that long.
            assert 99_000 < await client.pttl(key) <= 100_000
            await store.forget("alpha")
            assert await client.exists([key]) == 0


@pytest.mark.anyio
async def test_a_rate_limit_take_is_unavailable_within_its_timeout_when_redis_stops(
    redis_server: RedisServer,
) -> None:
    from asgi_mcp import Rate
    from asgi_mcp._stores.redis import RedisRateLimitStore

    async with RedisRateLimitStore(redis_server.url, timeout=1.0) as store:
        with anyio.fail_after(10):
            assert await store.take("alpha", "requests", Rate(1, 1.0), 1.0) == 0.0
        redis_server.stop()
        with anyio.fail_after(2), pytest.raises(StoreUnavailable):
            await store.take("alpha", "requests", Rate(1, 1.0), 2.0)
        redis_server.start()
        with anyio.fail_after(10):
            assert await store.take("alpha", "requests", Rate(1, 1.0), 3.0) == 0.0


@pytest.mark.anyio
async def test_session_records_are_hashes_with_a_ttl_and_expired_ones_leave_the_tenant(
    shared_redis: RedisServer, redis_prefix: str
) -> None:
    from asgi_mcp._stores.redis import RedisSessionDirectory

    with anyio.fail_after(10):
        async with RedisSessionDirectory(shared_redis.url, prefix=redis_prefix, ttl=60) as directory:
            client = directory.connection.client
            await directory.record(session("s-1"))
            await directory.record(session("s-2"))
            key = f"{redis_prefix}:sess:s-1"
            assert await client.type(key) == "hash"
            assert 50_000 < await client.pttl(key) <= 60_000
            await client.pexpire(key, 1_000)
            assert await directory.touch("s-1", 1_900_000_000.0)
            assert await client.pttl(key) > 50_000  # a touch is activity
            await client.delete([key])  # as if it expired
            assert await directory.sessions_of("alpha") == {"s-2"}
            assert await client.smembers(f"{redis_prefix}:tenant:=alpha") == {"s-2"}


@pytest.mark.anyio
async def test_session_directory_is_unavailable_within_its_timeout_when_redis_stops(redis_server: RedisServer) -> None:
    from asgi_mcp._stores.redis import RedisSessionDirectory

    async with RedisSessionDirectory(redis_server.url, timeout=1.0) as directory:
        with anyio.fail_after(10):
            await directory.record(session("s-1"))
        redis_server.stop()
        with anyio.fail_after(2), pytest.raises(StoreUnavailable):
            await directory.lookup("s-1")
        redis_server.start()
        with anyio.fail_after(10):
            assert await directory.lookup("s-1") is None  # not persistent: the restart lost it
            await directory.record(session("s-1"))
            assert await directory.lookup("s-1") == session("s-1")


@pytest.mark.anyio
async def test_a_forged_message_on_a_tenants_redis_channel_is_dropped(
    shared_redis: RedisServer, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone who can PUBLISH to Redis can put any envelope on alpha's channel: it is delivered only if it
    says alpha's tenant and channel, whatever Redis channel it came by."""
    from asgi_mcp import BusMessage
    from asgi_mcp._stores.redis import RedisMessageBus

    async with RedisMessageBus(shared_redis.url, prefix=redis_prefix) as bus, bus.subscribe("alpha", "c") as messages:
        name = bus.name("alpha", "c")
        raw = bus.connection.client
        with anyio.fail_after(10):
            await raw.publish(name, '{"t":"bravo","c":"c","p":"\\"bravo\'s\\""}')
            await raw.publish(name, '{"t":"alpha","c":"d","p":"\\"other channel\\""}')
            await raw.publish(name, "not json")
            await raw.publish(name, '{"t":"alpha","c":"c","p":7}')
            await bus.publish("alpha", "c", '"alpha\'s"')
            assert await anext(messages) == BusMessage("alpha", "c", '"alpha\'s"')
    assert caplog.text.count("dropped a bus message") == 4


@pytest.mark.anyio
async def test_subscribers_hear_again_once_redis_is_back(redis_server: RedisServer) -> None:
    """coredis reconnects and resubscribes by itself; what was published while Redis was down is lost
    (pub/sub is at most once), and publishing meanwhile is StoreUnavailable, never a hang."""
    from asgi_mcp._stores.redis import RedisMessageBus

    async with RedisMessageBus(redis_server.url, timeout=1.0) as bus, bus.subscribe("alpha", "c") as messages:
        redis_server.stop()
        with anyio.fail_after(2), pytest.raises(StoreUnavailable):
            await bus.publish("alpha", "c", '"lost"')
        redis_server.start()
        raw = bus.connection.client
        with anyio.fail_after(30):
            # The resubscription runs on coredis's own backoff timer (0.1 s doubling, jittered): watch
            # Redis until the channel has its subscriber again.
            while (await raw.pubsub_numsub(bus.name("alpha", "c")))[bus.name("alpha", "c")] < 1:  # noqa: ASYNC110
                await anyio.sleep(0.05)
            await bus.publish("alpha", "c", '"back"')
            assert (await anext(messages)).payload == '"back"'


@pytest.mark.anyio
async def test_redis_holds_no_token_nor_its_plain_hash(shared_redis: RedisServer, redis_prefix: str) -> None:
    """Tokens are keyed by HMAC under the workers' secret: a dump of Redis has neither the token nor its
    SHA-256 (which a short token could be brute-forced from); another secret gives other digests."""
    import hashlib

    from asgi_mcp import ConfigurationError, Credential, TenantRecord
    from asgi_mcp._stores.redis import RedisTenantStore

    token = "tok-1234"  # short on purpose
    async with RedisTenantStore(shared_redis.url, secret=SECRET, prefix=redis_prefix) as store:
        with anyio.fail_after(10):
            await store.add(TenantRecord(tenant_id="alpha"), Credential(digest=store.digest(token), tenant_id="alpha"))
            client = store.connection.client
            dumped = ""
            for key in await client.keys(f"{{{redis_prefix}}}:*"):
                kind = await client.type(key)
                if kind == "hash":
                    dumped += json.dumps(await client.hgetall(key))
                elif kind == "set":
                    dumped += json.dumps(sorted(await client.smembers(key)))
                else:
                    dumped += str(await client.get(key))
        assert "alpha" in dumped
        assert token not in dumped
        assert hashlib.sha256(token.encode()).hexdigest() not in dumped
        other = RedisTenantStore(shared_redis.url, secret=b"o" * 32, prefix=redis_prefix)
        assert other.digest(token) != store.digest(token)
    with pytest.raises(ConfigurationError, match="32 bytes"):
        RedisTenantStore(shared_redis.url, secret=b"short", prefix=redis_prefix)
