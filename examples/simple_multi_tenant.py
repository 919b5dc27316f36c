"""Simple multi-tenant server: two bearer tokens, two different MCP servers, one endpoint.

    python examples/simple_multi_tenant.py [--trio]

Starts on a free port, connects with the MCP SDK's own client once per token, shows that each token
sees only its own tools and that an unknown token is refused, then stops (exit status 0).
"""

from __future__ import annotations

import argparse
import logging
import platform
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer
from mcp_types import CallToolResult, TextContent

from asgi_mcp import create_per_bearer_server

USER_TOKEN = "user-123"  # example values; real tokens come from your identity system
ADMIN_TOKEN = "admin-456"


def user_tools() -> MCPServer:
    mcp = MCPServer("user-tools", version="1.0.0")

    @mcp.tool()
    def hello() -> str:
        """Say hello."""
        return "Hello from your personal MCP server!"

    return mcp


def admin_tools() -> MCPServer:
    mcp = MCPServer("admin-tools", version="1.0.0")

    @mcp.tool()
    def system_info() -> str:
        """Where this server runs."""
        return f"Python {platform.python_version()} on {platform.system()}"

    return mcp


@asynccontextmanager
async def connect(url: str, token: str) -> AsyncIterator[Client]:
    """An MCP client session whose requests carry `Authorization: Bearer <token>`."""
    headers = {"Authorization": f"Bearer {token}"}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0))
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        yield client


def text_of(result: CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


async def main() -> None:
    server = (
        create_per_bearer_server(port=0)
        .add_token(USER_TOKEN, user_tools, label="user-123")
        .add_token(ADMIN_TOKEN, admin_tools, label="admin-456")
    )
    server.on("started", lambda e: print(f"started at {e.url} (port {e.port})"))
    server.on("tool_called", lambda e: print(f"  [{e.tenant_id}] called {e.tool_name}: success={e.success}"))
    server.on("stopped", lambda e: print(f"stopped after {e.uptime:.2f}s"))

    async with server:
        info = server.server_info()
        assert info is not None
        for token in (USER_TOKEN, ADMIN_TOKEN):
            async with connect(info.url, token) as client:
                tools = [tool.name for tool in (await client.list_tools()).tools]
                result = await client.call_tool(tools[0], {})
                name = client.server_info.name if client.server_info else "?"
                print(f"{name}: tools {tools}; {tools[0]} -> {text_of(result)}")
        async with connect(info.url, USER_TOKEN) as client:
            refused = await client.call_tool("system_info", {})
            assert refused.is_error, "the user token must not reach the admin tool"
            print(f"user token calling system_info: {text_of(refused)}")

        async with httpx2.AsyncClient() as http:
            answer = await http.post(info.url, json={}, headers={"Authorization": "Bearer not-a-token"})
            assert answer.status_code == 401
            print(f"unknown token: {answer.status_code}, WWW-Authenticate: {answer.headers['www-authenticate']}")
        print(f"stats: {server.stats()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trio", action="store_true", help="run on Trio instead of asyncio")
    # Before the SDK's MCPServer configures logging: keep the output to what this example prints.
    logging.basicConfig(level=logging.WARNING)
    anyio.run(main, backend="trio" if parser.parse_args().trio else "asyncio")
