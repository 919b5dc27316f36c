"""Role-based access: one token per user, and each role's server has only that role's tools.

    python examples/role_based_access.py [--trio]

Viewers can read, editors can also write, admins can also delete and manage users. A tool the
role lacks does not exist on its server, so it is neither listed nor callable: access control
is the shape of the server, not a check inside each tool. Starts on a free port, checks every
role with the MCP SDK's own client, and exits 0.
"""

from __future__ import annotations

import argparse
import enum
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer

from asgi_mcp import PerBearerServer, create_per_bearer_server


class Role(enum.Enum):
    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"


EXPECTED = {
    Role.VIEWER: ["read_data"],
    Role.EDITOR: ["read_data", "write_data"],
    Role.ADMIN: ["delete_data", "manage_users", "read_data", "write_data"],
}


def role_server(role: Role, store: dict[str, str]) -> MCPServer:
    mcp = MCPServer(f"{role.value}-tools", version="1.0.0")

    @mcp.tool()
    def read_data(id: str) -> str:
        """Read a record."""
        return store.get(id, f"no record {id}")

    if role in (Role.EDITOR, Role.ADMIN):

        @mcp.tool()
        def write_data(id: str, content: str) -> str:
            """Write a record."""
            store[id] = content
            return f"saved {id}"

    if role is Role.ADMIN:

        @mcp.tool()
        def delete_data(id: str) -> str:
            """Delete a record."""
            return f"deleted {id}" if store.pop(id, None) is not None else f"no record {id}"

        @mcp.tool()
        def manage_users() -> str:
            """User management."""
            return "user management interface"

    return mcp


class RoleBasedMcpService:
    def __init__(self) -> None:
        self.server: PerBearerServer = create_per_bearer_server(port=0)
        self.store: dict[str, str] = {"doc-1": "hello"}

    def create_user_token(self, user_id: str, role: Role) -> str:
        """A fresh token for the user; its sessions get the role's server (the label names the user)."""
        token = secrets.token_urlsafe(32)
        self.server.add_token(token, lambda: role_server(role, self.store), label=f"{user_id}-{role.value}")
        return token


@asynccontextmanager
async def connect(url: str, token: str) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0))
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        yield client


async def main() -> None:
    service = RoleBasedMcpService()
    tokens = {role: service.create_user_token(f"user{index}", role) for index, role in enumerate(Role, start=1)}
    service.server.on("tool_called", lambda e: print(f"  [{e.tenant_id}] {e.tool_name}: success={e.success}"))

    async with service.server:
        info = service.server.server_info()
        assert info is not None
        print(f"serving {service.server.token_ids()} at {info.url}")
        for role, token in tokens.items():
            async with connect(info.url, token) as client:
                tools = sorted(tool.name for tool in (await client.list_tools()).tools)
                assert tools == EXPECTED[role], (role, tools)
                print(f"{role.value}: {tools}")
                read = await client.call_tool("read_data", {"id": "doc-1"})
                assert not read.is_error
                write = await client.call_tool("write_data", {"id": f"doc-{role.value}", "content": "x"})
                assert write.is_error == (role is Role.VIEWER), "only editors and admins may write"
                delete = await client.call_tool("delete_data", {"id": "doc-editor"})
                assert delete.is_error == (role is not Role.ADMIN), "only admins may delete"
        print(f"records left: {sorted(service.store)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trio", action="store_true", help="run on Trio instead of asyncio")
    # Before the SDK's MCPServer configures logging: keep the output to what this example prints.
    logging.basicConfig(level=logging.WARNING)
    anyio.run(main, backend="trio" if parser.parse_args().trio else "asyncio")
