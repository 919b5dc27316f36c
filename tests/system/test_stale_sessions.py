"""Session ids that outlived their server (a restart, a crash, another replica): every route answers
404 with the JSON-RPC error the spec asks for (-32600 "Session not found"), so clients start a new
session; an `initialize` carrying the stale id starts one. Over the real ASGI interface with a fresh
app standing in for the restarted server, and over real HTTP across a restart on the same port.
Real clients (the Python and TypeScript SDKs) across a real restart: tests/interop/test_restart.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
import httpx
import pytest
from mcp.server import MCPServer

from asgi_mcp import McpApp, Tenants, create_per_bearer_server
from tests.kit.http import headers as http_headers
from tests.kit.http import open_session as open_http_session
from tests.kit.mcp_servers import TOKEN_A, UNKNOWN_TOKEN, factory_of
from tests.kit.memory import AsgiClient, Response, TokenClient, final_message, modern_post, open_session, serving
from tests.kit.messages import LEGACY, call_tool, initialize, notification, request

pytestmark = pytest.mark.anyio

GUARD: Final = 10.0


def not_found(request_id: int | str | None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32600, "message": "Session not found"}}


def echo_server() -> MCPServer:
    mcp = MCPServer("echo", version="1.0.0")

    @mcp.tool()
    def echo(text: str) -> str:
        return text

    return mcp


async def stale_session_id(**options: Any) -> str:
    """A session opened on an app that has since stopped."""
    async with serving(McpApp(echo_server(), **options)) as client:
        return await open_session(client)


Route = Callable[[AsgiClient, str], Awaitable[Response]]
ROUTES: Final[dict[str, tuple[Route, int | str | None]]] = {
    "POST request": (lambda c, sid: c.post(call_tool(5, "echo", {"text": "x"}), session_id=sid, version=LEGACY), 5),
    "POST string id": (
        lambda c, sid: c.post(request("req-7", "tools/list"), session_id=sid, version=LEGACY),
        "req-7",
    ),
    "POST notification": (
        lambda c, sid: c.post(notification("notifications/initialized"), session_id=sid, version=LEGACY),
        None,
    ),
    "POST response": (
        lambda c, sid: c.post({"jsonrpc": "2.0", "id": 9, "result": {}}, session_id=sid, version=LEGACY),
        None,
    ),
    "GET": (lambda c, sid: c.get(sid, version=LEGACY), None),
    "DELETE": (lambda c, sid: c.delete(sid), None),
}


@pytest.mark.parametrize("json_response", [False, True], ids=["sse", "json"])
@pytest.mark.parametrize("route", list(ROUTES))
async def test_every_route_answers_a_stale_session_with_404_and_the_jsonrpc_error(
    route: str, json_response: bool
) -> None:
    send, request_id = ROUTES[route]
    with anyio.fail_after(GUARD):
        stale = await stale_session_id(json_response=json_response)
        async with serving(McpApp(echo_server(), json_response=json_response)) as client:
            response = await send(client, stale)
            body = await response.json()
    assert response.status == 404
    assert response.content_type == "application/json"
    assert response.session_id is None  # no new id on a refusal: the client must initialize
    assert body == not_found(request_id)


async def test_initialize_with_a_stale_session_id_starts_a_new_session() -> None:
    with anyio.fail_after(GUARD):
        stale = await stale_session_id()
        async with serving(McpApp(echo_server())) as client:
            refused = await client.post(call_tool(1, "echo", {"text": "x"}), session_id=stale, version=LEGACY)
            assert refused.status == 404
            await refused.read()
            # The client re-initializes; some send the old id along.
            response = await client.post(initialize(0), session_id=stale)
            assert response.status == 200
            assert (await final_message(response))["result"]["protocolVersion"] == LEGACY
            fresh = response.session_id
            assert fresh is not None
            assert fresh != stale
            acked = await client.post(notification("notifications/initialized"), session_id=fresh, version=LEGACY)
            assert acked.status == 202
            answer = await final_message(
                await client.post(call_tool(2, "echo", {"text": "again"}), session_id=fresh, version=LEGACY)
            )
            assert answer["result"]["content"][0]["text"] == "again"
            still_stale = await client.post(request(3, "ping"), session_id=stale, version=LEGACY)
            assert still_stale.status == 404


async def test_modern_requests_ignore_a_stale_session_id() -> None:
    """2026-07-28 requests carry no session: a leftover Mcp-Session-Id must not turn them away."""
    with anyio.fail_after(GUARD):
        stale = await stale_session_id()
        async with serving(McpApp(echo_server())) as client:
            response = await modern_post(
                client, 1, "tools/call", {"name": "echo", "arguments": {"text": "m"}}, headers={"mcp-session-id": stale}
            )
            answer = await final_message(response)
    assert response.status == 200
    assert answer["result"]["content"][0]["text"] == "m"


def tenants_app() -> McpApp:
    tenants = Tenants()
    tenants.add(TOKEN_A, factory_of("alpha"), label="alpha")
    return McpApp(tenants=tenants)


async def test_tenants_a_valid_token_with_a_stale_session_gets_404_not_401() -> None:
    with anyio.fail_after(GUARD):
        async with serving(tenants_app()) as client:
            stale = await TokenClient(client, TOKEN_A).open_session()
        async with serving(tenants_app()) as client:
            alpha = TokenClient(client, TOKEN_A)
            response = await alpha.post(call_tool(4, "whoami"), session_id=stale)
            assert response.status == 404
            assert await response.json() == not_found(4)
            deleted = await alpha.delete(stale)
            assert deleted.status == 404
            assert await deleted.json() == not_found(None)
            # Credentials are checked first: an unknown token learns nothing about session ids.
            unknown = await TokenClient(client, UNKNOWN_TOKEN).post(call_tool(5, "whoami"), session_id=stale)
            assert unknown.status == 401
            await unknown.read()


@pytest.mark.integration
async def test_a_restart_on_the_same_port_answers_old_sessions_with_404() -> None:
    """Real HTTP: the one-call server stops and a fresh one serves the same port and token."""

    def server(port: int = 0) -> Any:
        return create_per_bearer_server(port=port, shutdown_timeout=1.0).add_token(TOKEN_A, factory_of("alpha"))

    first = server()
    async with httpx.AsyncClient(timeout=GUARD) as client:
        with anyio.fail_after(GUARD):
            info = await first.start()
            session = await open_http_session(client, info.url, TOKEN_A)
            assert await session.call_tool("whoami") == "alpha"
            await first.stop()

            second = server(info.port)
            async with second:
                assert (again := second.server_info()) is not None
                assert again.url == info.url
                stale = http_headers(TOKEN_A, session.session_id)
                answers = [
                    await client.post(info.url, json=call_tool(6, "whoami"), headers=stale),
                    await client.post(info.url, json=notification("notifications/initialized"), headers=stale),
                    await client.get(info.url, headers={**stale, "accept": "text/event-stream"}),
                    await client.delete(info.url, headers=stale),
                ]
                for answer, request_id in zip(answers, (6, None, None, None), strict=True):
                    assert answer.status_code == 404, answer.text
                    assert answer.headers["content-type"].startswith("application/json")
                    assert "mcp-session-id" not in answer.headers
                    assert answer.json() == not_found(request_id)
                renewed = await open_http_session(client, info.url, TOKEN_A)
                assert renewed.session_id != session.session_id
                assert await renewed.call_tool("whoami") == "alpha"
