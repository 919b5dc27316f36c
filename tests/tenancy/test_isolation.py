"""Tenant isolation beyond sessions: `subscriptions/listen` events stay with their tenant, a shared
subscription bus is refused, results are never cache-public, and tool code sees a redacted token."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import pytest
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context

from asgi_mcp import McpApp, Tenants
from tests.kit.mcp_servers import ALL_TOKENS, TOKEN_A, TOKEN_B
from tests.kit.memory import TokenClient, final_message, serving
from tests.kit.messages import call_tool, request

pytestmark = pytest.mark.anyio

GUARD = 10.0
LISTEN_ALL = {"notifications": {"toolsListChanged": True, "promptsListChanged": True}}


def announcing_server(name: str, **options: Any) -> MCPServer:
    mcp: MCPServer = MCPServer(name, version="1.0.0", **options)

    @mcp.tool()
    async def announce_tools(ctx: Context) -> str:
        await ctx.notify_tools_changed()
        return "tools"

    @mcp.tool()
    async def announce_prompts(ctx: Context) -> str:
        await ctx.notify_prompts_changed()
        return "prompts"

    @mcp.tool()
    def token_seen() -> str:
        access = get_access_token()
        assert access is not None
        return json.dumps({"token": access.token, "client_id": access.client_id, "scopes": access.scopes})

    return mcp


async def _listen(client: TokenClient, request_id: int) -> Any:
    stream = await client.modern(request_id, "subscriptions/listen", LISTEN_ALL)
    assert stream.status == 200
    ack = json.loads((await stream.next_event()).data)
    assert ack["method"] == "notifications/subscriptions/acknowledged", ack
    return stream


async def _call(client: TokenClient, request_id: int, tool: str) -> dict[str, Any]:
    response = await client.modern(request_id, "tools/call", {"name": tool, "arguments": {}})
    return await final_message(response)


async def test_listen_events_of_one_tenant_never_reach_another() -> None:
    tenants = Tenants()
    tenants.add(TOKEN_A, lambda: announcing_server("alpha"), label="alpha")
    tenants.add(TOKEN_B, lambda: announcing_server("bravo"), label="bravo")
    app = McpApp(tenants=tenants)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a, b = TokenClient(client, TOKEN_A), TokenClient(client, TOKEN_B)
            a_stream, b_stream = await _listen(a, 1), await _listen(b, 1)
            await _call(a, 2, "announce_tools")
            assert json.loads((await a_stream.next_event()).data)["method"] == "notifications/tools/list_changed"
            # Had A's event leaked, it would be queued on B's stream before B's own.
            await _call(b, 2, "announce_prompts")
            first = json.loads((await b_stream.next_event()).data)
            assert first["method"] == "notifications/prompts/list_changed"
            a_stream.disconnect()
            b_stream.disconnect()


async def test_a_server_sharing_its_bus_with_another_tenant_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    shared = announcing_server("shared")
    tenants = Tenants()
    tenants.add(TOKEN_A, lambda: shared, label="alpha")
    tenants.add(TOKEN_B, lambda: shared, label="bravo")
    app = McpApp(tenants=tenants)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a, b = TokenClient(client, TOKEN_A), TokenClient(client, TOKEN_B)
            assert "result" in await _call(a, 1, "announce_tools")
            refused = await b.modern(1, "tools/list")
            assert refused.status == 500
            await refused.read()
            # The first tenant keeps working.
            assert "result" in await _call(a, 2, "announce_tools")
    messages = " ".join(record.getMessage() + str(record.exc_info) for record in caplog.records)
    assert "shares its subscription bus with tenant alpha" in messages
    for token in ALL_TOKENS:
        assert token not in messages


async def test_results_are_private_even_when_the_server_says_public(caplog: pytest.LogCaptureFixture) -> None:
    public = {"tools/list": CacheHint(ttl_ms=60_000, scope="public")}
    tenants = Tenants({TOKEN_A: lambda: announcing_server("alpha", cache_hints=public)})
    app = McpApp(tenants=tenants)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            a = TokenClient(client, TOKEN_A)
            for request_id in (1, 2):
                answer = await (await a.modern(request_id, "tools/list")).json()
                assert answer["result"]["cacheScope"] == "private"
                assert answer["result"]["ttlMs"] == 60_000
            session = await a.open_session()
            assert "result" in await a.call(session, request(3, "tools/list"))
    warnings = [r for r in caplog.records if "cacheScope public" in r.getMessage()]
    assert len(warnings) == 1


async def test_tool_code_reads_a_redacted_token_unless_the_operator_opts_in() -> None:
    for expose, expected in ((False, None), (True, TOKEN_A)):
        tenants = Tenants()
        tenants.add(TOKEN_A, lambda: announcing_server("alpha"), label="alpha")
        app = McpApp(tenants=tenants, expose_raw_token=expose)
        with anyio.fail_after(GUARD):
            async with serving(app) as client:
                a = TokenClient(client, TOKEN_A)
                session = await a.open_session()
                answers = [
                    await a.call(session, call_tool(1, "token_seen")),
                    await _call(a, 2, "token_seen"),
                ]
        for answer in answers:
            seen = json.loads(answer["result"]["content"][0]["text"])
            assert seen["client_id"] == "alpha"
            if expected is None:
                assert seen["token"].startswith("sha256:")
                assert TOKEN_A not in seen["token"]
            else:
                assert seen["token"] == expected


@pytest.fixture(autouse=True)
def _capture_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_mcp")


async def test_a_listen_stream_ends_when_its_token_is_rotated_out() -> None:
    tenants = Tenants()
    tenants.add(TOKEN_A, lambda: announcing_server("alpha"), label="alpha")
    app = McpApp(tenants=tenants)
    with anyio.fail_after(GUARD):
        async with serving(app) as client:
            old = TokenClient(client, TOKEN_A)
            stream = await _listen(old, 1)
            tenants.rotate_token(TOKEN_A, TOKEN_B, grace=0)
            with anyio.fail_after(1.0):
                await stream.read()
            new = TokenClient(client, TOKEN_B)
            # Announced after the cut: the old stream got nothing more.
            assert "result" in await _call(new, 2, "announce_tools")
            assert b"list_changed" not in stream.body
