"""Concurrent adoptions of one session share one directory lookup: a burst of first requests for a
session another worker opened costs one round trip, and a lookup cancelled or failed under the
requests waiting for it strands none of them. Two `McpApp` workers over the ASGI interface, on
asyncio and Trio: on a real redis-server (counted by `INFO commandstats`), and on the in-memory
stores with a directory that holds its lookups for the test.
"""

from __future__ import annotations

import anyio
import pytest
from anyio.lowlevel import checkpoint

from asgi_mcp import FleetStores, InMemoryMessageBus, InMemorySessionDirectory, McpApp, Tenants
from asgi_mcp._core.errors import StoreUnavailable
from asgi_mcp._ports.session_directory import SessionRecord
from asgi_mcp._stores import fleet_from_url
from tests.kit.mcp_servers import factory_of
from tests.kit.memory import AsgiClient, Response, TokenClient, serving
from tests.kit.messages import LEGACY, request
from tests.kit.redis_server import RedisServer
from tests.system.test_fleet_limits import RedisStats

pytestmark = pytest.mark.anyio

TOKEN = "sk-fleet-adoption-alpha-7Hn2Qp"
GUARD = 20.0
BURST = 16


def worker(fleet: FleetStores) -> McpApp:
    tenants = Tenants()
    tenants.add(TOKEN, factory_of("alpha"), label="alpha")
    return McpApp(tenants=tenants, fleet=fleet, session_idle_timeout=60, json_response=True)


async def burst(client: TokenClient, session_id: str, count: int) -> list[Response]:
    """`count` first requests for the session, all under way before any is answered."""
    return [
        await client.client.post(
            request(n + 1, "tools/list"),
            session_id=session_id,
            version=LEGACY,
            headers={"authorization": f"Bearer {TOKEN}"},
            wait=False,
        )
        for n in range(count)
    ]


async def statuses(responses: list[Response]) -> list[int]:
    for response in responses:
        await response.started()
    return [response.status for response in responses]


async def test_a_burst_of_first_requests_on_another_worker_looks_the_session_up_once(
    shared_redis: RedisServer, redis_prefix: str
) -> None:
    def stores() -> FleetStores:
        # No roster beat (background, every `heartbeat` seconds) falls among the commands counted.
        return fleet_from_url(shared_redis.url, prefix=redis_prefix, session_ttl=60, heartbeat=3600.0)

    with anyio.fail_after(GUARD):
        async with (
            RedisStats(shared_redis.url) as stats,
            serving(worker(stores())) as first,
            serving(worker(stores())) as second,
        ):
            session_id = await TokenClient(first, TOKEN).open_session()
            before = await stats.calls()
            responses = await burst(TokenClient(second, TOKEN), session_id, BURST)
            assert await statuses(responses) == [200] * BURST
            for response in responses:
                assert "tools" in (await response.json())["result"]
            assert (await stats.calls() - before).get("hmget", 0) == 1


class HeldDirectory(InMemorySessionDirectory):
    """In-memory records whose next lookup waits for the test, then answers or fails as it says."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0
        self.hold_next = False
        self.entered = anyio.Event()
        self.release = anyio.Event()
        self.fail = False

    async def lookup(self, session_id: str) -> SessionRecord | None:
        self.lookups += 1
        if self.hold_next:
            self.hold_next = False
            self.entered.set()
            await self.release.wait()
            if self.fail:
                raise StoreUnavailable("session directory")
        await checkpoint()  # a round trip: others run meanwhile
        return await super().lookup(session_id)


async def held_lookup(directory: HeldDirectory, first: AsgiClient) -> str:
    """A session opened on the first worker; the next lookup of it (by the second) held."""
    session_id = await TokenClient(first, TOKEN).open_session()
    directory.hold_next = True
    directory.lookups = 0
    return session_id


def in_memory_fleet() -> tuple[HeldDirectory, FleetStores]:
    directory = HeldDirectory()
    return directory, FleetStores(directory=directory, bus=InMemoryMessageBus())


async def test_a_cancelled_lookup_leaves_the_requests_waiting_for_it_to_look_again() -> None:
    directory, fleet = in_memory_fleet()
    with anyio.fail_after(GUARD):
        async with serving(worker(fleet)) as first, serving(worker(fleet)) as second:
            session_id = await held_lookup(directory, first)
            async with anyio.create_task_group() as leader_group:
                leader = TokenClient(AsgiClient(second.app, leader_group), TOKEN)
                await burst(leader, session_id, 1)
                await directory.entered.wait()
                followers = await burst(TokenClient(second, TOKEN), session_id, 3)
                await anyio.wait_all_tasks_blocked()
                assert directory.lookups == 1  # the followers wait for the leader's lookup
                leader_group.cancel_scope.cancel()  # the leader's client is gone mid-lookup
            assert await statuses(followers) == [200, 200, 200]
            assert directory.lookups == 2  # one more lookup, shared by the three


async def test_a_failed_lookup_fails_the_requests_waiting_for_it_with_503() -> None:
    directory, fleet = in_memory_fleet()
    with anyio.fail_after(GUARD):
        async with serving(worker(fleet)) as first, serving(worker(fleet)) as second:
            session_id = await held_lookup(directory, first)
            responses = await burst(TokenClient(second, TOKEN), session_id, 4)
            await directory.entered.wait()
            await anyio.wait_all_tasks_blocked()
            directory.fail = True
            directory.release.set()
            assert await statuses(responses) == [503] * 4
            assert directory.lookups == 1
            assert {response.header("retry-after") for response in responses} == {"1"}
            # Nothing left behind: the next request looks the session up afresh and is answered.
            again = await TokenClient(second, TOKEN).post(request(9, "tools/list"), session_id=session_id)
            assert again.status == 200
            assert directory.lookups == 2


async def test_every_request_cancelled_mid_lookup_leaves_nothing_behind() -> None:
    directory, fleet = in_memory_fleet()
    with anyio.fail_after(GUARD):
        async with serving(worker(fleet)) as first, serving(worker(fleet)) as second:
            session_id = await held_lookup(directory, first)
            async with anyio.create_task_group() as group:
                await burst(TokenClient(AsgiClient(second.app, group), TOKEN), session_id, 4)
                await directory.entered.wait()
                await anyio.wait_all_tasks_blocked()
                group.cancel_scope.cancel()
            # A lookup left registered would hold this one forever (the guard would fire).
            again = await TokenClient(second, TOKEN).post(request(9, "tools/list"), session_id=session_id)
            assert again.status == 200
            assert directory.lookups == 2
