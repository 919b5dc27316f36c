"""Runtime token management: add, update and remove tokens while the server serves.

    python examples/runtime_token_management.py [--trio]

Starts an empty server on a free port, onboards customers one by one, replaces one customer's
server (policy "close": its live session ends, the next one gets the new tools) and removes
another while its session is open (its requests get 401 from then on). Every step is visible
in the events; tenants appear by label, never by token. Exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer
from mcp.shared.exceptions import MCPError

from asgi_mcp import Event, EventName, create_per_bearer_server


def customer_server(customer: str, version: str = "1.0.0") -> MCPServer:
    mcp = MCPServer(f"{customer}-server", version=version)

    @mcp.tool()
    def hello() -> str:
        """Say hello."""
        return f"Hello from {customer} (server v{version})!"

    if version != "1.0.0":

        @mcp.tool()
        def whats_new() -> str:
            """What changed in this version."""
            return f"{customer} v{version}: new tools"

    return mcp


@asynccontextmanager
async def connect(url: str, token: str) -> AsyncIterator[Client]:
    """An MCP session (initialize handshake) whose requests carry `Authorization: Bearer <token>`."""
    headers = {"Authorization": f"Bearer {token}"}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0))
    async with http, Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
        yield client


async def tool_names(client: Client) -> list[str]:
    return sorted(tool.name for tool in (await client.list_tools()).tools)


def show(event: Event) -> None:
    details = {key: value for key, value in dataclasses.asdict(event).items() if key != "name" and value is not None}
    print(f"  event {event.name}: {details}")


async def main() -> None:
    server = create_per_bearer_server(port=0)
    watched: tuple[EventName, ...] = (
        "token_added",
        "token_updated",
        "token_removed",
        "server_registered",
        "server_updated",
        "server_removed",
        "session_ended",
    )
    for name in watched:
        server.on(name, show)

    async with server:
        info = server.server_info()
        assert info is not None
        print(f"empty server at {info.url}: tokens {server.token_ids()}")

        # Onboard two customers at runtime; each gets a fresh random token.
        tokens = {customer: secrets.token_urlsafe(24) for customer in ("customer-1", "customer-2")}
        for customer, token in tokens.items():
            server.add_token(token, lambda customer=customer: customer_server(customer), label=customer)
        print(f"tokens now: {server.token_ids()}")

        async with connect(info.url, tokens["customer-1"]) as one, connect(info.url, tokens["customer-2"]) as two:
            print(f"customer-1 tools: {await tool_names(one)}; customer-2 tools: {await tool_names(two)}")

            # Replace customer-1's server, ending its live sessions now.
            server.update_token(tokens["customer-1"], lambda: customer_server("customer-1", "2.0.0"), policy="close")
            try:
                await one.list_tools()
                raise AssertionError("the closed session must be gone")
            except MCPError as exc:
                print(f"customer-1's old session after the update: {exc}")

            # Remove customer-2 while its session is open: its next request is refused.
            server.remove_token(tokens["customer-2"], policy="close")
            assert not server.has_token(tokens["customer-2"])
            try:
                await two.list_tools()
                raise AssertionError("a removed token must be refused")
            except MCPError as exc:
                print(f"customer-2 after removal: {exc}")

        async with connect(info.url, tokens["customer-1"]) as one:
            tools = await tool_names(one)
            assert tools == ["hello", "whats_new"], tools
            print(f"customer-1's new session: tools {tools}")

        try:
            server.remove_token(tokens["customer-2"])
        except KeyError as exc:
            print(f"removing customer-2 again: KeyError {exc}")
        print(f"final tokens: {server.token_ids()}, stats: {server.stats()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trio", action="store_true", help="run on Trio instead of asyncio")
    # Before the SDK's MCPServer configures logging: keep the output to what this example prints.
    logging.basicConfig(level=logging.ERROR)
    anyio.run(main, backend="trio" if parser.parse_args().trio else "asyncio")
