"""Interop: real SDK clients across a real server restart on the same port.

A fresh `McpApp` replaces the running one on the same 127.0.0.1 port (uvicorn for the asyncio
backend, hypercorn's Trio worker for trio), as after a deploy or a crash. The client's next call
carries a session id the new server never issued: it gets 404 with the JSON-RPC error
-32600 "Session not found", and the client starts a new session.

What each SDK does with that 404 (neither re-initializes by itself):
- Python SDK 2.3 (`mcp.client.streamable_http` + `ClientSession`): the call raises `MCPError` with
  the server's error (code -32600, "Session not found"). `session.initialize()` on that session
  returns the handshake it already has, so the application opens a new transport and session
  (closing the old one sends a DELETE with the stale id, which gets 404 too).
- TypeScript SDK 1.32.2 (`StreamableHTTPClientTransport`): the call rejects with a
  `StreamableHTTPError` whose `code` is 404 and whose message carries the JSON-RPC error body.
  The transport keeps the stale id, and `Client.connect` skips `initialize` on a transport that has
  one, so the application re-initializes with a new transport and client.

    pytest -p anyio tests/interop/test_restart.py -q          (the TypeScript test: -m node)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
import anyio.abc
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from node_env import NodeEnv
from node_session import json_lines
from test_ts_client import PROTOCOL, build_app, serve_app

pytestmark = pytest.mark.integration

RESTART_CLIENT: Final = Path(__file__).resolve().parent / "restart_client.mjs"
GUARD: Final = 60.0  # seconds for a whole test: two server starts, a stop, a node process
# Open SSE streams (the clients' GET streams) are cut after this long when a server stops.
GRACEFUL: Final = 1.0


class RestartableServer:
    """A fresh app served on one port by a task of its own; `restart()` stops it and serves a new
    app on the same port. (The serving task owns the server's task group, so a client opened in
    the test's task may outlive a server.)"""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.url = ""
        self.generation = 0
        self._replace = anyio.Event()
        self._serving = anyio.Event()
        self._done = False

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        port = 0
        while not self._done:
            self._replace = anyio.Event()
            async with serve_app(build_app(shutdown_timeout=GRACEFUL), self.backend, port=port, graceful=GRACEFUL) as s:
                if port:
                    assert s.url == self.url, "the restarted server must serve the same URL"
                self.url, port = s.url, int(urlsplit(s.url).port or 0)
                self.generation += 1
                if self.generation == 1:
                    task_status.started()
                self._serving.set()
                await self._replace.wait()

    async def restart(self) -> None:
        self._serving = anyio.Event()
        self._replace.set()
        await self._serving.wait()

    def finish(self) -> None:
        self._done = True
        self._replace.set()


@asynccontextmanager
async def restartable(backend: str) -> AsyncIterator[RestartableServer]:
    server = RestartableServer(backend)
    async with anyio.create_task_group() as tg:
        await tg.start(server.run)
        try:
            yield server
        finally:
            server.finish()


def text_of(result: Any) -> str:
    assert not result.is_error, result
    return str(result.content[0].text)


@pytest.mark.anyio
async def test_python_sdk_client_gets_404_and_reinitializes(anyio_backend: str) -> None:
    with anyio.fail_after(GUARD):
        async with restartable(anyio_backend) as server:
            async with streamable_http_client(server.url) as (read, write), ClientSession(read, write) as session:
                first = await session.initialize()
                assert first.protocol_version == PROTOCOL
                assert text_of(await session.call_tool("echo", {"text": "before"})) == "before"

                await server.restart()
                assert server.generation == 2
                with pytest.raises(MCPError) as caught:
                    await session.call_tool("echo", {"text": "after"})
                assert (caught.value.code, caught.value.message) == (-32600, "Session not found")
                # No transparent re-initialization: initialize() returns the handshake it has.
                assert await session.initialize() is first
            # Re-initializing is the application's part: a new transport and session.
            async with streamable_http_client(server.url) as (read, write), ClientSession(read, write) as session:
                again = await session.initialize()
                assert again.protocol_version == PROTOCOL
                assert text_of(await session.call_tool("echo", {"text": "renewed"})) == "renewed"


@pytest.mark.node
@pytest.mark.anyio
async def test_typescript_sdk_client_gets_404_and_reinitializes(anyio_backend: str, node_env: NodeEnv) -> None:
    events: list[dict[str, Any]] = []
    with anyio.fail_after(GUARD):
        async with restartable(anyio_backend) as server:
            command = [node_env.node, str(RESTART_CLIENT), server.url]
            async with await anyio.open_process(command, env=node_env.env()) as process:
                assert process.stdin is not None
                assert process.stdout is not None
                async for event in json_lines(process.stdout):
                    events.append(event)
                    if event["type"] == "ready":
                        await server.restart()
                        await process.stdin.send(b"restarted\n")
                returncode = await process.wait()
    kinds = [event["type"] for event in events]
    assert returncode == 0, events
    assert "error" not in kinds, events
    first, second = (event for event in events if event["type"] == "connected")
    assert [event["result"]["content"][0]["text"] for event in events if event["type"] == "before"] == ["before"]

    [refused] = [event for event in events if event["type"] == "after_error"]
    assert refused["class"] == "StreamableHTTPError", refused
    assert refused["code"] == 404, refused
    body = json.loads(refused["message"].split("Error POSTing to endpoint: ", 1)[1])
    assert body["error"] == {"code": -32600, "message": "Session not found"}, refused
    assert refused["sessionId"] == first["sessionId"], "the transport keeps the stale id"

    assert second["sessionId"] != first["sessionId"]
    [renewed] = [event for event in events if event["type"] == "renewed"]
    assert renewed["result"]["content"][0]["text"] == "renewed"
    # The first client reports its GET stream cut by the restart and the refused POST; the second
    # reports aborting its own GET stream when it closes (as in test_ts_client). The rest is in order.
    ordered = [kind for kind in kinds if kind != "transport_error"]
    assert ordered == ["connected", "before", "ready", "after_error", "connected", "renewed", "terminated", "closed"]
    terminated = kinds.index("terminated")
    late = [
        i for i, event in enumerate(events) if event["type"] == "transport_error" and event["connection"] == "second"
    ]
    assert all(i > terminated for i in late), events
