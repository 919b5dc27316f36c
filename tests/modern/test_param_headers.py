"""`asgi_mcp._modern.param_headers`: the `Mcp-Param-*` check and its per-server schema cache.

Driven directly against real SDK servers hosted as the app hosts them (`ServerHost`), with a clock the
test moves: how often the server is listed is what the cache is for. The wire behaviour (400/-32020,
agreement with the SDK's own verdict) is in modern/test_endpoint.py.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.server import Server

from asgi_mcp._core.asgi import HttpRequest
from asgi_mcp._core.http import Headers
from asgi_mcp._core.jsonrpc import Message, classify
from asgi_mcp._kernel.hosting import ServerHost
from asgi_mcp._modern.param_headers import ParamHeaderCheck
from tests.kit.messages import MODERN, modern

pytestmark = pytest.mark.anyio

ROUTED: dict[str, Any] = {"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}}
PLAIN: dict[str, Any] = {"type": "object", "properties": {"region": {"type": "string"}}}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Listing:
    """A low-level server whose `tools/list` is counted, paged `per_page` tools at a time."""

    def __init__(self, schemas: Mapping[str, dict[str, Any]], *, per_page: int = 100, fail: bool = False) -> None:
        self.schemas = dict(schemas)
        self.per_page = per_page
        self.fail = fail
        self.calls = 0
        self.cursors: list[str | None] = []

    def server(self, **options: Any) -> Server[Any]:
        async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
            self.calls += 1
            cursor = params.cursor if params is not None else None
            self.cursors.append(cursor)
            if self.fail:
                raise RuntimeError("listing is broken")
            start = int(cursor or 0)
            names = list(self.schemas)[start : start + self.per_page]
            tools = [types.Tool(name=name, input_schema=self.schemas[name]) for name in names]
            more = start + self.per_page < len(self.schemas)
            return types.ListToolsResult(tools=tools, next_cursor=str(start + self.per_page) if more else None)

        return Server("listing", on_list_tools=list_tools, **options)


@asynccontextmanager
async def hosted(server: Server[Any]) -> AsyncGenerator[ServerHost, None]:
    async with anyio.create_task_group() as tg:
        host = ServerHost(server)
        await host.start(tg)
        try:
            yield host
        finally:
            host.stop()


def call(name: str, arguments: dict[str, Any] | None, headers: dict[str, str]) -> tuple[HttpRequest, Message]:
    raw, _ = modern(1, "tools/call", {"name": name, "arguments": arguments})
    lines = Headers([(key.encode(), value.encode()) for key, value in headers.items()])
    return HttpRequest("POST", "/mcp", lines, {"type": "http"}), classify(raw)


async def verdict(
    check: ParamHeaderCheck, host: ServerHost, name: str, arguments: dict[str, Any] | None, **headers: str
) -> int | None:
    """The rejection's JSON-RPC code, or None when the call passes."""
    request, message = call(name, arguments, {key.replace("_", "-"): value for key, value in headers.items()})
    with anyio.fail_after(5):
        rejection = await check.check(request, message, host, MODERN)
    return None if rejection is None else rejection.code


async def test_listing_is_reused_until_the_ttl_passes() -> None:
    listing, clock = Listing({"routed": ROUTED}), Clock()
    check = ParamHeaderCheck(ttl=5.0, clock=clock)
    async with hosted(listing.server()) as host:
        assert await verdict(check, host, "routed", {"region": "eu"}, mcp_param_region="eu") is None
        assert await verdict(check, host, "routed", {"region": "eu"}, mcp_param_region="us") == -32020
        clock.now += 4.999
        assert await verdict(check, host, "routed", {"region": "eu"}) == -32020
        assert listing.calls == 1
        # The listing changed: seen once the entry expires (exactly at its deadline).
        listing.schemas["routed"] = PLAIN
        clock.now = 105.0
        assert await verdict(check, host, "routed", {"region": "eu"}) is None
        assert listing.calls == 2


async def test_ttl_zero_lists_on_every_call() -> None:
    listing = Listing({"routed": ROUTED})
    check = ParamHeaderCheck(ttl=0.0, clock=Clock())
    async with hosted(listing.server()) as host:
        for _ in range(3):
            assert await verdict(check, host, "routed", {"region": "eu"}, mcp_param_region="eu") is None
        assert listing.calls == 3


async def test_each_server_has_its_own_entry() -> None:
    first, second = Listing({"tool": ROUTED}), Listing({"tool": PLAIN})
    check = ParamHeaderCheck(ttl=60.0, clock=Clock())
    async with hosted(first.server()) as host_a, hosted(second.server()) as host_b:
        assert await verdict(check, host_a, "tool", {"region": "eu"}) == -32020
        assert await verdict(check, host_b, "tool", {"region": "eu"}) is None
        assert await verdict(check, host_a, "tool", {"region": "eu"}) == -32020
        assert (first.calls, second.calls) == (1, 1)


async def test_the_cache_does_not_keep_a_server_alive() -> None:
    check = ParamHeaderCheck(ttl=60.0, clock=Clock())
    async with hosted(Listing({"routed": ROUTED}).server()) as host:
        assert await verdict(check, host, "routed", {"region": "eu"}) == -32020
        gone = weakref.ref(host)
    del host
    gc.collect()
    assert gone() is None


async def test_no_arguments_and_no_param_header_lists_nothing() -> None:
    listing = Listing({"routed": ROUTED})
    check = ParamHeaderCheck(ttl=0.0, clock=Clock())
    async with hosted(listing.server()) as host:
        assert await verdict(check, host, "routed", {}) is None
        assert await verdict(check, host, "routed", None, x_other="1") is None
        assert listing.calls == 0
        # A stray Mcp-Param header alone is reason enough to look.
        assert await verdict(check, host, "routed", {}, mcp_param_region="eu") == -32020
        assert listing.calls == 1


@pytest.mark.parametrize("params", [{"name": 7, "arguments": {}}, {"name": "routed", "arguments": ["eu"]}])
async def test_malformed_params_are_left_to_the_kernel(params: dict[str, Any]) -> None:
    listing = Listing({"routed": ROUTED})
    check = ParamHeaderCheck(ttl=0.0, clock=Clock())
    async with hosted(listing.server()) as host:
        raw, _ = modern(1, "tools/call", params)
        request = HttpRequest("POST", "/mcp", Headers([(b"mcp-param-region", b"eu")]), {"type": "http"})
        assert await check.check(request, classify(raw), host, MODERN) is None
        assert listing.calls == 0


async def test_every_page_is_read() -> None:
    schemas = {f"tool-{i}": PLAIN for i in range(5)} | {"last": ROUTED}
    listing = Listing(schemas, per_page=2)
    check = ParamHeaderCheck(ttl=60.0, clock=Clock())
    async with hosted(listing.server()) as host:
        assert await verdict(check, host, "last", {"region": "eu"}) == -32020
        assert listing.cursors == [None, "2", "4"]


async def test_a_repeated_cursor_ends_the_listing() -> None:
    looping = Listing({})

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        looping.calls += 1
        return types.ListToolsResult(tools=[types.Tool(name="a", input_schema=ROUTED)], next_cursor="again")

    server = Server("looping", on_list_tools=list_tools)
    check = ParamHeaderCheck(ttl=60.0, clock=Clock())
    async with hosted(server) as host:
        assert await verdict(check, host, "a", {"region": "eu"}) == -32020
        assert looping.calls == 2  # the first page, then "again" once: seen before, so the end


async def test_a_failing_listing_fails_open_and_is_not_cached() -> None:
    listing = Listing({"routed": ROUTED}, fail=True)
    check = ParamHeaderCheck(ttl=60.0, clock=Clock())
    async with hosted(listing.server()) as host:
        assert await verdict(check, host, "routed", {"region": "eu"}) is None
        listing.fail = False
        assert await verdict(check, host, "routed", {"region": "eu"}) == -32020
        assert listing.calls == 2


async def test_a_server_without_tools_list_is_not_checked() -> None:
    check = ParamHeaderCheck(ttl=60.0, clock=Clock())
    async with hosted(Server("bare")) as host:
        assert await verdict(check, host, "routed", {"region": "eu"}, mcp_param_region="us") is None


def routed_only(name: str) -> dict[str, Any] | None:
    return ROUTED if name == "routed" else None


def knows_nothing(name: str) -> None:
    return None


def broken_lookup(name: str) -> None:
    raise RuntimeError(name)


@pytest.mark.parametrize(
    ("lookup", "expected"),
    [(routed_only, -32020), (knows_nothing, None), (broken_lookup, None)],  # a raising lookup fails open
)
async def test_the_servers_own_lookup_wins_over_listing(lookup: Callable[[str], Any], expected: int | None) -> None:
    listing = Listing({"routed": PLAIN})
    check = ParamHeaderCheck(ttl=60.0, clock=Clock())
    async with hosted(listing.server(get_tool_input_schema=lookup)) as host:
        assert await verdict(check, host, "routed", {"region": "eu"}) == expected
        assert listing.calls == 0


class CountingSchema(dict[str, Any]):
    """A schema that counts the walks over it (each walk reads its keywords through `items()`)."""

    walks = 0

    def items(self) -> Any:
        self.walks += 1
        return super().items()


async def test_the_lookups_schema_is_judged_once_per_object() -> None:
    # MCPServer's lookup hands back the tool's own schema object on every call: a schema with no
    # `Mcp-Param-*` header is walked once, then every call with it costs a lookup and an identity test.
    plain = CountingSchema(PLAIN)
    schemas: dict[str, dict[str, Any]] = {"tool": plain}
    check = ParamHeaderCheck(ttl=60.0, clock=Clock())
    async with hosted(Server("lookup", get_tool_input_schema=schemas.get)) as host:
        assert await verdict(check, host, "tool", {"region": "eu"}) is None
        judged = plain.walks
        assert judged > 0
        for _ in range(3):
            assert await verdict(check, host, "tool", {"region": "eu"}) is None
            assert await verdict(check, host, "tool", {"region": "eu"}, mcp_param_region="us") is None
        assert plain.walks == judged
        # The tool replaced by one that routes on `region`: a new object, judged afresh, and enforced.
        schemas["tool"] = dict(ROUTED)
        assert await verdict(check, host, "tool", {"region": "eu"}, mcp_param_region="us") == -32020
        assert await verdict(check, host, "tool", {"region": "eu"}, mcp_param_region="eu") is None
        assert await verdict(check, host, "tool", {"region": "eu"}) == -32020
        # And back to a plain one: passes again.
        schemas["tool"] = PLAIN
        assert await verdict(check, host, "tool", {"region": "eu"}, mcp_param_region="us") is None
