"""Helpers for the tenancy, auth and events tests: per-tenant servers, an authenticated in-memory
client, an event recorder, and the app served over real HTTP (uvicorn on asyncio, hypercorn on Trio).
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from asgi_mcp import McpApp
from asgi_mcp._ops.lifecycle import EVENT_NAMES

from ._asgi_driver import AsgiClient, Response
from ._mcp import LEGACY, final_message, initialize, modern, notification, request
from ._polling import wait_until

# Distinctive raw tokens, so a leak anywhere is found by a substring search.
TOKEN_A: Final = "sk-alpha-7Qm2xR9vLp4Tz8Wn"
TOKEN_B: Final = "sk-bravo-3Jd6Hs1Kf5Gc0Yb"
TOKEN_C: Final = "sk-charlie-8Ue4Ni2Ow7Pa5Zq"
UNKNOWN_TOKEN: Final = "sk-unknown-1Xv9Bt6Rm3Lc"
ALL_TOKENS: Final = (TOKEN_A, TOKEN_B, TOKEN_C, UNKNOWN_TOKEN)


# -- servers --------------------------------------------------------------------------------------


@dataclass
class Gate:
    """A tool's handshake with the test: `started` when it runs, it waits for `release`."""

    started: anyio.Event = field(default_factory=anyio.Event)
    release: anyio.Event = field(default_factory=anyio.Event)
    cancelled: anyio.Event = field(default_factory=anyio.Event)
    finished: anyio.Event = field(default_factory=anyio.Event)


@dataclass
class Lifespans:
    entered: int = 0
    exited: int = 0


def tenant_server(name: str, *, gate: Gate | None = None, lifespans: Lifespans | None = None) -> MCPServer:
    """A server whose tools name it: `<name>_only`, `whoami`, plus `block` (waits on `gate`) and `fail`."""
    gate = gate if gate is not None else Gate()

    @asynccontextmanager
    async def lifespan(server: Any) -> AsyncIterator[dict[str, Any]]:
        if lifespans is not None:
            lifespans.entered += 1
        try:
            yield {}
        finally:
            if lifespans is not None:
                lifespans.exited += 1

    mcp: MCPServer = MCPServer(name, version="1.0.0", lifespan=lifespan)

    @mcp.tool(name=f"{name}_only")
    def only() -> str:
        return name

    @mcp.tool()
    def whoami() -> str:
        return name

    @mcp.tool()
    async def block() -> str:
        gate.started.set()
        try:
            await gate.release.wait()
            return f"released by {name}"
        except anyio.get_cancelled_exc_class():
            gate.cancelled.set()
            raise
        finally:
            gate.finished.set()

    @mcp.tool()
    def fail() -> str:
        raise ToolError("the tool refused")

    return mcp


def factory_of(name: str, **options: Any) -> Callable[[], MCPServer]:
    return lambda: tenant_server(name, **options)


# -- in-memory client -----------------------------------------------------------------------------


class TokenClient:
    """`AsgiClient` requests carrying `Authorization: Bearer <token>` (or none with token=None)."""

    def __init__(self, client: AsgiClient, token: str | None) -> None:
        self.client = client
        self.token = token

    def _auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token is not None else {}

    async def post(
        self,
        message: Any,
        *,
        session_id: str | None = None,
        version: str | None = LEGACY,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        return await self.client.post(
            message, session_id=session_id, version=version, headers={**self._auth(), **(headers or {})}
        )

    async def get(self, session_id: str) -> Response:
        headers = {"accept": "text/event-stream", "mcp-session-id": session_id, "mcp-protocol-version": LEGACY}
        return await self.client.request("GET", headers={**headers, **self._auth()})

    async def delete(self, session_id: str) -> Response:
        headers = {"mcp-session-id": session_id, "mcp-protocol-version": LEGACY}
        return await self.client.request("DELETE", headers={**headers, **self._auth()})

    async def open_session(self) -> str:
        response = await self.client.post(initialize(0), headers=self._auth())
        assert response.status == 200, await response.read()
        answer = await final_message(response)
        assert answer["result"]["protocolVersion"] == LEGACY, answer
        session_id = response.session_id
        assert session_id is not None
        acked = await self.post(notification("notifications/initialized"), session_id=session_id)
        assert acked.status == 202
        return session_id

    async def call(self, session_id: str, message: dict[str, Any]) -> dict[str, Any]:
        response = await self.post(message, session_id=session_id)
        assert response.status == 200, (response.status, await response.read())
        return await final_message(response)

    async def tool_names(self, session_id: str) -> set[str]:
        answer = await self.call(session_id, request(1, "tools/list"))
        return {tool["name"] for tool in answer["result"]["tools"]}

    async def modern(self, request_id: int, method: str, params: dict[str, Any] | None = None) -> Response:
        body, headers = modern(request_id, method, params)
        return await self.client.post(body, headers={**headers, **self._auth()})


# -- events ---------------------------------------------------------------------------------------


class Recorder:
    """Records every event of the app (sync listeners, delivered by the hub's workers)."""

    def __init__(self, app: McpApp, names: Iterable[str] = EVENT_NAMES) -> None:
        self.events: list[Any] = []
        for name in names:
            app.on(name, self.events.append)  # type: ignore[arg-type]

    def of(self, name: str) -> list[Any]:
        return [event for event in self.events if event.name == name]

    async def wait_for(self, name: str, count: int = 1, **fields: Any) -> list[Any]:
        def matching() -> list[Any]:
            return [e for e in self.of(name) if all(getattr(e, k) == v for k, v in fields.items())]

        await wait_until(lambda: len(matching()) >= count)
        return matching()


def challenge_params(value: str) -> dict[str, str]:
    """Parse a `Bearer k="v", ...` challenge (quoted-string escapes undone)."""
    assert value.startswith("Bearer"), value
    rest = value[len("Bearer") :].strip()
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        eq = rest.index("=", i)
        key = rest[i:eq].strip().lstrip(",").strip()
        assert rest[eq + 1] == '"', value
        j, chars = eq + 2, []
        while rest[j] != '"':
            if rest[j] == "\\":
                j += 1
            chars.append(rest[j])
            j += 1
        params[key] = "".join(chars)
        i = j + 1
        while i < len(rest) and rest[i] in ", ":
            i += 1
    return params


# -- real HTTP ------------------------------------------------------------------------------------

READY_TIMEOUT: Final = 10.0
STOP_TIMEOUT: Final = 10.0


async def _wait_for_port(port: int) -> None:
    with anyio.fail_after(READY_TIMEOUT):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.lowlevel.checkpoint()
                continue
            await stream.aclose()
            return


@asynccontextmanager
async def _serve_uvicorn(app: McpApp) -> AsyncIterator[str]:
    import uvicorn

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Any:  # the test process keeps its own signal handlers
            yield

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", http="h11", ws="none", log_level="warning", timeout_graceful_shutdown=2)
    server = Server(config)
    stopped = anyio.Event()

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            stopped.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            try:
                await _wait_for_port(port)
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
                with anyio.move_on_after(STOP_TIMEOUT, shield=True):
                    await stopped.wait()
                tg.cancel_scope.cancel()
    finally:
        sock.close()


@asynccontextmanager
async def _serve_hypercorn_trio(app: McpApp) -> AsyncIterator[str]:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 2
    config.accesslog = None
    config.loglevel = "WARNING"
    shutdown = anyio.Event()
    stopped = anyio.Event()

    async def run(*, task_status: Any) -> None:
        try:
            await serve(app, config, shutdown_trigger=shutdown.wait, task_status=task_status, mode="asgi")  # type: ignore[arg-type]
        finally:
            stopped.set()

    async with anyio.create_task_group() as tg:
        with anyio.fail_after(READY_TIMEOUT):
            binds: list[str] = await tg.start(run)
        port = int(binds[0].rsplit(":", 1)[1])
        try:
            await _wait_for_port(port)
            yield f"http://127.0.0.1:{port}"
        finally:
            shutdown.set()
            with anyio.move_on_after(STOP_TIMEOUT, shield=True):
                await stopped.wait()
            tg.cancel_scope.cancel()


@asynccontextmanager
async def serve_http(app: McpApp, backend: str) -> AsyncIterator[str]:
    """Serve `app` on a free 127.0.0.1 port; yields the base URL (uvicorn on asyncio, hypercorn on Trio)."""
    server = _serve_uvicorn(app) if backend == "asyncio" else _serve_hypercorn_trio(app)
    async with server as base:
        yield base


class HttpSession:
    """A legacy-era MCP client over httpx for one token."""

    def __init__(self, http: httpx.AsyncClient, url: str, token: str | None) -> None:
        self.http = http
        self.url = url
        self.token = token

    def headers(self, session_id: str | None = None, **extra: str) -> dict[str, str]:
        headers = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            "mcp-protocol-version": LEGACY,
        }
        if self.token is not None:
            headers["authorization"] = f"Bearer {self.token}"
        if session_id is not None:
            headers["mcp-session-id"] = session_id
        headers.update(extra)
        return headers

    async def post(self, message: dict[str, Any], session_id: str | None = None) -> httpx.Response:
        return await self.http.post(self.url, content=json.dumps(message), headers=self.headers(session_id))

    async def open_session(self) -> str:
        response = await self.post(initialize(0))
        assert response.status_code == 200, response.text
        assert sse_answer(response)["result"]["protocolVersion"] == LEGACY
        session_id = response.headers["mcp-session-id"]
        acked = await self.post(notification("notifications/initialized"), session_id)
        assert acked.status_code == 202
        return session_id

    async def call(self, session_id: str, message: dict[str, Any]) -> dict[str, Any]:
        response = await self.post(message, session_id)
        assert response.status_code == 200, response.text
        return sse_answer(response)


def sse_answer(response: httpx.Response) -> dict[str, Any]:
    """The last JSON-RPC message of an SSE (or JSON) response body."""
    if response.headers.get("content-type", "").startswith("application/json"):
        return dict(response.json())
    messages = [
        json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:") and line[5:].strip()
    ]
    assert messages, response.text
    return dict(messages[-1])
