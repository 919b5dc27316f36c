"""Rate limits and per-tenant session caps held by the fleet, not per worker: two `McpApp` workers
sharing one real redis-server, driven over the ASGI interface on asyncio and Trio.

A limit of N admits N in total across both workers; a cap of K admits K sessions across both; ending a
session on one worker frees its slot for the other; a worker that went away leaves slots that lapse
with their TTL; Redis down means 503 with Retry-After for what needs a decision, and nothing for a
held session's request with no limit on it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from asgi_mcp import (
    FleetStores,
    InMemoryMessageBus,
    InMemoryRateLimitStore,
    InMemorySessionDirectory,
    InMemorySessionSlots,
    McpApp,
    Rate,
    RateLimits,
    TenantLimits,
    Tenants,
)
from asgi_mcp._core.errors import RATE_LIMITED
from asgi_mcp._stores import fleet_from_url
from tests.kit.mcp_servers import factory_of
from tests.kit.memory import Response, TokenClient, serving
from tests.kit.messages import call_tool, initialize, request
from tests.kit.polling import let_time_pass
from tests.kit.redis_server import RedisServer

pytestmark = pytest.mark.anyio

TOKEN = "sk-fleet-limits-alpha-3Kq9Vw"
GUARD = 20.0
# What the rate-limit script runs inside Redis (counted by `INFO commandstats` too).
SCRIPT_COMMANDS = frozenset({"hget", "hset", "pexpire", "pttl"})


def worker(url: str, prefix: str, *, session_ttl: float = 60.0, idle: float = 60.0, **options: Any) -> McpApp:
    """One worker of the fleet: its own Redis connections, the same tenant as every other worker."""
    tenants = Tenants()
    tenants.add(TOKEN, factory_of("alpha"), label="alpha")
    fleet = fleet_from_url(url, prefix=prefix, session_ttl=session_ttl)
    return McpApp(tenants=tenants, fleet=fleet, session_idle_timeout=idle, json_response=True, **options)


@asynccontextmanager
async def two_workers(url: str, prefix: str, **options: Any) -> AsyncIterator[tuple[TokenClient, TokenClient]]:
    async with serving(worker(url, prefix, **options)) as first, serving(worker(url, prefix, **options)) as second:
        yield TokenClient(first, TOKEN), TokenClient(second, TOKEN)


async def refusal(response: Response) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(await response.read())
    return body


async def test_a_rate_limit_admits_n_in_total_across_both_workers(shared_redis: RedisServer, redis_prefix: str) -> None:
    limits = RateLimits(TenantLimits(tool_calls=Rate(burst=3, per_second=0.001)))
    with anyio.fail_after(GUARD):
        async with two_workers(shared_redis.url, redis_prefix, rate_limits=limits) as (one, two):
            on_one, on_two = await one.open_session(), await two.open_session()
            answers = [
                await one.post(call_tool(1, "whoami"), session_id=on_one),
                await two.post(call_tool(2, "whoami"), session_id=on_two),
                await one.post(call_tool(3, "whoami"), session_id=on_one),
            ]
            assert [answer.status for answer in answers] == [200, 200, 200]
            for client, session_id in ((two, on_two), (one, on_one)):
                refused = await client.post(call_tool(4, "whoami"), session_id=session_id)
                assert refused.status == 429
                assert refused.header("retry-after") == "1000"
                body = await refusal(refused)
                assert (body["id"], body["error"]["code"]) == (4, RATE_LIMITED)
            # Other methods are not limited here: no bucket, no refusal.
            assert (await two.post(request(5, "tools/list"), session_id=on_two)).status == 200


async def test_a_rate_limited_request_costs_one_script_call_and_an_unlimited_one_none(
    redis_server: RedisServer,
) -> None:
    limits = TenantLimits(requests=Rate(100, 1.0), tool_calls=Rate(100, 1.0), tools={"whoami": Rate(100, 1.0)})
    app = worker(redis_server.url, "rt", rate_limits=RateLimits(plans={}, tenants={"alpha": limits}))
    with anyio.fail_after(GUARD):
        async with RedisStats(redis_server.url) as stats, serving(app) as client:
            alpha = TokenClient(client, TOKEN)
            session_id = await alpha.open_session()
            before = await stats.calls()
            assert (await alpha.post(call_tool(1, "whoami"), session_id=session_id)).status == 200
            after = await stats.calls()
            # Three buckets (whoami, tools/call, requests), one script call, nothing else (Redis counts
            # the commands a script runs as well: those are the script's own).
            sent = {name: calls for name, calls in (after - before).items() if name not in SCRIPT_COMMANDS}
            assert sent == {"evalsha": 1}

    unlimited = worker(redis_server.url, "rt2", rate_limits=RateLimits(TenantLimits(completions=Rate(1, 1.0))))
    with anyio.fail_after(GUARD):
        async with RedisStats(redis_server.url) as stats, serving(unlimited) as client:
            alpha = TokenClient(client, TOKEN)
            session_id = await alpha.open_session()
            before = await stats.calls()
            assert (await alpha.post(call_tool(1, "whoami"), session_id=session_id)).status == 200
            assert await stats.calls() - before == {}


async def test_a_session_cap_admits_k_sessions_across_both_workers_and_an_end_frees_a_slot(
    shared_redis: RedisServer, redis_prefix: str
) -> None:
    with anyio.fail_after(GUARD):
        async with two_workers(shared_redis.url, redis_prefix, max_sessions_per_tenant=2) as (one, two):
            first = await one.open_session()
            await two.open_session()
            for client in (one, two):
                refused = await client.post(initialize(0))
                assert refused.status == 429  # as a single worker's cap answers
                assert refused.header("retry-after") == "1"
                assert (await refusal(refused))["error"]["data"] == {"retryAfter": 1}
            assert (await one.delete(first)).status == 200
            third = await two.open_session()  # the slot freed on one is taken on two
            assert (await one.post(initialize(0))).status == 429
            # Ended on the worker that did not open it (adopted there, then deleted): freed too.
            assert (await one.delete(third)).status == 200
            await one.open_session()


async def test_a_dead_workers_sessions_free_their_slots_after_their_ttl(
    shared_redis: RedisServer, redis_prefix: str
) -> None:
    ttl = 1.0
    options: dict[str, Any] = {"session_ttl": ttl, "idle": ttl, "max_sessions_per_tenant": 1}
    with anyio.fail_after(GUARD):
        async with serving(worker(shared_redis.url, redis_prefix, **options)) as survivor:
            two = TokenClient(survivor, TOKEN)
            opened_at = time.time()
            async with serving(worker(shared_redis.url, redis_prefix, **options)) as doomed:
                await TokenClient(doomed, TOKEN).open_session()
            # The worker went away without ending its session for the client: the slot is still held.
            assert (await two.post(initialize(0))).status == 429
            while (answer := await two.post(initialize(0))).status == 429:
                await let_time_pass(0.05)  # the slot lapses on Redis's side: there is no event to wait on
            assert answer.status == 200
            assert time.time() - opened_at >= ttl  # freed by its TTL, not before


async def test_a_session_in_use_keeps_its_slot_past_the_ttl(shared_redis: RedisServer, redis_prefix: str) -> None:
    """The heartbeat renews the slots of sessions in use with their records: only a session left
    behind lapses."""
    ttl = 1.0
    options: dict[str, Any] = {"session_ttl": ttl, "idle": ttl, "max_sessions_per_tenant": 1}
    with anyio.fail_after(GUARD):
        async with two_workers(shared_redis.url, redis_prefix, **options) as (one, two):
            session_id = await one.open_session()
            used_until = anyio.current_time() + 2.5 * ttl
            while anyio.current_time() < used_until:
                assert (await one.post(request(1, "tools/list"), session_id=session_id)).status == 200
                await let_time_pass(0.1)  # a client's pace, not a wait for anything
            assert (await two.post(initialize(0))).status == 429
            assert (await two.post(request(2, "tools/list"), session_id=session_id)).status == 200  # adoptable


async def test_redis_down_is_503_with_retry_after_for_a_limited_request_and_nothing_for_an_unlimited_one(
    redis_server: RedisServer,
) -> None:
    limits = RateLimits(TenantLimits(tool_calls=Rate(100, 1.0)))
    app = worker(redis_server.url, "down", rate_limits=limits)
    with anyio.fail_after(GUARD + 10):
        async with serving(app) as client:
            alpha = TokenClient(client, TOKEN)
            session_id = await alpha.open_session()
            redis_server.stop()
            try:
                started = anyio.current_time()
                unavailable = await alpha.post(call_tool(1, "whoami"), session_id=session_id)
                assert unavailable.status == 503
                assert unavailable.header("retry-after") == "1"
                assert anyio.current_time() - started < 2.0
                # No limit on tools/list: the held session answers without Redis.
                started = anyio.current_time()
                assert (await alpha.post(request(2, "tools/list"), session_id=session_id)).status == 200
                assert anyio.current_time() - started < 1.0
            finally:
                redis_server.start()
            assert (await alpha.post(call_tool(3, "whoami"), session_id=session_id)).status == 200
            # Shut down at once, the bus perhaps not subscribed again yet: bounded too
            # (tests/system/test_fleet_shutdown.py).


def test_redis_url_shares_the_limits_and_caps_and_an_explicit_store_wins(shared_redis: RedisServer) -> None:
    from asgi_mcp._stores.redis import RedisRateLimitStore, RedisSessionSlots

    tenants = Tenants()
    limits = RateLimits(TenantLimits(requests=Rate(5, 1.0)))
    app = McpApp(tenants=tenants, redis_url=shared_redis.url, rate_limits=limits)
    assert app.config.fleet is not None
    assert isinstance(app.config.fleet.session_slots, RedisSessionSlots)
    assert isinstance(app.config.rate_limits, RateLimits)
    assert isinstance(app.config.rate_limits.store, RedisRateLimitStore)
    assert app.config.rate_limits.default is limits.default
    assert isinstance(limits.store, InMemoryRateLimitStore)  # the caller's object is left as it was
    own = InMemoryRateLimitStore()
    kept = McpApp(tenants=Tenants(), redis_url=shared_redis.url, rate_limits=RateLimits(store=own))
    assert kept.config.rate_limits is not None
    assert kept.config.rate_limits.store is own


class RedisStats:
    """Redis's own command counters (`INFO commandstats`), read on a connection of the test's."""

    def __init__(self, url: str) -> None:
        import coredis

        self.client: Any = coredis.Redis.from_url(url, decode_responses=True)

    async def __aenter__(self) -> RedisStats:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.client.__aexit__(*exc_info)

    async def calls(self) -> Counts:
        info = await self.client.info("commandstats")
        counts = Counts()
        for name, fields in info.items():
            if name.startswith("cmdstat_") and name not in ("cmdstat_info",):
                counts[name.removeprefix("cmdstat_")] = int(fields["calls"])
        return counts


class Counts(dict[str, int]):
    def __sub__(self, other: Counts) -> dict[str, int]:
        return {name: calls - other.get(name, 0) for name, calls in self.items() if calls != other.get(name, 0)}


class GatedSlots(InMemorySessionSlots):
    """In-memory slots whose `reserve` waits for the test: an `initialize` held open at will."""

    def __init__(self) -> None:
        super().__init__(ttl=60.0)
        self.entered = anyio.Event()
        self.release_gate = anyio.Event()

    async def reserve(self, tenant_id: str, session_id: str, cap: int, now: float) -> bool:
        self.entered.set()
        await self.release_gate.wait()
        return await super().reserve(tenant_id, session_id, cap, now)


async def test_an_opening_session_outlives_the_heartbeats_that_run_meanwhile() -> None:
    """The heartbeat renews recorded sessions only: an opening one has no record yet, and must not be
    taken for a session deleted meanwhile (it was ended, and its `initialize` answered 500)."""
    slots = GatedSlots()
    fleet = FleetStores(directory=InMemorySessionDirectory(), bus=InMemoryMessageBus(), session_slots=slots)
    tenants = Tenants()
    tenants.add(TOKEN, factory_of("alpha"), label="alpha")
    idle = 0.2  # a heartbeat every 0.0375 s
    app = McpApp(tenants=tenants, fleet=fleet, session_idle_timeout=idle, max_sessions_per_tenant=1)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            alpha = TokenClient(client, TOKEN)
            opening = await alpha.client.post(
                initialize(0), headers={"authorization": f"Bearer {TOKEN}"}, version=None, wait=False
            )
            await slots.entered.wait()
            await let_time_pass(idle)  # five heartbeats, while the session is opening
            slots.release_gate.set()
            await opening.started()
            assert opening.status == 200
