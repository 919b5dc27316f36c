"""The ASGI apps under benchmark, and a launcher that serves exactly one of them.

Every variant serves the *same* SDK server, so the transport is the only thing that differs. Two
servers, as users write them: the low-level `mcp.server.Server` with constructor handlers
(`make_server`), and `mcp.server.MCPServer` with a decorated `echo` tool (`make_mcpserver`, as the
README shows). A variant name alone serves the low-level one; with the suffix `-mcpserver`
(`mcpapp-json-mcpserver`, `sdk-sse-mcpserver`, ...) the same variant serves the `MCPServer`:

    mcpapp-sse    asgi_mcp.McpApp(server)                          legacy era answers on SSE
    mcpapp-json   asgi_mcp.McpApp(server, json_response=True)      legacy era answers with JSON
    sdk-sse       server.streamable_http_app()                     the SDK's own transport (Starlette)
    sdk-json      server.streamable_http_app(json_response=True)
    floor         a framework-free ASGI callable: read the body, answer a fixed small JSON-RPC result
    mcpapp-tenants  McpApp(tenants=Tenants(...), json_response=True): `--tenants N` bearer tokens
                  `bench-tenant-00000` ..., each reaching its own `make_server()` (footprint only)
    mcpapp-json-limited  mcpapp-json with rate limits that never refuse (what the limiter costs; micro only)
    mcpapp-json-redis  mcpapp-json in a fleet: McpApp(server, json_response=True, redis_url=URL, fleet_secret=...)
                  with `--redis-url URL` (`benchmarks.fleet`)

Both `echo` tools report progress once (`report_progress`, a no-op unless the request carries
`_meta.progressToken`): a request that asks for progress is answered on SSE by both transports
(the `modern-sse` scenario); the floor answers such a request with the same two SSE events.

Both transports keep their default DNS-rebinding protection: bound to 127.0.0.1, each accepts the
`Host: 127.0.0.1:PORT` the load generator sends (the SDK's via `host="127.0.0.1"`, McpApp's loopback
default), so both pay for the same check.

    python -m benchmarks.apps VARIANT[-mcpserver] --port PORT
        --server uvicorn|hypercorn|hypercorn-trio|builtin[-h11][-trio]|builtin-uvloop [--gc-freeze]
        [--max-sessions N] [--tenants N] [--redis-url URL] [--workers N]

`--trio-batches fifo` (measurement only, Trio servers) makes Trio run every batch of ready tasks in
the order the tasks became ready, instead of first-in-first-out or last-in-first-out at random: it
sizes what that coin costs a server's tail latency (docs/performance.md, "Tail latency on Trio").

`--workers N` (uvicorn only) serves the variant from N worker processes sharing the listening socket
(`uvicorn --workers N`: each worker builds its own app through `app_from_environment`); the
built-in server and hypercorn are served from one process here.

Uvicorn runs with `loop="uvloop", http="httptools"` (the launcher fails if either is missing, rather
than measure asyncio/h11 under uvicorn's name); the built-in server with httptools unless `-h11`.
Serves until killed; `benchmarks.run` polls the port for readiness. On SIGUSR1 the process runs a
full garbage collection, then writes `BENCHSTATS {"live_sessions": N}` to stderr: the harness uses
it to settle the heap before reading RSS and to check that ended sessions are really gone, without
adding a route (and a per-request check) to the apps under measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import sys
from typing import Any

VARIANTS = (
    "mcpapp-sse",
    "mcpapp-json",
    "sdk-sse",
    "sdk-json",
    "floor",
    "mcpapp-tenants",
    "mcpapp-json-limited",
    "mcpapp-json-redis",
)
SERVER_KINDS = ("lowlevel", "mcpserver")
MCPSERVER_SUFFIX = "-mcpserver"
# The variants that also exist with `MCPSERVER_SUFFIX` (the floor serves no SDK server).
MCPSERVER_VARIANTS = tuple(v + MCPSERVER_SUFFIX for v in ("mcpapp-sse", "mcpapp-json", "sdk-sse", "sdk-json"))
# builtin*: asgi_mcp's own HTTP/1.1 server (asgi_mcp._serving.http1); "-h11" forces h11 over httptools;
# "builtin" runs on asyncio's own loop, "builtin-uvloop" on uvloop (what `asgi-mcp serve` uses when installed).
SERVERS = (
    "uvicorn",
    "hypercorn",
    "hypercorn-trio",
    "builtin",
    "builtin-uvloop",
    "builtin-trio",
    "builtin-h11",
    "builtin-h11-trio",
)
ECHO_TOOL = "echo"
MCP_PATH = "/mcp"
DEFAULT_TENANTS = 1000
DEFAULT_MAX_SESSIONS = 10_000  # McpApp's and the SDK's default alike
# Every worker of a benchmark fleet keys its session directory's owner digests with the same secret.
FLEET_SECRET = "bench-fleet-secret-not-for-production"
# How `--workers N` hands the variant to the worker processes uvicorn starts (each builds its own app).
ENV_VARIANT, ENV_REDIS_URL, ENV_MAX_SESSIONS = "BENCH_APP_VARIANT", "BENCH_APP_REDIS_URL", "BENCH_APP_MAX_SESSIONS"


def tenant_token(index: int) -> str:
    """The bearer token of tenant `index` in the `mcpapp-tenants` variant (fixed: the client derives it too)."""
    return f"bench-tenant-{index:05d}"


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
        # A no-op unless the request asked for progress; then both transports answer on SSE.
        await ctx.session.report_progress(1.0, 1.0)
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    return Server("bench-echo", version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)


def make_mcpserver() -> Any:
    """One `MCPServer` with a decorated `echo` tool, as the README shows users (its schema is generated)."""
    from mcp.server import MCPServer
    from mcp.server.mcpserver import Context

    # MCPServer configures logging at INFO by default, and the SDK's transport then logs every session it
    # opens and closes: WARNING, as the low-level variant runs (no handler), so no side pays for logging.
    mcp = MCPServer("bench-echo", version="1.0.0", log_level="WARNING")

    async def echo(text: str, ctx: Context) -> str:
        """Echo the text back."""
        await ctx.report_progress(1.0, 1.0)  # as make_server's: a no-op unless asked for
        return text

    # This module's annotations are strings (`from __future__ import annotations`) and `Context` is
    # imported here, not at module level, so the SDK could not resolve them: hand it the objects.
    echo.__annotations__ = {"text": str, "ctx": Context, "return": str}
    mcp.tool()(echo)
    return mcp


def split_variant(variant: str) -> tuple[str, str]:
    """`mcpapp-json-mcpserver` -> (`mcpapp-json`, `mcpserver`); `mcpapp-json` -> (`mcpapp-json`, `lowlevel`)."""
    if variant.endswith(MCPSERVER_SUFFIX):
        return variant[: -len(MCPSERVER_SUFFIX)], "mcpserver"
    return variant, "lowlevel"


FLOOR_BODY = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"bench-payload"}],"isError":false}}'
# A fixed session id, so the session-churn chain (initialize, initialized, DELETE) also runs against the floor.
FLOOR_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(FLOOR_BODY)).encode()),
    (b"mcp-session-id", b"floor"),
]
FLOOR_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
FLOOR_PROGRESS_EVENT = (
    b'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress",'
    b'"params":{"progressToken":"bench","progress":1.0,"total":1.0}}\n\n'
)
FLOOR_RESULT_EVENT = b"event: message\ndata: " + FLOOR_BODY + b"\n\n"


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
    progress = False
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        progress = progress or b'"progressToken"' in message.get("body", b"")
        more = message.get("more_body", False)
    if progress:
        # What the transports send when the tool reports progress: an SSE stream of two events.
        await send({"type": "http.response.start", "status": 200, "headers": FLOOR_SSE_HEADERS})
        await send({"type": "http.response.body", "body": FLOOR_PROGRESS_EVENT, "more_body": True})
        await send({"type": "http.response.body", "body": FLOOR_RESULT_EVENT})
        return
    await send({"type": "http.response.start", "status": 200, "headers": FLOOR_HEADERS})
    await send({"type": "http.response.body", "body": FLOOR_BODY})


def build_app(
    variant: str,
    *,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
    tenants: int = DEFAULT_TENANTS,
    redis_url: str | None = None,
) -> Any:
    """The variant's ASGI app; footprint runs raise `max_sessions` above the sessions they open."""
    if variant == "floor":
        return floor_app
    if variant == "mcpapp-json-redis":
        from asgi_mcp import McpApp

        if not redis_url:
            raise SystemExit("mcpapp-json-redis needs --redis-url")
        return McpApp(
            make_server(),
            path=MCP_PATH,
            json_response=True,
            max_sessions=max_sessions,
            redis_url=redis_url,
            fleet_secret=FLEET_SECRET,
        )
    if variant == "mcpapp-tenants":
        from asgi_mcp import McpApp, Tenants

        registry = Tenants({tenant_token(i): make_server for i in range(tenants)})
        return McpApp(tenants=registry, path=MCP_PATH, json_response=True, max_sessions=max_sessions)
    base, kind = split_variant(variant)
    server = make_mcpserver() if kind == "mcpserver" else make_server()
    if base == "mcpapp-json-limited":
        from asgi_mcp import McpApp, Rate, RateLimits, TenantLimits

        # Limits that never refuse: what the limiter costs a request that passes.
        wide = Rate(burst=10**9, per_second=1e9)
        limits = RateLimits(TenantLimits(requests=wide, tool_calls=wide, tools={"echo": wide}))
        return McpApp(server, path=MCP_PATH, json_response=True, max_sessions=max_sessions, rate_limits=limits)
    json_response = base.endswith("-json")
    if base.startswith("mcpapp-"):
        from asgi_mcp import McpApp

        return McpApp(server, path=MCP_PATH, json_response=json_response, max_sessions=max_sessions)
    if base.startswith("sdk-"):
        return server.streamable_http_app(
            streamable_http_path=MCP_PATH, json_response=json_response, host="127.0.0.1", max_sessions=max_sessions
        )
    raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


def app_from_environment() -> Any:
    """The app of one of `--workers N` uvicorn worker processes: the variant named in the environment.

    Each worker says `BENCHWORKER <pid>` on stderr once built, so the harness knows when all are up.
    """
    app = build_app(
        os.environ[ENV_VARIANT],
        max_sessions=int(os.environ.get(ENV_MAX_SESSIONS, DEFAULT_MAX_SESSIONS)),
        redis_url=os.environ.get(ENV_REDIS_URL) or None,
    )
    os.write(2, f"BENCHWORKER {os.getpid()}\n".encode())
    return app


def live_sessions(app: Any) -> int | None:
    """Legacy sessions the app holds: McpApp's own count; the SDK's session manager table; None for the floor."""
    stats = getattr(app, "stats", None)
    if stats is not None:
        return int(stats()["active_sessions"])
    for route in getattr(app, "routes", ()):
        manager = getattr(getattr(route, "app", None), "session_manager", None)
        if manager is not None:
            return len(manager._server_instances)  # private, but the only count the SDK keeps
    return None


def report_on_signal(app: Any) -> None:
    """On SIGUSR1: collect garbage, then write the live session count to stderr as `BENCHSTATS {...}`."""

    def report(signum: int, frame: Any) -> None:
        gc.collect()
        line = "BENCHSTATS " + json.dumps({"live_sessions": live_sessions(app)}) + "\n"
        os.write(2, line.encode())  # unbuffered: the handler may interrupt a write to sys.stderr

    signal.signal(signal.SIGUSR1, report)


def serve_builtin(app: Any, server: str, host: str, port: int) -> None:
    import anyio

    from asgi_mcp._serving.http1 import ServerConfig
    from asgi_mcp._serving.http1 import serve as builtin_serve

    # Keep-alive idle timeout as uvicorn's default is irrelevant under load; the parser as asked.
    # Explicit, as for uvicorn: "auto" would quietly use h11 where httptools is missing.
    config = ServerConfig(host=host, port=port, parser="h11" if "-h11" in server else "httptools", lifespan="on")
    if server.endswith("-trio"):
        anyio.run(builtin_serve, app, config, backend="trio")
    else:
        options = {"use_uvloop": server.endswith("-uvloop")}
        anyio.run(builtin_serve, app, config, backend="asyncio", backend_options=options)


def fifo_trio_batches() -> None:
    """Measurement only (`--trio-batches fifo`): every batch of ready tasks runs first-in-first-out.

    Trio's run loop takes the tasks made ready during one batch as the next batch, reverses it with
    probability 1/2 (`_r.random() < 0.5`), then pops tasks from its end: each batch runs in the
    order its tasks became ready or in the opposite order, at random. A server whose connections
    each yield once per request then serves a connection at a place in the round that jumps between
    the two ends, and a request waits anything from no time to two rounds. Setting that private
    coin to always reverse leaves the first-in-first-out order. asgi_mcp never does this.
    """
    import trio._core._run as trio_run

    coin = getattr(trio_run, "_r", None)
    if coin is None:  # pragma: no cover - a Trio whose run loop changed: measure nothing wrong
        raise SystemExit("--trio-batches fifo: this Trio has no trio._core._run._r")
    coin.random = lambda: 0.0


def serve_uvicorn_workers(args: argparse.Namespace) -> None:
    """uvicorn's supervisor with `args.workers` worker processes on one listening socket (uvloop, httptools)."""
    import uvicorn

    os.environ[ENV_VARIANT] = args.variant
    os.environ[ENV_MAX_SESSIONS] = str(args.max_sessions)
    os.environ[ENV_REDIS_URL] = args.redis_url or ""
    uvicorn.run(
        "benchmarks.apps:app_from_environment",
        factory=True,
        workers=args.workers,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


def serve(app: Any, server: str, host: str, port: int) -> None:
    if server.startswith("builtin"):
        serve_builtin(app, server, host, port)
        return
    if server == "uvicorn":
        import uvicorn

        # Explicit: "auto" would quietly fall back to asyncio and h11 when either is missing.
        uvicorn.run(
            app,
            host=host,
            port=port,
            loop="uvloop",
            http="httptools",
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
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
    parser.add_argument("variant", choices=(*VARIANTS, *MCPSERVER_VARIANTS))
    parser.add_argument("--server", choices=SERVERS, default="uvicorn")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after building the app (full collections skip the import-time heap)",
    )
    parser.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS, help="live legacy sessions at most")
    parser.add_argument("--tenants", type=int, default=DEFAULT_TENANTS, help="tokens of the mcpapp-tenants variant")
    parser.add_argument("--redis-url", default=None, help="the Redis of the fleet (mcpapp-json-redis)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on one socket (uvicorn only)")
    parser.add_argument(
        "--trio-batches",
        choices=("random", "fifo"),
        default="random",
        help="Trio's order for a batch of ready tasks: its own coin, or always first-in-first-out (measurement only)",
    )
    args = parser.parse_args(argv)
    if args.trio_batches == "fifo":
        if not args.server.endswith("-trio"):
            parser.error("--trio-batches fifo needs a Trio server")
        fifo_trio_batches()
    if args.workers > 1:
        if args.server != "uvicorn":
            parser.error("--workers needs --server uvicorn")
        with contextlib.suppress(KeyboardInterrupt):
            serve_uvicorn_workers(args)
        sys.exit(0)
    app = build_app(args.variant, max_sessions=args.max_sessions, tenants=args.tenants, redis_url=args.redis_url)
    report_on_signal(app)
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    with contextlib.suppress(KeyboardInterrupt):
        serve(app, args.server, args.host, args.port)
    sys.exit(0)


if __name__ == "__main__":
    main()
