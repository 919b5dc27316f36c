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
