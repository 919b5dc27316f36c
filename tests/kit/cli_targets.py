"""Targets for `asgi-mcp serve MODULE:ATTR` in tests/serving/test_cli.py: one of each accepted kind."""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp.server import MCPServer, Server, ServerRequestContext

from asgi_mcp import McpApp


def build(name: str) -> MCPServer:
    mcp = MCPServer(name, version="1.0.0")

    @mcp.tool()
    def ping() -> str:
        """Answer pong."""
        return "pong"

    return mcp


def build_lowlevel() -> Server[Any]:
    async def list_tools(ctx: ServerRequestContext[Any], params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(name="ping", input_schema={"type": "object"})])

    return Server("cli-lowlevel", version="1.0.0", on_list_tools=list_tools)


mcp = build("cli-mcpserver")
lowlevel = build_lowlevel()
app = McpApp(build("cli-app"), path="/custom")
not_a_server = 42


def factory() -> MCPServer:
    return build("cli-factory")


async def async_app_factory() -> McpApp:
    return McpApp(build("cli-async-factory"), path="/custom")


# Not MCP: `asgi-mcp serve` takes any ASGI 3 app, its lifespan run by the server.
async def plain(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every request with what its lifespan set up; says so on stdout when it shuts down."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["greeting"] = "started by the lifespan"
                await send({"type": "lifespan.startup.complete"})
            else:
                print("plain app: lifespan shutdown", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = f"{scope['state']['greeting']} {scope['method']} {scope['path']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def plain_factory() -> Any:
    return plain


def starlette_app() -> Any:
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield {"greeting": "started by the lifespan"}
        print("plain app: lifespan shutdown", flush=True)

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{request.state.greeting} {request.method} {request.url.path}")

    return Starlette(routes=[Route("/{rest:path}", hello)], lifespan=lifespan)


starlette = starlette_app()


async def loop_report(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the module of the running asyncio event loop (`uvloop` or `asyncio...`)."""
    if scope["type"] != "http":
        return
    import asyncio

    body = type(asyncio.get_running_loop()).__module__.encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
