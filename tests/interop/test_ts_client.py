"""Interop: the official TypeScript SDK 1.32.2 client against `McpApp` on real servers.

Each test runs `McpApp` in the test's own event loop on a free 127.0.0.1 port — uvicorn for the
asyncio backend, hypercorn's Trio worker for the trio backend, the built-in server on both — or
under the `granian` command in a process of its own (asyncio), and drives it with
`node tests/interop/client.mjs` (StreamableHTTPClientTransport), asserting on the JSON lines the
client prints. The pinned npm packages are installed once by `node_env.ensure_node_env()`.

    pytest -p anyio tests/interop -q -m node
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import pytest
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from node_env import NodeEnv

from asgi_mcp import McpApp
from tests.kit.builtin import builtin_url
from tests.kit.real_servers import granian_server, hypercorn_trio_server, uvicorn_server

pytestmark = [pytest.mark.node, pytest.mark.integration]

CLIENT: Final = Path(__file__).resolve().parent / "client.mjs"
SERVER_NAME: Final = "asgi-mcp-interop"
SERVER_VERSION: Final = "9.8.7"
PROTOCOL: Final = "2025-11-25"
TOKEN: Final = "interop-secret-token-4711"
ECHO_TEXT: Final = 'héllo ✓ "quoted"\nline two'
SLOW_STEPS: Final = 3
CLIENT_TIMEOUT: Final = 60.0  # seconds for one `node client.mjs` run
STOP_TIMEOUT: Final = 15.0  # twice how long a server waits for open connections when it stops
# Short, so the interop tests do not sit out the shutdown delay (see test_shutdown_is_prompt).
APP_SHUTDOWN_TIMEOUT: Final = 1.0


class Backend(str):
    """The anyio backend name (what anyio's plugin reads), carrying which server runs on it."""

    server: str  # "reference" (uvicorn or hypercorn's Trio worker), "builtin-h11" / "builtin-httptools", "granian"

    def __new__(cls, backend: str, server: str) -> Backend:
        value = super().__new__(cls, backend)
        value.server = server
        return value


BACKENDS: Final = [
    (b, s) for b in ("asyncio", "trio") for s in ("reference", "builtin-h11", "builtin-httptools", "granian")
]


@pytest.fixture(params=BACKENDS, ids=[f"{b}-{s}" for b, s in BACKENDS])
def anyio_backend(request: pytest.FixtureRequest) -> Backend:
    """asyncio runs the app on uvicorn, trio on hypercorn's Trio worker; both run it on the built-in server
    and under granian (its own process, so there the backend is only the test's)."""
    return Backend(*request.param)


# -- the server under test ------------------------------------------------------------------------


def build_server() -> MCPServer:
    mcp = MCPServer(SERVER_NAME, version=SERVER_VERSION)

    @mcp.tool()
    def echo(text: str) -> str:
        """Return `text` unchanged."""
        return text

    @mcp.tool()
    def whoami(ctx: Context) -> str:
        """Whether the request carried an Authorization header (never the credential itself)."""
        headers = ctx.headers
        if headers is None:
            return "no-headers"
        return "authorization: present" if headers.get("authorization") else "authorization: absent"

    @mcp.tool()
    async def slow(steps: int, ctx: Context) -> str:
        """Report progress `steps` times, pausing between steps."""
        for step in range(1, steps + 1):
            await anyio.sleep(0.02)
            await ctx.report_progress(step, steps, f"step {step}/{steps}")
        return f"done after {steps} steps"

    return mcp


def build_app(*, json_response: bool = False, shutdown_timeout: float = APP_SHUTDOWN_TIMEOUT) -> McpApp:
    return McpApp(build_server(), json_response=json_response, shutdown_timeout=shutdown_timeout)


# -- serving it in-process ------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    stop_seconds: float | None = None  # set on exit: shutdown trigger -> server fully stopped


@asynccontextmanager
async def _timed(server: AbstractAsyncContextManager[str]) -> AsyncIterator[Served]:
    """`server`'s MCP endpoint; on exit, how long the server took to stop (`stop_seconds`)."""
    async with server as base_url:
        served = Served(f"{base_url}/mcp")
        try:
            yield served
        finally:
            start = time.monotonic()
    served.stop_seconds = time.monotonic() - start


def serve_app(app: McpApp, backend: str, *, port: int = 0, graceful: float = STOP_TIMEOUT / 2) -> Any:
    """The reference server for `backend` (uvicorn for asyncio, hypercorn's Trio worker for Trio) or,
    for a `builtin-*` backend, the built-in server, serving `app` on 127.0.0.1:`port` (0: a free one);
    stopping waits at most `graceful` seconds for open connections (SSE streams) to close."""
    server = getattr(backend, "server", "reference")
    if server != "reference":
        parser = server.removeprefix("builtin-")
        return _timed(builtin_url(app, parser, port=port, graceful_timeout=graceful))
    if backend == "asyncio":
        return _timed(uvicorn_server(app, port=port, graceful=graceful))
    return _timed(hypercorn_trio_server(app, port=port, graceful=graceful))


def serve_test_app(backend: str, **options: Any) -> Any:
    """`build_app(**options)` served as `backend` says: in-process by `serve_app`, or under granian
    (tests/kit/granian_app.py, stopped with SIGINT)."""
    if getattr(backend, "server", "reference") == "granian":
        return _timed(granian_server({"interop": True, **options}))
    return serve_app(build_app(**options), backend)


# -- the node client ------------------------------------------------------------------------------


@dataclass
class ClientRun:
    returncode: int
    events: list[dict[str, Any]]
    stdout: str
    stderr: str

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of(kind)
        assert len(found) == 1, f"expected one {kind!r} line:\n{self}"
        return found[0]

    def result(self, tool: str) -> dict[str, Any]:
        found = [e["result"] for e in self.of("result") if e["tool"] == tool]
        assert len(found) == 1, f"expected one result of {tool!r}:\n{self}"
        return found[0]

    def __str__(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


async def run_client(
    env: NodeEnv, url: str, calls: Sequence[tuple[str, dict[str, Any]]], *, token: str | None = None
) -> ClientRun:
    cmd = [env.node, str(CLIENT), url]
    for name, args in calls:
        cmd += [name, json.dumps(args)]
    if token is not None:
        cmd += ["--token", token]
    with anyio.fail_after(CLIENT_TIMEOUT):
        proc = await anyio.run_process(cmd, env=env.env(), check=False)
    stdout, stderr = proc.stdout.decode(), proc.stderr.decode()
    try:
        events = [json.loads(line) for line in stdout.splitlines()]
    except ValueError:
        pytest.fail(f"client printed a non-JSON line\n{stdout}\n{stderr}")
    return ClientRun(proc.returncode, events, stdout, stderr)


def text_of(result: dict[str, Any]) -> str:
    assert result["isError"] is False, result
    [block] = result["content"]
    assert block["type"] == "text", result
    return str(block["text"])


def assert_clean_session(run: ClientRun) -> None:
    """Exit 0, the legacy session handshake, the tool list and an orderly DELETE + close."""
    assert run.returncode == 0, str(run)
    assert not run.of("error"), str(run)
    kinds = [e["type"] for e in run.events]
    assert kinds[0] == "connected", str(run)
    assert kinds.index("terminated") < kinds.index("closed"), str(run)
    # The SDK reports aborting its own GET stream in close() ("SSE stream disconnected: AbortError");
    # anything the transport reported before the session was terminated is a real problem.
    assert "transport_error" not in kinds[: kinds.index("terminated")], str(run)

    connected = run.one("connected")
    assert connected["protocolVersion"] == PROTOCOL, str(run)
    assert isinstance(connected["sessionId"], str), str(run)
    assert connected["sessionId"], str(run)
    assert all(0x21 <= ord(c) <= 0x7E for c in connected["sessionId"]), "session id must be visible ASCII"
    assert connected["serverVersion"]["name"] == SERVER_NAME, str(run)
    assert connected["serverVersion"]["version"] == SERVER_VERSION, str(run)
    assert sorted(run.one("tools")["names"]) == ["echo", "slow", "whoami"], str(run)
    assert run.one("terminated")["sessionId"] is None, "terminateSession() clears the id after a 2xx DELETE"


CALLS: Final[list[tuple[str, dict[str, Any]]]] = [
    ("echo", {"text": ECHO_TEXT}),
    ("whoami", {}),
    ("slow", {"steps": SLOW_STEPS}),
]


# -- tests ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sse_session(anyio_backend: str, node_env: NodeEnv) -> None:
    """SSE responses: results, progress on the request stream, bearer header visible to tools."""
    async with serve_test_app(anyio_backend) as served:
        with_token = await run_client(node_env, served.url, CALLS, token=TOKEN)
        without_token = await run_client(node_env, served.url, [("whoami", {})])

    assert_clean_session(with_token)
    assert text_of(with_token.result("echo")) == ECHO_TEXT
    assert with_token.result("echo")["structuredContent"] == {"result": ECHO_TEXT}
    assert text_of(with_token.result("whoami")) == "authorization: present"
    assert TOKEN not in with_token.stdout
    assert text_of(with_token.result("slow")) == f"done after {SLOW_STEPS} steps"
    progress = [e["progress"] for e in with_token.of("progress")]
    assert all(e["tool"] == "slow" for e in with_token.of("progress"))
    assert progress == [
        {"progress": step, "total": SLOW_STEPS, "message": f"step {step}/{SLOW_STEPS}"}
        for step in range(1, SLOW_STEPS + 1)
    ], str(with_token)
    # Progress arrives before the call's result (same SSE stream, in order).
    kinds = [e["type"] for e in with_token.events]
    last_progress = max(i for i, k in enumerate(kinds) if k == "progress")
    assert kinds.index("result", last_progress) > last_progress

    assert_clean_session(without_token)
    assert text_of(without_token.result("whoami")) == "authorization: absent"
    assert with_token.one("connected")["sessionId"] != without_token.one("connected")["sessionId"]


@pytest.mark.anyio
async def test_json_response_mode(anyio_backend: str, node_env: NodeEnv) -> None:
    """json_response=True: plain JSON bodies; request-scoped progress is documented as unavailable."""
    async with serve_test_app(anyio_backend, json_response=True) as served:
        run = await run_client(node_env, served.url, CALLS, token=TOKEN)

    assert_clean_session(run)
    assert text_of(run.result("echo")) == ECHO_TEXT
    assert text_of(run.result("whoami")) == "authorization: present"
    assert text_of(run.result("slow")) == f"done after {SLOW_STEPS} steps"
    assert run.of("progress") == [], "JSON responses cannot carry request-scoped notifications"


@pytest.mark.anyio
async def test_shutdown_is_prompt(anyio_backend: str, node_env: NodeEnv) -> None:
    """After the client has DELETEd its session nothing is in flight: stopping must not wait."""
    async with serve_test_app(anyio_backend, shutdown_timeout=5.0) as served:
        run = await run_client(node_env, served.url, [("echo", {"text": "x"})])
    assert_clean_session(run)
    assert served.stop_seconds is not None
    assert served.stop_seconds < 2.0, f"server took {served.stop_seconds:.2f}s to stop"
