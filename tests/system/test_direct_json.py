"""Which JSON answers McpApp hands the built-in server in one call (`asgi_mcp.direct_json`).

McpApp served directly, or through a wrapper that says it passes `send` on as it is (the one-call
server's shell, `INNER_APP_ATTRIBUTE`), answers in one call; behind any other wrapper, and when CORS
adds headers to the answer, it sends the two ASGI messages, so the wrapper sees them. On the wire
both are the same answer.
"""

from __future__ import annotations

from typing import Any, Final

import httpx
import pytest

from asgi_mcp import McpApp
from asgi_mcp._core.asgi import INNER_APP_ATTRIBUTE
from tests.kit.builtin import PARSERS, builtin_server
from tests.kit.mcp_servers import tenant_server
from tests.kit.messages import LEGACY, call_tool, modern, request

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

GUARD: Final = 10.0
ORIGIN: Final = "https://app.example"


class Recorder:
    """A middleware that records the ASGI messages its app sends; with `passes_send_on`, it says
    (`INNER_APP_ATTRIBUTE`) that it hands `send` on as it is."""

    def __init__(self, app: McpApp, *, passes_send_on: bool) -> None:
        self.app = app
        self.sent: list[str] = []
        if passes_send_on:
            setattr(self, INNER_APP_ATTRIBUTE, app)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def recorded(message: Any) -> None:
            self.sent.append(message["type"])
            await send(message)

        await self.app(scope, receive, recorded if scope["type"] == "http" else send)


async def _answers(served: Any, app: McpApp, parser: str, *headers: tuple[str, str]) -> list[tuple[Any, ...]]:
    """A modern `tools/call`, a modern unknown method (an error status), a legacy `initialize` (its
    answer carries a session header) and a legacy `ping`: status, headers but the date, body."""
    answers = []
    async with (
        app.lifespan_context(),
        builtin_server(served, parser, lifespan="off") as address,
        httpx.AsyncClient(base_url=address.url, timeout=GUARD) as http,
    ):
        base = {"accept": "application/json, text/event-stream", "content-type": "application/json", **dict(headers)}
        posts = []
        for method, params in (("tools/call", {"name": "whoami", "arguments": {}}), ("nothing/here", None)):
            body, routing = modern(1, method, params)
            posts.append(({**base, **routing}, body))
        legacy = {**base, "mcp-protocol-version": LEGACY}
        params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
        posts.append((legacy, request(0, "initialize", params)))
        for post_headers, body in posts:
            answer = await http.post("/mcp", headers=post_headers, json=body)
            answers.append(answer)
        session = {**legacy, "mcp-session-id": answers[-1].headers["mcp-session-id"]}
        assert (
            await http.post("/mcp", headers=session, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        ).status_code == 202
        answers.append(await http.post("/mcp", headers=session, json=call_tool(2, "whoami")))
    return [
        (
            answer.status_code,
            [(k, v) for k, v in answer.headers.multi_items() if k not in ("date", "mcp-session-id")],
            answer.content,
        )
        for answer in answers
    ]


@pytest.mark.parametrize("parser", PARSERS)
async def test_an_answer_in_one_call_is_the_answer_the_messages_give(parser: str) -> None:
    direct_app = McpApp(tenant_server("alpha"), json_response=True)
    direct = await _answers(direct_app, direct_app, parser)
    told = McpApp(tenant_server("alpha"), json_response=True)
    passing = Recorder(told, passes_send_on=True)
    shell = await _answers(passing, told, parser)
    hidden = McpApp(tenant_server("alpha"), json_response=True)
    wrapper = Recorder(hidden, passes_send_on=False)
    messages = await _answers(wrapper, hidden, parser)
    assert direct == shell == messages
    assert [status for status, _, _ in direct] == [200, 404, 200, 200]
    assert direct[0][1] == [
        ("content-type", "application/json"),
        ("content-length", str(len(direct[0][2]))),
    ]
    # Behind a wrapper that does not say so, every answer went through it as its two messages; the
    # initialize answer, with its session header, takes the messages' path in any case.
    assert wrapper.sent == ["http.response.start", "http.response.body"] * 5
    assert passing.sent == ["http.response.start", "http.response.body"] * 2  # initialize, initialized's 202


@pytest.mark.parametrize("parser", PARSERS)
async def test_an_answer_with_cors_headers_goes_as_messages(parser: str) -> None:
    app = McpApp(tenant_server("alpha"), json_response=True, cors_origins=[ORIGIN])
    answers = await _answers(app, app, parser, ("origin", ORIGIN))
    for _, headers, _ in answers:
        assert ("access-control-allow-origin", ORIGIN) in headers
