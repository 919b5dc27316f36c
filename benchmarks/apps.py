"""The ASGI apps under benchmark, and a launcher that serves exactly one of them.

Every variant serves the *same* low-level SDK `mcp.server.Server` (built by `make_server`), so the
transport is the only thing that differs:

    mcpapp-sse    asgi_mcp.McpApp(server)                          legacy era answers on SSE
    mcpapp-json   asgi_mcp.McpApp(server, json_response=True)      legacy era answers with JSON
    sdk-sse       server.streamable_http_app()                     the SDK's own transport (Starlette)
    sdk-json      server.streamable_http_app(json_response=True)
    floor         a framework-free ASGI callable: read the body, answer a fixed small JSON-RPC result

Both transports keep their default DNS-rebinding protection: bound to 127.0.0.1, each accepts the
`Host: 127.0.0.1:PORT` the load generator sends (the SDK's via `host="127.0.0.1"`, McpApp's loopback
default), so both pay for the same check.

    python -m benchmarks.apps VARIANT --server uvicorn|hypercorn|hypercorn-trio --port PORT [--gc-freeze]

serves until killed; `benchmarks.run` polls the port for readiness.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

VARIANTS = ("mcpapp-sse", "mcpapp-json", "sdk-sse", "sdk-json", "floor")
SERVERS = ("uvicorn", "hypercorn", "hypercorn-trio")
ECHO_TOOL = "echo"
MCP_PATH = "/mcp"


def make_server() -> Any:
    """One low-level SDK server with an `echo` tool (constructor handlers, no decorators)."""
    from mcp import types
    from mcp.server import Server

    tool = types.Tool(
        name=ECHO_TOOL,
        description="Echo the text back.",
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    )

    async def list_tools(ctx: Any, params: Any) -> Any:
        return types.ListToolsResult(tools=[tool])

    async def call_tool(ctx: Any, params: Any) -> Any:
        if params.name != ECHO_TOOL:
            raise ValueError(f"unknown tool {params.name!r}")
        text = str((params.arguments or {}).get("text", ""))
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    return Server("bench-echo", version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)


FLOOR_BODY = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"bench-payload"}],"isError":false}}'
FLOOR_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(FLOOR_BODY)).encode())]


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ceiling of any ASGI app on this server: read the body, send a fixed JSON-RPC result."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": FLOOR_HEADERS})
    await send({"type": "http.response.body", "body": FLOOR_BODY})


def build_app(variant: str) -> Any:
    if variant == "floor":
        return floor_app
    server = make_server()
    json_response = variant.endswith("-json")
    if variant.startswith("mcpapp-"):
        from asgi_mcp import McpApp

        return McpApp(server, path=MCP_PATH, json_response=json_response)
    if variant.startswith("sdk-"):
        return server.streamable_http_app(streamable_http_path=MCP_PATH, json_response=json_response, host="127.0.0.1")
    raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


def serve(app: Any, server: str, host: str, port: int) -> None:
    if server == "uvicorn":
        import uvicorn

        # loop/http "auto": uvloop and httptools when installed, else asyncio and h11.
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
        return
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    # Hypercorn closes a keep-alive connection after 1000 requests by default; the benchmark
    # measures steady keep-alive traffic, as on uvicorn.
    config.keep_alive_max_requests = 1_000_000_000
    if server == "hypercorn":
        import asyncio

        from hypercorn.asyncio import serve as hypercorn_serve

        asyncio.run(hypercorn_serve(app, config))
    elif server == "hypercorn-trio":
        import trio
        from hypercorn.trio import serve as hypercorn_trio_serve

        trio.run(hypercorn_trio_serve, app, config)
    else:
        raise SystemExit(f"unknown server {server!r}; choose from {', '.join(SERVERS)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.apps", description=__doc__.split("\n\n")[0])
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--server", choices=SERVERS, default="uvicorn")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after building the app (full collections skip the import-time heap)",
    )
    args = parser.parse_args(argv)
    app = build_app(args.variant)
    if args.gc_freeze:
        import gc

        gc.collect()
        gc.freeze()
    with contextlib.suppress(KeyboardInterrupt):
        serve(app, args.server, args.host, args.port)
    sys.exit(0)


if __name__ == "__main__":
    main()
