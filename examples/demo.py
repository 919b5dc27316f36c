"""A small demo MCP server served by asgi_mcp: `python -m examples.demo [--port 8000] [--trio]`.

Point any MCP client at http://127.0.0.1:8000/mcp: session-era clients (TypeScript SDK 1.x, the
Inspector) and 2026-07-28 clients both work.
"""

from __future__ import annotations

import argparse

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

from asgi_mcp import InMemoryEventStore, McpApp


def build_server() -> MCPServer:
    mcp = MCPServer("asgi-mcp-demo", instructions="Demo tools served over asgi_mcp.")

    @mcp.tool()
    async def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @mcp.tool()
    async def add(a: float, b: float) -> float:
        """Add two numbers."""
        return a + b

    @mcp.tool()
    async def countdown(ctx: Context, steps: int = 3) -> str:
        """Count down, reporting progress at each step."""
        for step in range(steps):
            await ctx.report_progress(step, steps, f"{steps - step} to go")
            await anyio.sleep(0.2)
        return "liftoff"

    @mcp.resource("demo://readme")
    def readme() -> str:
        """What this server is."""
        return "A demo server for asgi_mcp."

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--trio", action="store_true", help="serve with hypercorn's Trio worker")
    args = parser.parse_args()
    app = McpApp(build_server(), event_store=InMemoryEventStore(), retry_interval=1000)
    print(f"asgi_mcp demo: MCP endpoint at http://{args.host}:{args.port}/mcp (Ctrl-C to stop)", flush=True)
    if args.trio:
        import trio
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [f"{args.host}:{args.port}"]
        trio.run(serve, app, config)  # type: ignore[arg-type]
    else:
        import uvicorn

        uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
