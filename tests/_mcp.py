"""MCP wire helpers for the in-memory tests: JSON-RPC messages, sessions, modern-era envelopes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
from mcp_types import CLIENT_CAPABILITIES_META_KEY, LOG_LEVEL_META_KEY, PROTOCOL_VERSION_META_KEY

from asgi_mcp import McpApp

from ._asgi_driver import AsgiClient, Response

LEGACY: Final = "2025-11-25"
MODERN: Final = "2026-07-28"


def request(request_id: int | str, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def notification(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def initialize(
    request_id: int = 0, version: str = LEGACY, capabilities: dict[str, Any] | None = None
) -> dict[str, Any]:
    return request(
        request_id,
        "initialize",
        {
            "protocolVersion": version,
            "capabilities": capabilities or {},
            "clientInfo": {"name": "asgi-mcp-tests", "version": "0"},
        },
    )


def call_tool(
    request_id: int, name: str, arguments: dict[str, Any] | None = None, *, progress_token: Any = None
) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments or {}}
    if progress_token is not None:
        params["_meta"] = {"progressToken": progress_token}
    return request(request_id, "tools/call", params)


@asynccontextmanager
async def serving(app: McpApp, **client_options: Any) -> AsyncIterator[AsgiClient]:
    """Run `app` (its lifespan) and yield a client; in-flight app calls are cancelled on exit."""
    async with app.lifespan_context(), anyio.create_task_group() as tg:
        yield AsgiClient(app, tg, **client_options)
        tg.cancel_scope.cancel()


async def open_session(client: AsgiClient, version: str = LEGACY, capabilities: dict[str, Any] | None = None) -> str:
    """initialize + notifications/initialized; returns the session id."""
    response = await client.post(initialize(0, version, capabilities))
    assert response.status == 200, await response.read()
    answer = await final_message(response)
    assert answer["result"]["protocolVersion"] == version
    session_id = response.session_id
    assert session_id is not None
    acked = await client.post(notification("notifications/initialized"), session_id=session_id, version=version)
    assert acked.status == 202
    return session_id


async def final_message(response: Response) -> dict[str, Any]:
    """The JSON-RPC answer of a response, whether it came as JSON or as the last SSE message."""
    if response.content_type == "application/json":
        return await response.json()
    assert response.content_type == "text/event-stream", response.raw_headers
    messages = await response.messages()
    assert messages, response.body
    return messages[-1]


async def session_call(
    client: AsgiClient, session_id: str, message: dict[str, Any], *, version: str = LEGACY
) -> dict[str, Any]:
    response = await client.post(message, session_id=session_id, version=version)
    assert response.status == 200, await response.read()
    return await final_message(response)


def modern(
    request_id: int | str,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    log_level: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-07-28 request: the body with its `_meta` envelope, and the routing headers that match it."""
    body_params = dict(params or {})
    meta = dict(body_params.get("_meta") or {})
    meta[PROTOCOL_VERSION_META_KEY] = MODERN
    meta[CLIENT_CAPABILITIES_META_KEY] = {}
    if log_level is not None:
        meta[LOG_LEVEL_META_KEY] = log_level
    body_params["_meta"] = meta
    all_headers = {"mcp-protocol-version": MODERN, "mcp-method": method}
    if method == "tools/call" or method == "prompts/get":
        all_headers["mcp-name"] = body_params["name"]
    all_headers.update(headers or {})
    return request(request_id, method, body_params), all_headers


async def modern_post(
    client: AsgiClient,
    request_id: int | str,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    wait: bool = True,
    accept: str = "application/json, text/event-stream",
    **options: Any,
) -> Response:
    body, headers = modern(request_id, method, params, **options)
    return await client.post(body, headers=headers, wait=wait, accept=accept)
