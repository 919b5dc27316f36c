"""2026-07-28 `subscriptions/listen` across a fleet: an event a tool publishes on one worker reaches
its tenant's listen streams on every worker, once each, and never another tenant's; a forged
message on a tenant's channel that names another tenant is dropped; a listener that stopped reading
is cut at its buffer's cap.

Two `McpApp` workers served over the ASGI interface (in memory), sharing a fleet: a real
redis-server (each worker with its own connections), or one in-memory message bus.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import coredis
import pytest
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.shared.subscriptions import PromptsListChanged, ToolsListChanged

from asgi_mcp import McpApp, Tenants
from asgi_mcp._ports.fleet import FleetStores
from asgi_mcp._ports.listen_events import LISTEN_CHANNEL, encode_event
from asgi_mcp._ports.message_bus import InMemoryMessageBus
from asgi_mcp._ports.session_directory import InMemorySessionDirectory
from asgi_mcp._stores import fleet_from_url
from tests.kit.mcp_servers import TOKEN_A, TOKEN_C
from tests.kit.memory import TIMEOUT, AsgiClient, Response, TokenClient, final_message, serving
from tests.kit.redis_server import RedisServer

pytestmark = pytest.mark.anyio

GUARD = 20.0
# The flood test's: its 1 224 events cross the bus one by one (about 2 s on Redis here, several
# times that on a loaded machine).
FLOOD_GUARD = 60.0
LISTEN_ALL = {"notifications": {"toolsListChanged": True, "promptsListChanged": True, "resourcesListChanged": True}}
# The SDK's listen handler buffers this many events per stream before it ends the stream.
SDK_LISTEN_BUFFER = 1024
TOOLS = "notifications/tools/list_changed"
PROMPTS = "notifications/prompts/list_changed"
RESOURCES = "notifications/resources/list_changed"


def announcing_server(name: str) -> MCPServer:
    mcp = MCPServer(name, version="1.0.0")

    @mcp.tool()
    async def announce_tools(ctx: Context) -> str:
        await ctx.notify_tools_changed()
        return "tools"

    @mcp.tool()
    async def announce_prompts(ctx: Context) -> str:
        await ctx.notify_prompts_changed()
        return "prompts"

    @mcp.tool()
    async def announce_resources(ctx: Context) -> str:
        await ctx.notify_resources_changed()
        return "resources"

    @mcp.tool()
    async def flood(count: int, ctx: Context) -> str:
        for _ in range(count):
            await ctx.notify_tools_changed()
        return "flooded"

    return mcp


@dataclass
class Fleet:
    apps: list[McpApp]
    clients: list[AsgiClient]
    # Publishes raw bus text on a tenant's listen channel: (channel's tenant, the bus envelope's JSON text).
    forge_raw: Callable[[str | None, str | None, str], Awaitable[None]]


def tenants() -> Tenants:
    registry = Tenants()
    registry.add(TOKEN_A, lambda: announcing_server("alpha"), label="alpha")
    registry.add(TOKEN_C, lambda: announcing_server("charlie"), label="charlie")
    return registry


def worker(stores: FleetStores) -> McpApp:
    return McpApp(tenants=tenants(), fleet=stores, session_idle_timeout=60)


@asynccontextmanager
async def fleet_of_two(
    kind: str, request: pytest.FixtureRequest, prefix: str, make: Callable[[FleetStores], McpApp]
) -> AsyncIterator[Fleet]:
    async with AsyncExitStack() as stack:
        if kind == "redis":
            redis: RedisServer = request.getfixturevalue("shared_redis")
            stores = [fleet_from_url(redis.url, prefix=prefix, session_ttl=60) for _ in range(2)]
            raw = await stack.enter_async_context(coredis.Redis.from_url(redis.url, decode_responses=True))
            bus: Any = stores[0].bus

            async def forge_raw(channel_tenant: str | None, envelope_tenant: str | None, payload: str) -> None:
                envelope = json.dumps({"t": envelope_tenant, "c": LISTEN_CHANNEL, "p": payload})
                assert await raw.publish(bus.name(channel_tenant, LISTEN_CHANNEL), envelope) == 2  # both workers
        else:
            shared = FleetStores(directory=InMemorySessionDirectory(), bus=InMemoryMessageBus())
            stores = [shared, shared]

            async def forge_raw(channel_tenant: str | None, envelope_tenant: str | None, payload: str) -> None:
                # The in-memory bus stamps the channel's tenant on what it carries: only the payload lies.
                assert channel_tenant == envelope_tenant
                await shared.bus.publish(channel_tenant, LISTEN_CHANNEL, payload)

        apps = [make(store) for store in stores]
        clients = [await stack.enter_async_context(serving(app)) for app in apps]
        yield Fleet(apps, clients, forge_raw)


async def listen(client: TokenClient, request_id: int, params: dict[str, Any] = LISTEN_ALL) -> Response:
    stream = await client.modern(request_id, "subscriptions/listen", params)
    assert stream.status == 200
    ack = await stream.next_message()
    assert ack["method"] == "notifications/subscriptions/acknowledged", ack
    return stream


async def call(
    client: TokenClient, request_id: int, tool: str, arguments: dict[str, Any] | None = None, *, within: float = TIMEOUT
) -> None:
    """Call a tool and check its answer, which comes (head included) once the tool returns."""
    response = await client.modern(request_id, "tools/call", {"name": tool, "arguments": arguments or {}}, wait=False)
    await response.started(within)
    answer = await final_message(response)
    assert "result" in answer, answer
    assert not answer["result"].get("isError"), answer


async def next_method(stream: Response) -> str:
    return str((await stream.next_message())["method"])


@pytest.fixture(params=["redis", "memory"])
def fleet_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_an_event_published_on_one_worker_reaches_the_tenants_listeners_on_every_worker_once(
    fleet_kind: str, request: pytest.FixtureRequest, redis_prefix: str
) -> None:
    with anyio.fail_after(GUARD):
        async with fleet_of_two(fleet_kind, request, redis_prefix, worker) as fleet:
            a_on = [TokenClient(client, TOKEN_A) for client in fleet.clients]
            c_on = [TokenClient(client, TOKEN_C) for client in fleet.clients]
            alpha = [await listen(a_on[0], 1), await listen(a_on[1], 1)]
            charlie = [await listen(c_on[0], 1), await listen(c_on[1], 1)]

            await call(a_on[0], 2, "announce_tools")  # published on the first worker
            assert [await next_method(stream) for stream in alpha] == [TOOLS, TOOLS]
            # Then one from the second worker: had the first arrived twice anywhere, it would come first.
            await call(a_on[1], 3, "announce_prompts")
            assert [await next_method(stream) for stream in alpha] == [PROMPTS, PROMPTS]

            # Charlie heard none of it: its first event, on both workers, is its own.
            await call(c_on[1], 2, "announce_resources")
            assert [await next_method(stream) for stream in charlie] == [RESOURCES, RESOURCES]
            await call(a_on[0], 4, "announce_resources")
            assert [await next_method(stream) for stream in alpha] == [RESOURCES, RESOURCES]
            for stream in alpha + charlie:
                stream.disconnect()


async def test_a_message_on_a_tenants_channel_naming_another_tenant_is_dropped(
    fleet_kind: str, request: pytest.FixtureRequest, redis_prefix: str
) -> None:
    with anyio.fail_after(GUARD):
        async with fleet_of_two(fleet_kind, request, redis_prefix, worker) as fleet:
            a_on = [TokenClient(client, TOKEN_A) for client in fleet.clients]
            c_on = [TokenClient(client, TOKEN_C) for client in fleet.clients]
            alpha = [await listen(a_on[0], 1), await listen(a_on[1], 1)]
            charlie = [await listen(c_on[0], 1), await listen(c_on[1], 1)]

            # On charlie's channel, a tools event that says it is alpha's: in the payload only, and (where
            # the bus's envelope can be forged: Redis) in the envelope too.
            await fleet.forge_raw("charlie", "charlie", encode_event("alpha", "forger", ToolsListChanged()))
            if fleet_kind == "redis":
                await fleet.forge_raw("charlie", "alpha", encode_event("alpha", "forger", ToolsListChanged()))
            # The control, after them on the same route: with charlie's own name it is delivered (so the
            # two above were dropped for the tenant they named, not for a wrong channel), and it is the
            # first event charlie's listeners see (had a forged one been delivered, it would come first).
            await fleet.forge_raw("charlie", "charlie", encode_event("charlie", "forger", PromptsListChanged()))
            assert [await next_method(stream) for stream in charlie] == [PROMPTS, PROMPTS]

            await call(a_on[1], 2, "announce_resources")
            assert [await next_method(stream) for stream in alpha] == [RESOURCES, RESOURCES]
            for stream in alpha + charlie:
                stream.disconnect()


async def test_the_single_server_app_relays_too(
    fleet_kind: str, request: pytest.FixtureRequest, redis_prefix: str
) -> None:
    def make(stores: FleetStores) -> McpApp:
        return McpApp(announcing_server("solo"), fleet=stores, session_idle_timeout=60)

    with anyio.fail_after(GUARD):
        async with fleet_of_two(fleet_kind, request, redis_prefix, make) as fleet:
            on = [TokenClient(client, None) for client in fleet.clients]
            streams = [await listen(on[0], 1), await listen(on[1], 1)]
            await call(on[1], 2, "announce_tools")
            assert [await next_method(stream) for stream in streams] == [TOOLS, TOOLS]
            await call(on[0], 3, "announce_prompts")
            assert [await next_method(stream) for stream in streams] == [PROMPTS, PROMPTS]
            for stream in streams:
                stream.disconnect()


def stalling(app: Any, release: anyio.Event) -> Any:
    """The app, with the response's writes held after the listen acknowledgement until `release`: a
    client that stopped reading."""

    async def stalled(scope: dict[str, Any], receive: Any, send: Any) -> None:
        acknowledged = False

        async def held(message: dict[str, Any]) -> None:
            nonlocal acknowledged
            if acknowledged and message["type"] == "http.response.body":
                await release.wait()
            acknowledged = acknowledged or b"acknowledged" in message.get("body", b"")
            await send(message)

        await app(scope, receive, held)

    return stalled


async def test_a_listener_that_stopped_reading_is_cut_at_its_buffer(
    fleet_kind: str, request: pytest.FixtureRequest, redis_prefix: str
) -> None:
    flooded = SDK_LISTEN_BUFFER + 200
    with anyio.fail_after(FLOOD_GUARD):
        async with fleet_of_two(fleet_kind, request, redis_prefix, worker) as fleet:
            second = fleet.clients[1]
            release = anyio.Event()
            stalled_client = TokenClient(AsgiClient(stalling(fleet.apps[1], release), second.tg), TOKEN_A)
            stalled = await listen(stalled_client, 1, {"notifications": {"toolsListChanged": True}})
            # A listener on the same worker for prompts only: when the prompts event published after the
            # flood reaches it, the second worker has handed every event of the flood on.
            marker = await listen(TokenClient(second, TOKEN_A), 2, {"notifications": {"promptsListChanged": True}})

            first = TokenClient(fleet.clients[0], TOKEN_A)
            # The answer, its head included, comes once the last event is published: only the test's
            # guard bounds that wait.
            await call(first, 3, "flood", {"count": flooded}, within=FLOOD_GUARD)
            await call(first, 4, "announce_prompts")
            assert await next_method(marker) == PROMPTS

            release.set()  # the client reads again: it gets what its buffer held, then the stream's end
            messages = await stalled.messages()
            events = [m for m in messages if m.get("method") == TOOLS]
            assert 0 < len(events) <= SDK_LISTEN_BUFFER + 1 < flooded
            assert messages[-1].get("id") == 1, messages[-1]
            assert "result" in messages[-1], messages[-1]

            # The worker goes on: a new listener there hears the next event.
            again = await listen(TokenClient(second, TOKEN_A), 5)
            await call(first, 6, "announce_tools")
            assert await next_method(again) == TOOLS
            for stream in (marker, again):
                stream.disconnect()


async def test_without_redis_events_stay_on_their_worker_and_cross_again_once_it_is_back(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    with anyio.fail_after(GUARD):
        stores = [fleet_from_url(redis_server.url, prefix=redis_prefix, session_ttl=60) for _ in range(2)]
        async with serving(worker(stores[0])) as first, serving(worker(stores[1])) as second:
            on = [TokenClient(first, TOKEN_A), TokenClient(second, TOKEN_A)]
            streams = [await listen(on[0], 1), await listen(on[1], 1)]
            redis_server.stop()
            started = anyio.current_time()
            await call(on[0], 2, "announce_tools")  # the tool does not fail for the relay
            assert anyio.current_time() - started < 2.0
            assert await next_method(streams[0]) == TOOLS

            redis_server.start()
            await both_follow_again(redis_server.url, stores[0].bus.name("alpha", LISTEN_CHANNEL))  # type: ignore[attr-defined]
            await call(on[0], 3, "announce_prompts")
            # The second worker missed the event published during the outage (at most once), not this one.
            assert [await next_method(stream) for stream in streams] == [PROMPTS, PROMPTS]
            for stream in streams:
                stream.disconnect()


async def both_follow_again(url: str, channel: str) -> None:
    async with coredis.Redis.from_url(url, decode_responses=True) as redis:
        # Observable only in Redis: polled, at most 10 s.
        for _ in range(200):
            if (await redis.pubsub_numsub(channel)).get(channel, 0) >= 2:
                return
            await anyio.sleep(0.05)
    raise AssertionError("the workers did not follow the channel again")


async def test_a_tenant_removed_and_added_again_on_a_worker_hears_the_fleet_again(
    fleet_kind: str, request: pytest.FixtureRequest, redis_prefix: str
) -> None:
    with anyio.fail_after(GUARD):
        async with fleet_of_two(fleet_kind, request, redis_prefix, worker) as fleet:
            a_on = [TokenClient(client, TOKEN_A) for client in fleet.clients]
            before = await listen(a_on[1], 1)
            registry: Any = fleet.apps[1].config.tenants
            assert registry.remove(TOKEN_A)
            await before.read()  # its stream ends with its token
            registry.add(TOKEN_A, lambda: announcing_server("alpha"), label="alpha")
            after = await listen(a_on[1], 2)  # a new server: bridged, its channel followed again
            await call(a_on[0], 3, "announce_tools")
            assert await next_method(after) == TOOLS
            after.disconnect()
