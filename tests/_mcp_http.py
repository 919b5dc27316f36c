"""MCP over real HTTP with httpx: the legacy session handshake, tools/list and tools/call, per token."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import httpx

from ._mcp import LEGACY, call_tool, initialize, notification, request
from ._sse_decoder import decode_all

ACCEPT: Final = "application/json, text/event-stream"


def headers(token: str | None = None, session_id: str | None = None) -> dict[str, str]:
    out = {"accept": ACCEPT, "content-type": "application/json", "mcp-protocol-version": LEGACY}
    if token is not None:
        out["authorization"] = f"Bearer {token}"
    if session_id is not None:
        out["mcp-session-id"] = session_id
    return out


def answer_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer of a response, JSON or the last SSE message."""
    if response.headers.get("content-type", "").startswith("application/json"):
        return dict(response.json())
    events = [e for e in decode_all(response.content) if e.data]
    assert events, response.text
    return dict(json.loads(events[-1].data))


@dataclass
class Session:
    client: httpx.AsyncClient
    url: str
    token: str | None
    session_id: str
    server_name: str

    async def call(self, request_id: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.client.post(
            self.url, json=request(request_id, method, params), headers=headers(self.token, self.session_id)
        )
        assert response.status_code == 200, response.text
        return answer_of(response)

    async def tool_names(self) -> list[str]:
        result = (await self.call(1, "tools/list"))["result"]
        return sorted(tool["name"] for tool in result["tools"])

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> str:
        response = await self.client.post(
            self.url, json=call_tool(2, name, arguments), headers=headers(self.token, self.session_id)
        )
        assert response.status_code == 200, response.text
        result = answer_of(response)["result"]
        return str(result["content"][0]["text"])


async def open_session(client: httpx.AsyncClient, url: str, token: str | None) -> Session:
    response = await client.post(url, json=initialize(), headers=headers(token))
    assert response.status_code == 200, (response.status_code, response.text)
    answer = answer_of(response)
    session_id = response.headers["mcp-session-id"]
    acked = await client.post(url, json=notification("notifications/initialized"), headers=headers(token, session_id))
    assert acked.status_code == 202, acked.text
    return Session(client, url, token, session_id, answer["result"]["serverInfo"]["name"])
