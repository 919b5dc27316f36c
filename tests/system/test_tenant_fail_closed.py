"""A worker whose tenant store (a real redis-server) is out of reach serves tenant lookups from its local
copy for `stale_for` seconds of its clock (one the test moves), then fails closed: 503 with
`Retry-After`, never 401, until the store is back and the copy resynchronised. Each change is logged
once, never with a token. The same probe of the store catches up a write whose announcement was lost."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from mcp.server import MCPServer

from asgi_mcp import Credential, McpApp, TenantRecord, Tenants
from asgi_mcp._stores import tenant_store_from_url
from asgi_mcp._tenancy.freshness import Freshness
from tests.kit.messages import LEGACY, initialize
from tests.kit.polling import wait_until
from tests.kit.real_servers import serve_http

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SECRET = b"c" * 32
TOKEN = "sk-closed-8Gh3Lq5Xw2Tn"
STALE_FOR = 30.0
SERVING_LOCALLY = "serving tenant lookups from the local copy for 30 s"
FAILING_CLOSED = "tenant lookups fail closed (503)"
RECOVERED = "tenant store reachable again: local copy resynchronised (was failing closed)"


def plan() -> MCPServer:
    return MCPServer("closed-plan", version="1.0.0")


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


async def register(url: str) -> None:
    writer: Any = tenant_store_from_url(url, secret=SECRET)
    async with writer:
        await writer.add(
            TenantRecord(tenant_id="acme", label="acme", plan="gold"),
            Credential(digest=writer.digest(TOKEN), tenant_id="acme"),
        )


async def initialize_status(client: httpx.AsyncClient, endpoint: str) -> httpx.Response:
    headers = {
        "authorization": f"Bearer {TOKEN}",
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": LEGACY,
    }
    return await client.post(endpoint, json=initialize(1), headers=headers)


async def test_lookups_use_the_local_copy_for_stale_for_then_fail_closed_until_resynced(
    anyio_backend: str, redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    redis = redis_server_factory(persistent=True)  # the token survives the restart
    await register(redis.url)
    clock = Clock()
    store = tenant_store_from_url(redis.url, secret=SECRET)
    tenants = Tenants(plans={"gold": plan}, store=store, clock=clock, stale_for=STALE_FOR)
    copy = tenants.local_copy
    with anyio.fail_after(60):
        async with serve_http(McpApp(tenants=tenants), anyio_backend) as base, httpx.AsyncClient() as client:
            endpoint = base + "/mcp"
            assert (await initialize_status(client, endpoint)).status_code == 200
            redis.stop()
            await wait_until(lambda: copy.state is Freshness.LOCAL_COPY, timeout=10)  # the mirror's probe noticed
            assert (await initialize_status(client, endpoint)).status_code == 200
            clock.now += STALE_FOR - 0.5
            assert (await initialize_status(client, endpoint)).status_code == 200
            clock.now += 0.5
            for _ in range(2):
                refused = await initialize_status(client, endpoint)
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == "1"
                assert refused.json()["error"]["message"] == "Service temporarily unavailable"
            assert copy.state is Freshness.FAILING_CLOSED
            redis.start()
            await wait_until(lambda: copy.state is Freshness.CURRENT, timeout=20)  # reconnected, resynced
            assert (await initialize_status(client, endpoint)).status_code == 200
    for message in (SERVING_LOCALLY, FAILING_CLOSED, RECOVERED):
        assert caplog.text.count(message) == 1, caplog.text
    assert TOKEN not in caplog.text


async def test_with_stale_for_none_the_local_copy_serves_for_ever(redis_server_factory: Any) -> None:
    redis = redis_server_factory()
    await register(redis.url)
    clock = Clock()
    store = tenant_store_from_url(redis.url, secret=SECRET)
    tenants = Tenants(plans={"gold": plan}, store=store, clock=clock, stale_for=None)
    with anyio.fail_after(30):
        async with McpApp(tenants=tenants).lifespan_context():
            redis.stop()
            await wait_until(lambda: tenants.local_copy.state is Freshness.LOCAL_COPY, timeout=10)
            clock.now += 10 * 365 * 86_400.0
            found = tenants.lookup(TOKEN)
            assert found is not None
            assert found.tenant_id == "acme"
            assert tenants.local_copy.state is Freshness.LOCAL_COPY


def test_stale_for_is_a_number_of_seconds() -> None:
    with pytest.raises(ValueError, match="stale_for"):
        Tenants(stale_for=-1.0)
    with pytest.raises(ValueError, match="stale_for"):
        Tenants(stale_for=float("nan"))


async def test_a_write_whose_announcement_was_lost_is_caught_up(redis_server_factory: Any) -> None:
    """A write that reached Redis but not the worker's subscription (published while it reconnected): the
    mirror's probe sees the store's version stay ahead of its copy's and resynchronises."""
    import coredis

    redis = redis_server_factory()
    tenants = Tenants(plans={"gold": plan}, store=tenant_store_from_url(redis.url, secret=SECRET))
    with anyio.fail_after(30):
        async with McpApp(tenants=tenants).lifespan_context():
            writer: Any = tenant_store_from_url(redis.url, secret=SECRET)
            record = TenantRecord(tenant_id="acme", label="acme", plan="gold")
            credential = Credential(digest=writer.digest(TOKEN), tenant_id="acme")
            async with coredis.Redis.from_url(redis.url, decode_responses=True) as raw:
                # What the store's add script writes, without its PUBLISH.
                await raw.hset("{asgi_mcp}:tn:tenants", {"acme": record.to_json()})
                await raw.hset("{asgi_mcp}:tn:credentials", {credential.digest.hex(): credential.to_json()})
                await raw.sadd("{asgi_mcp}:tn:tokens:acme", [credential.digest.hex()])
                await raw.incr("{asgi_mcp}:tn:version")
            assert tenants.lookup(TOKEN) is None
            await wait_until(lambda: tenants.lookup(TOKEN) is not None, timeout=10)
            assert tenants.version == 1
            assert tenants.local_copy.state is Freshness.CURRENT
