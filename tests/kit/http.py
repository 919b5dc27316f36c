"""MCP over real HTTP with httpx: request headers, the answer in a response, and the legacy session of one
bearer token (`tests.kit.memory.TokenClient` is its twin in memory)."""

from __future__ import annotations

import json
from typing import Any, Final

import httpx

from .messages import LEGACY, call_tool, initialize, notification, request
from .sse import decode_all

ACCEPT: Final = "application/json, text/event-stream"


def headers(token: str | None = None, session_id: str | None = None, **extra: str) -> dict[str, str]:
    """The headers of a legacy-era request: `token` as a bearer token, `extra` added last."""
    out = {"accept": ACCEPT, "content-type": "application/json", "mcp-protocol-version": LEGACY}
    if token is not None:
        out["authorization"] = f"Bearer {token}"
    if session_id is not None:
        out["mcp-session-id"] = session_id
    out.update(extra)
    return out


def answer_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer of a response, JSON or the last SSE message."""
    if response.headers.get("content-type", "").startswith("application/json"):
        return dict(response.json())
    events = [e for e in decode_all(response.content) if e.data]
    assert events, response.text
    return dict(json.loads(events[-1].data))


class HttpSession:
    """The legacy-era MCP client of one bearer token (or none) at `url`.

    `open_session()` runs the handshake and returns the new session's id; the latest one (and the
    server's name) stays on the object, so `tool_names()` and `call_tool()` work without an id.
    """

    def __init__(self, http: httpx.AsyncClient, url: str, token: str | None) -> None:
        self.http = http
        self.url = url
        self.token = token
        self.session_id: str | None = None
        self.server_name: str | None = None

    def headers(self, session_id: str | None = None, **extra: str) -> dict[str, str]:
        return headers(self.token, session_id, **extra)

    async def post(self, message: dict[str, Any], session_id: str | None = None) -> httpx.Response:
        return await self.http.post(self.url, content=json.dumps(message), headers=self.headers(session_id))

    async def open_session(self) -> str:
        response = await self.post(initialize(0))
        assert response.status_code == 200, (response.status_code, response.text)
        answer = answer_of(response)
        assert answer["result"]["protocolVersion"] == LEGACY, answer
        session_id = response.headers["mcp-session-id"]
        acked = await self.post(notification("notifications/initialized"), session_id)
        assert acked.status_code == 202, acked.text
        self.session_id, self.server_name = session_id, answer["result"]["serverInfo"]["name"]
        return session_id

    def _session(self, session_id: str | None) -> str:
        chosen = session_id if session_id is not None else self.session_id
        assert chosen is not None, "no session opened"
        return chosen

    async def call(self, session_id: str | None, message: dict[str, Any]) -> dict[str, Any]:
        """One request on a session (None: the latest one); asserts a 200 and returns its answer."""
        response = await self.post(message, self._session(session_id))
        assert response.status_code == 200, (response.status_code, response.text)
        return answer_of(response)

    async def tool_names(self, session_id: str | None = None) -> list[str]:
        result = (await self.call(session_id, request(1, "tools/list")))["result"]
        return sorted(tool["name"] for tool in result["tools"])

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | None = None, *, session_id: str | None = None
    ) -> str:
        result = (await self.call(session_id, call_tool(2, name, arguments)))["result"]
        return str(result["content"][0]["text"])


async def open_session(http: httpx.AsyncClient, url: str, token: str | None) -> HttpSession:
    """A client of `token` at `url` with a session open (`.session_id`, `.server_name`)."""
    session = HttpSession(http, url, token)
    await session.open_session()
    return session
