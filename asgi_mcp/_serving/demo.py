"""The `asgi-mcp demo` tenants: three plans, three demo tokens, three different tool sets.

The tokens are fixed, public, demo-only values: printing them (and client configurations carrying
them) is what the demo is for. Nothing else in asgi_mcp ever prints or logs a token.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from mcp.server import MCPServer

from .._core.token_bucket import Rate
from .._tenancy.limits import RateLimits, TenantLimits
from .one_call import PerBearerServer, create_per_bearer_server
from .runs import ServerInfo, ServerKind

__all__: list[str] = []


@dataclass(frozen=True)
class Plan:
    label: str
    token: str
    summary: str
    tools: tuple[str, ...]


PLANS: Final = (
    Plan("free", "demo-free-token", "free plan: greetings only, 10 tool calls a minute", ("echo", "hello")),
    Plan("pro", "demo-pro-token", "pro plan: adds arithmetic and text tools", ("add", "echo", "word_count")),
    Plan(
        "admin", "demo-admin-token", "admin: server statistics and tenant ids", ("echo", "list_tenants", "server_stats")
    ),
)


def _tools(server: PerBearerServer) -> dict[str, Callable[..., Any]]:
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    def hello(name: str = "world") -> str:
        """Say hello."""
        return f"Hello, {name}!"

    def add(a: float, b: float) -> float:
        """Add two numbers."""
        return a + b

    def word_count(text: str) -> int:
        """Count the words in a text."""
        return len(text.split())

    def server_stats() -> str:
        """The server's counters (tenants appear by id, never by token)."""
        return json.dumps(server.stats(), indent=2)

    def list_tenants() -> list[str]:
        """The ids of the registered tenants."""
        return server.token_ids()

    return {fn.__name__: fn for fn in (echo, hello, add, word_count, server_stats, list_tenants)}


def _factory(plan: Plan, server: PerBearerServer) -> Callable[[], MCPServer]:
    def build() -> MCPServer:
        mcp = MCPServer(f"asgi-mcp-demo-{plan.label}", version="1.0.0", instructions=f"asgi_mcp demo, {plan.summary}.")
        tools = _tools(server)
        for name in plan.tools:
            mcp.add_tool(tools[name])
        return mcp

    return build


def demo_limits() -> RateLimits:
    """The free plan is limited so that anyone can see a 429 with `Retry-After`: 10 tool calls a
    minute per tenant, burst 10. The other plans are unlimited."""
    free = TenantLimits(tool_calls=Rate.per_minute(10, burst=10))
    return RateLimits(plans={"free": free, "pro": TenantLimits(), "admin": TenantLimits()})


def build_demo_server(
    *, host: str, port: int, server_kind: ServerKind = "builtin", **app_options: Any
) -> PerBearerServer:
    """The demo's three tenants; `app_options` go to the app (`redis_url`: a worker of a demo fleet)."""
    server = create_per_bearer_server(
        host=host, port=port, server=server_kind, rate_limits=demo_limits(), **app_options
    )
    for plan in PLANS:
        server.add_token(plan.token, _factory(plan, server), label=plan.label, plan=plan.label)
    return server


def client_configs(plan: Plan, url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The VS Code `mcp.json` and Claude Desktop configurations for one demo token."""
    name = f"asgi-mcp-{plan.label}"
    vscode = {"servers": {name: {"type": "http", "url": url, "headers": {"Authorization": f"Bearer {plan.token}"}}}}
    # Claude Desktop starts local commands only; mcp-remote bridges to HTTP. The header travels in
    # an environment variable because arguments with spaces are mangled on some platforms.
    claude = {
        "mcpServers": {
            name: {
                "command": "npx",
                "args": ["-y", "mcp-remote", url, "--header", "Authorization:${AUTH_HEADER}"],
                "env": {"AUTH_HEADER": f"Bearer {plan.token}"},
            }
        }
    }
    return vscode, claude


def banner(info: ServerInfo) -> str:
    lines = [
        f"asgi-mcp demo: multi-tenant MCP server at {info.url}",
        "Each bearer token below reaches its own MCP server with its own tools.",
        "The tokens are demo-only values: never reuse them.",
    ]
    for plan in PLANS:
        vscode, claude = client_configs(plan, info.url)
        lines += [
            "",
            f"== {plan.label}: token {plan.token} | tools: {', '.join(plan.tools)} ({plan.summary})",
            "VS Code (.vscode/mcp.json):",
            json.dumps(vscode, indent=2),
            "Claude Desktop (claude_desktop_config.json):",
            json.dumps(claude, indent=2),
        ]
    lines += ["", "Press Ctrl-C to stop."]
    return "\n".join(lines)
