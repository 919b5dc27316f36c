"""Raw MCP over real HTTP with httpx, for the per-bearer server tests (`test_server.py`).

`headers` builds the request headers of a bearer-authenticated client; `open_session` runs the
legacy handshake and returns a small session object that lists and calls tools.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Final

import httpx

VERSION: Final = "2025-11-25"


def headers(token: str, session_id: str | None = None) -> dict[str, str]:
    result = {
        "authorization": f"Bearer {token}",
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": VERSION,
    }
    if session_id is not None:
        result["mcp-session-id"] = session_id
    return result


def _answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer in a response: a JSON body, or the last `data:` line of an SSE body."""
    assert response.status_code == 200, (response.status_code, response.text)
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    messages = [json.loads(item) for item in data if item]
    assert messages, response.text
    return messages[-1]


@dataclass
class LiveSession:
    client: httpx.AsyncClient
    url: str
    token: str
    session_id: str
    server_name: str
    _ids: Any = field(default_factory=lambda: count(1))

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self._ids), "method": method}
        if params is not None:
            body["params"] = params
        response = await self.client.post(self.url, json=body, headers=headers(self.token, self.session_id))
        answer = _answer(response)
        assert "result" in answer, answer
        return answer["result"]

    async def tool_names(self) -> list[str]:
        return [tool["name"] for tool in (await self.request("tools/list"))["tools"]]

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> str:
        result = await self.request("tools/call", {"name": name, "arguments": arguments or {}})
        return str(result["content"][0]["text"])


async def open_session(client: httpx.AsyncClient, url: str, token: str) -> LiveSession:
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": VERSION,
            "capabilities": {},
            "clientInfo": {"name": "live-tests", "version": "0"},
        },
    }
    response = await client.post(url, json=init, headers=headers(token))
    answer = _answer(response)
    session_id = response.headers["mcp-session-id"]
    acked = await client.post(
        url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers(token, session_id)
    )
    assert acked.status_code == 202, acked.text
    return LiveSession(client, url, token, session_id, answer["result"]["serverInfo"]["name"])
