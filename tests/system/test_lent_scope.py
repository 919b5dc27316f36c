"""Which legacy requests use the scope the built-in server lends (`asgi_mcp.request_cancel`).

McpApp served directly, or through the one-call server's shell (which says it enters no cancel scope),
uses it; behind any other wrapper a scope of the wrapper's may sit in between, so the request keeps a
scope of its own. Either way the client's `notifications/cancelled` cancels the handler; what shows
which scope did it is the connection: the lent scope stays cancelled until the app's call returns, so
the server closes the connection after the answer (`connection: close`), while a scope of the
request's own leaves the connection open.
"""

from __future__ import annotations

from typing import Any, Final

import anyio
import httpx
import pytest

from asgi_mcp import McpApp
from asgi_mcp._serving.hypercorn import ServingShell
from tests.kit.builtin import PARSERS, builtin_server
from tests.kit.mcp_servers import Probe, tenant_server
from tests.kit.messages import LEGACY, call_tool, notification, request

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

GUARD: Final = 10.0
HEADERS: Final = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": LEGACY,
}


class PassThrough:
    """A middleware that says nothing about its cancel scopes (it enters none, but could)."""

    def __init__(self, app: McpApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize(("served_as", "lent"), [("direct", True), ("shell", True), ("middleware", False)])
async def test_a_request_cancelled_by_its_client_and_the_scope_that_did_it(
    served_as: str, lent: bool, parser: str
) -> None:
    gate = Probe()
    app = McpApp(tenant_server("alpha", gate=gate), json_response=True)
    served = {"direct": app, "shell": ServingShell(app, None), "middleware": PassThrough(app)}[served_as]
    async with (
        app.lifespan_context(),
        builtin_server(served, parser, lifespan="off") as address,
        httpx.AsyncClient(base_url=address.url, timeout=GUARD) as http,
    ):
        with anyio.fail_after(GUARD):
            params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
            opened = await http.post("/mcp", headers=HEADERS, json=request(0, "initialize", params))
            headers = {**HEADERS, "mcp-session-id": opened.headers["mcp-session-id"]}
            initialized = notification("notifications/initialized")
            assert (await http.post("/mcp", headers=headers, json=initialized)).status_code == 202
            answers: dict[str, httpx.Response] = {}

            async def call() -> None:
                answers["call"] = await http.post("/mcp", headers=headers, json=call_tool(1, "block"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await gate.started.wait()
                cancelled = notification("notifications/cancelled", {"requestId": 1})
                assert (await http.post("/mcp", headers=headers, json=cancelled)).status_code == 202
            answer = answers["call"]
            assert answer.json()["error"]["code"] == -32800
            assert gate.cancelled.is_set()
            assert (answer.headers.get("connection") == "close") is lent
            # The session goes on, on this connection or a new one.
            assert (await http.post("/mcp", headers=headers, json=request(2, "ping"))).status_code == 200
