"""A legacy call whose token's hold is cut while its session lives on, on every real server.

A tenant's exchange runs inside the token's hold, a cancel scope of McpApp's own; cutting it ends the
exchange (its answer is the token's refusal), but in the 2025 era the handler runs shielded and
finishes. On the built-in server, which lends the scope of the app's call (`asgi_mcp.request_cancel`),
a held request keeps a shield of its own: the lent scope would let the cut reach the handler.
"""

from __future__ import annotations

from typing import Any, Final

import anyio
import httpx
import pytest

from asgi_mcp import McpApp, Tenants
from tests.kit.mcp_servers import TOKEN_A, TOKEN_B, Probe, tenant_server
from tests.kit.messages import LEGACY, call_tool, notification, request
from tests.kit.real_servers import SERVERS

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

GUARD: Final = 10.0
ACCEPT: Final = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def bearer(token: str, session_id: str | None = None) -> dict[str, str]:
    headers = {**ACCEPT, "authorization": f"Bearer {token}", "mcp-protocol-version": LEGACY}
    return headers if session_id is None else {**headers, "mcp-session-id": session_id}


async def open_session(http: httpx.AsyncClient, token: str) -> str:
    params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
    opened = await http.post("/mcp", headers=bearer(token), json=request(0, "initialize", params))
    session_id = opened.headers["mcp-session-id"]
    initialized = notification("notifications/initialized")
    assert (await http.post("/mcp", headers=bearer(token, session_id), json=initialized)).status_code == 202
    return session_id


async def test_a_cut_hold_ends_the_exchange_and_leaves_its_handler_running(server_name: str) -> None:
    gate = Probe()
    tenants = Tenants({TOKEN_A: lambda: tenant_server("alpha", gate=gate)})
    app = McpApp(tenants=tenants, json_response=True)
    async with SERVERS[server_name][1](app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=GUARD) as http:
        with anyio.fail_after(GUARD * 2):
            session_id = await open_session(http, TOKEN_A)
            answers: dict[str, Any] = {}

            async def call() -> None:
                response = await http.post("/mcp", headers=bearer(TOKEN_A, session_id), json=call_tool(1, "block"))
                answers["status"] = response.status_code

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await gate.started.wait()
                tenants.rotate_token(TOKEN_A, TOKEN_B, grace=300)
                # The session moves to the new token, so removing the old one ends only its exchanges.
                ping = await http.post("/mcp", headers=bearer(TOKEN_B, session_id), json=request(2, "ping"))
                assert ping.status_code == 200
                assert tenants.remove(TOKEN_A)
                gate.release.set()
            assert answers["status"] == 401  # the exchange ended with its token
            await gate.finished.wait()
            assert not gate.cancelled.is_set()  # the handler was not: it ran to its end
            again = await http.post("/mcp", headers=bearer(TOKEN_B, session_id), json=request(3, "ping"))
            assert again.status_code == 200
