"""The real MCP servers the tests serve, the tenants' tokens, and the ASGI middleware put in front.

`build_server` is an `MCPServer` with one tool per behaviour under test; `tenant_server` is a small
server whose tools name it, one per bearer token (`TOKEN_A`, `TOKEN_B`, ...). `Probe` carries the
anyio Events tools use to tell the test where they are (started, cancelled, finished) and to be told
when to go on (release). Build it inside the running test: anyio Events belong to the event loop that
creates them.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Final, cast

import anyio
import mcp_types as types
from mcp.server import MCPServer, Server, ServerRequestContext
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware, get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from starlette.types import ASGIApp

# Set by an ASGI middleware in the tests, read by a tool: contextvars must reach handlers.
TENANT: contextvars.ContextVar[str | None] = contextvars.ContextVar("test_tenant", default=None)

SECRET = "s3cr3t-internal-detail-0xdeadbeef"

# Distinctive raw tokens, so a leak anywhere is found by a substring search.
TOKEN_A: Final = "sk-alpha-7Qm2xR9vLp4Tz8Wn"
TOKEN_B: Final = "sk-bravo-3Jd6Hs1Kf5Gc0Yb"
TOKEN_C: Final = "sk-charlie-8Ue4Ni2Ow7Pa5Zq"
UNKNOWN_TOKEN: Final = "sk-unknown-1Xv9Bt6Rm3Lc"
ALL_TOKENS: Final = (TOKEN_A, TOKEN_B, TOKEN_C, UNKNOWN_TOKEN)


@dataclass
class Probe:
    started: anyio.Event = field(default_factory=anyio.Event)
    release: anyio.Event = field(default_factory=anyio.Event)
    cancelled: anyio.Event = field(default_factory=anyio.Event)
    finished: anyio.Event = field(default_factory=anyio.Event)
    closed_stream: anyio.Event = field(default_factory=anyio.Event)
    results: list[Any] = field(default_factory=list)


class Answer(BaseModel):
    answer: str


def _text(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


async def _log(ctx: Context, message: str) -> None:
    """A request-scoped `notifications/message` (the SDK's `ctx.info` is deprecated, and warnings are errors)."""
    rc = ctx.request_context
    notification = types.LoggingMessageNotification(
        params=types.LoggingMessageNotificationParams(level="info", data=message, logger="tests")
    )
    await rc.session.send_notification(notification, related_request_id=rc.request_id)


def build_server(probe: Probe | None = None) -> MCPServer:
    probe = probe if probe is not None else Probe()
    mcp = MCPServer("asgi-mcp-tests", version="1.0.0")

    @mcp.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    @mcp.tool()
    def read_header(name: str, ctx: Context) -> str:
        """The value of request header `name` as the handler sees it (both Context.headers and ctx.request)."""
        headers: Mapping[str, str] | None = ctx.headers
        via_request = getattr(ctx.request_context.request, "headers", None)
        first = headers.get(name) if headers is not None else None
        second = via_request.get(name) if via_request is not None else None
        return f"{first}|{second}"

    @mcp.tool()
    def whoami() -> str:
        """The tenant contextvar and the SDK auth contextvar, as the handler sees them."""
        token = get_access_token()
        return f"tenant={TENANT.get()} client={token.client_id if token else None}"

    @mcp.tool()
    async def progress(steps: int, ctx: Context) -> str:
        """Reports `steps` progress notifications, each with a log message."""
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
            await _log(ctx, f"log {step}")
        return f"done {steps}"

    @mcp.tool()
    async def block(ctx: Context) -> str:
        """Runs until released; reports whether it was cancelled. Says so first (as progress, if asked)."""
        await ctx.report_progress(0, 1, "blocking")
        probe.started.set()
        try:
            await probe.release.wait()
            probe.results.append("released")
            return "released"
        except anyio.get_cancelled_exc_class():
            probe.cancelled.set()
            raise
        finally:
            probe.finished.set()

    @mcp.tool()
    async def ask(ctx: Context) -> str:
        """Elicits an answer from the client (a server-to-client request on this request's stream)."""
        result = await ctx.elicit("What is the answer?", Answer)
        text = f"{result.action}:{result.data.answer if result.action == 'accept' else None}"
        probe.results.append(text)
        return text

    @mcp.tool()
    async def poll(ctx: Context) -> str:
        """SEP-1699 polling: log, close the SSE connection, log again after being released, answer."""
        await _log(ctx, "before close")
        await ctx.close_sse_stream()
        probe.closed_stream.set()
        await probe.release.wait()
        await _log(ctx, "after close")
        return "polled"

    @mcp.tool()
    def region_echo(
        region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})],
    ) -> str:
        """Its `region` argument is mirrored into the Mcp-Param-Region header (SEP-2243)."""
        return f"region={region}"

    return mcp


def build_failing_server() -> Server[Any]:
    """A low-level server whose tool raises an unexpected exception (a bug, not a tool error)."""

    async def list_tools(ctx: ServerRequestContext[Any], params: Any) -> types.ListToolsResult:
        schema = {"type": "object", "properties": {}}
        return types.ListToolsResult(tools=[types.Tool(name="explode", input_schema=schema)])

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        raise RuntimeError(SECRET)

    return Server("failing", version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)


def text_of(result: Mapping[str, Any]) -> str:
    """The text of a `tools/call` result's first content block."""
    text: str = result["content"][0]["text"]
    return text


# -- tenants: one small server per bearer token ---------------------------------------------------


@dataclass
class Lifespans:
    entered: int = 0
    exited: int = 0


def tenant_server(name: str, *, gate: Probe | None = None, lifespans: Lifespans | None = None) -> MCPServer:
    """A server whose tools name it: `<name>_only`, `whoami`, plus `block` (waits on `gate`) and `fail`."""
    gate = gate if gate is not None else Probe()

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


# -- middleware: contextvars set here must reach handlers -----------------------------------------

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def tenant_middleware(app: App) -> App:
    """Sets a contextvar from a request header around the app, as multi-tenant middleware does."""

    async def middleware(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        tenant = dict(scope["headers"]).get(b"x-tenant", b"").decode() or None
        token = TENANT.set(tenant)
        try:
            await app(scope, receive, send)
        finally:
            TENANT.reset(token)

    return middleware


def auth_middleware(app: App) -> App:
    """Authenticates `Authorization: Bearer <client>` and hands it to the SDK's AuthContextMiddleware."""
    inner = AuthContextMiddleware(cast("ASGIApp", app))

    async def middleware(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"authorization", b"").decode()
            if header.startswith("Bearer "):
                client_id = header.removeprefix("Bearer ")
                scope = {
                    **scope,
                    "user": AuthenticatedUser(AccessToken(token=client_id, client_id=client_id, scopes=[])),
                }
        await inner(scope, receive, send)

    return middleware
