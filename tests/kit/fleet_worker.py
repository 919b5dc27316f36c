"""The fleet tests' workers: two tenants with fixed tokens, as every worker of a fleet has them, and their
tools. `worker_app` builds one in the test's process (tests/system/test_fleet.py); `app` is one run in a
process of its own by uvicorn or hypercorn (tests/system/test_fleet_haproxy.py), with `FLEET_REDIS_URL`,
`FLEET_PREFIX` and `FLEET_WORKER` (its name, which `whereami` answers) from the environment, and
`FLEET_HEARTBEAT` (seconds between its beats in the roster), if set."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final

import mcp_types as types
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

from asgi_mcp import McpApp, Tenants
from asgi_mcp._stores import fleet_from_url

from .mcp_servers import Answer

TOKEN_A: Final = "sk-fleet-alpha-5Tq8Wm2Lx7"
TOKEN_B: Final = "sk-fleet-bravo-9Rz3Kd6Hv1"
IDLE_TIMEOUT: Final = 60.0


def tenant_server(tenant: str, count_streams: Callable[[], int]) -> MCPServer:
    mcp = MCPServer(f"fleet-{tenant}", version="1.0.0")

    @mcp.tool()
    def echo(text: str) -> str:
        return f"{tenant}:{text}"

    @mcp.tool()
    def whereami() -> str:
        return os.environ.get("FLEET_WORKER", "?")

    @mcp.tool()
    async def progress(steps: int, ctx: Context) -> str:
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
        return f"done {steps}"

    @mcp.tool()
    async def announce(text: str, ctx: Context) -> str:
        """A notification on the session's standalone (GET) stream, wherever that stream is held."""
        message = types.LoggingMessageNotification(
            params=types.LoggingMessageNotificationParams(level="info", data=f"{tenant}:{text}", logger="fleet")
        )
        await ctx.request_context.session.send_notification(message)
        return "announced"

    @mcp.tool()
    def open_streams() -> str:
        """This worker's name and how many SSE streams it holds open, this call's own included: the
        TypeScript fleet test finds the worker holding its session's GET stream with it."""
        return f"{os.environ.get('FLEET_WORKER', '?')} {count_streams()}"

    @mcp.tool()
    async def ask(ctx: Context) -> str:
        result = await ctx.elicit("What is the answer?", Answer)
        return f"{result.action}:{result.data.answer if result.action == 'accept' else None}"

    return mcp


def worker_app(url: str, prefix: str, *, session_ttl: float, heartbeat: float = 5.0, **options: Any) -> McpApp:
    """A worker of the fleet sharing the redis-server at `url` under `prefix`, beating in its roster every
    `heartbeat` seconds."""
    app: McpApp  # the tenants' servers are built per session, once the app exists

    def count_streams() -> int:
        return int(app.stats()["open_streams"])

    tenants = Tenants()
    tenants.add(TOKEN_A, lambda: tenant_server("alpha", count_streams), label="alpha")
    tenants.add(TOKEN_B, lambda: tenant_server("bravo", count_streams), label="bravo")
    fleet = fleet_from_url(url, prefix=prefix, session_ttl=session_ttl, heartbeat=heartbeat)
    app = McpApp(tenants=tenants, fleet=fleet, session_idle_timeout=IDLE_TIMEOUT, **options)
    return app


def build_app() -> McpApp:
    return worker_app(
        os.environ["FLEET_REDIS_URL"],
        os.environ["FLEET_PREFIX"],
        session_ttl=90,
        heartbeat=float(os.environ.get("FLEET_HEARTBEAT", "5")),
        health_path="/health",
        shutdown_timeout=1,
    )


app = build_app() if "FLEET_REDIS_URL" in os.environ else None
