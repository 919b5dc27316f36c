"""In-process profile of one app's tools/call path: no sockets, no ASGI server, just the app.

The ASGI app is driven directly with in-memory receive/send: lifespan startup, one legacy session
(initialize + notifications/initialized), then N `tools/call` of the `echo` tool with `concurrency`
requests in flight, every answer checked; then lifespan shutdown. Prints µs per tools/call.

    python -m benchmarks.profile_legacy [--variant mcpapp-sse] [-n 5000] [--concurrency 32] [--cprofile]
    py-spy record --format raw -r 2000 -o /tmp/stacks.txt -- python -m benchmarks.profile_legacy -n 20000
    python -m benchmarks.profile_legacy --summarize /tmp/stacks.txt      # self/inclusive time by function

Variants as in `benchmarks.apps` (mcpapp-sse, mcpapp-json, sdk-sse, sdk-json, each also with
`-mcpserver`: an `MCPServer` with decorated tools instead of the low-level `Server`); modern era with
`--modern` (json variants: no session).

`--ablate NAME` (repeatable) monkeypatches one cost away, in this process only, to size an
optimization before anyone writes it (nothing in `asgi_mcp/` is changed):

    no-otel          server.middleware = []: the SDK's per-request OpenTelemetry span (both transports)
    gc-freeze        gc.freeze() once the app is built: full collections stop rescanning the import heap
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import gc
import json
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from .apps import MCPSERVER_VARIANTS, build_app
from .load import LEGACY_VERSION, MODERN_VERSION, PAYLOAD

HOST = (b"host", b"127.0.0.1:8000")


async def request(app: Any, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/mcp",
        "raw_path": b"/mcp",
        "query_string": b"",
        "root_path": "",
        "headers": [HOST, *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    body_sent = False
    done = anyio.Event()
    status = 0
    response_headers: dict[bytes, bytes] = {}
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers.update(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    await app(scope, receive, send)
    done.set()
    return status, response_headers, b"".join(chunks)


async def drive(app: Any, n: int, concurrency: int, modern: bool) -> tuple[float, list[float]]:
    to_app, app_receive = anyio.create_memory_object_stream[dict[str, Any]](4)
    app_send, from_app = anyio.create_memory_object_stream[dict[str, Any]](4)
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            app, {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, app_receive.receive, app_send.send
        )
        await to_app.send({"type": "lifespan.startup"})
        assert (await from_app.receive())["type"] == "lifespan.startup.complete"

        base = [(b"content-type", b"application/json"), (b"accept", b"application/json, text/event-stream")]
        if modern:
            base += [
                (b"mcp-protocol-version", MODERN_VERSION.encode()),
                (b"mcp-method", b"tools/call"),
                (b"mcp-name", b"echo"),
            ]
        else:
            base.append((b"mcp-protocol-version", LEGACY_VERSION.encode()))
            init = {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": LEGACY_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "p", "version": "1"},
                },
            }
            status, headers, body = await request(app, base, json.dumps(init).encode())
            assert status == 200, body
            base.append((b"mcp-session-id", headers[b"mcp-session-id"]))
            status, _, _ = await request(app, base, b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
            assert status == 202, status

        params: dict[str, Any] = {"name": "echo", "arguments": {"text": PAYLOAD}}
        if modern:
            params["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        bad = 0
        latencies: list[float] = []
        next_id = iter(range(1, n + 1))

        async def worker() -> None:
            nonlocal bad
            for request_id in next_id:
                body = json.dumps(
                    {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
                ).encode()
                sent_at = time.perf_counter()
                status, _, answer = await request(app, base, body)
                latencies.append(time.perf_counter() - sent_at)
                if status != 200 or b'"result"' not in answer or PAYLOAD.encode() not in answer or b'"error"' in answer:
                    bad += 1

        started = time.perf_counter()
        async with anyio.create_task_group() as workers:
            for _ in range(concurrency):
                workers.start_soon(worker)
        elapsed = time.perf_counter() - started
        if bad:
            raise SystemExit(f"{bad} of {n} tools/call answers were not successful results")

        await to_app.send({"type": "lifespan.shutdown"})
        with anyio.move_on_after(10):
            await from_app.receive()
        tg.cancel_scope.cancel()
    return elapsed, latencies


# Where a sample's time goes: the first rule whose frame name appears anywhere in the stack wins.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("startup and imports (not per request)", "_find_and_load"),
    ("benchmark driver (in-memory ASGI client)", "request.<locals>.send"),
    ("benchmark driver (in-memory ASGI client)", "request.<locals>.receive"),
    ("SDK kernel: the echo handler itself", "call_tool (benchmarks/apps.py"),
    ("SDK kernel: request validation (validate_client_request)", "validate_client_request"),
    ("SDK kernel: params model_validate", "BaseModel.model_validate"),
    ("SDK kernel: result serialization (_serialize, model_dump)", "ServerRunner._serialize"),
    ("SDK kernel: result serialization (_serialize, model_dump)", "_dump_result"),
    ("SDK kernel: OpenTelemetry span", "otel_span"),
    ("SDK kernel: other (context, middleware chain)", "ServerRunner._on_request"),
    ("McpApp: answer serialization + delivery (emit, dumps, Frame)", "SessionStreams.emit"),
    ("McpApp: request task bookkeeping (run_admitted)", "SessionDispatcher.run_admitted"),
    ("McpApp: SSE response writes (ResponseWriter, encode_event)", "ResponseWriter."),
    ("McpApp: Host/Origin check (ipaddress parsing)", "OriginPolicy.check"),
    ("McpApp: Headers() decoding", "Headers.__init__"),
    ("McpApp: JSON parse + classify", "parse_body"),
    ("McpApp: per-request stream (new_stream)", "SessionStreams.new_stream"),
    ("McpApp: per-request metadata/closures", "LegacyEndpoint._metadata"),
    ("McpApp: session lookup + id check", "LegacyEndpoint._session_for"),
    ("McpApp: other", "asgi_mcp/"),
    ("SDK transport (Starlette, sse-starlette, session manager)", "starlette"),
    ("SDK transport (Starlette, sse-starlette, session manager)", "mcp/server/streamable_http"),
    ("SDK kernel: other", "/mcp/"),
    ("benchmark driver (in-memory ASGI client)", "benchmarks/profile_legacy.py:"),
)


def summarize_collapsed(path: Path, top: int) -> None:
    """Where time goes, from py-spy's `--format raw` (collapsed stacks): categories, then functions."""
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    categories: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        category = next((label for label, marker in CATEGORIES if marker in stack), "event loop / scheduling")
        categories[category] += count
        if category.startswith("startup"):
            continue
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    startup = categories.pop("startup and imports (not per request)", 0)
    print(f"{total} samples while serving ({startup} more at startup, left out)")
    print("\n-- where the time goes (share of serving samples) --")
    for name, count in categories.most_common():
        print(f"{100 * count / total:5.1f}%  {name}")
    print("\n-- self time by function --")
    for name, count in self_time.most_common(top):
        print(f"{100 * count / total:5.1f}%  {name}")
    print("\n-- inclusive time, asgi_mcp frames --")
    shown = 0
    for name, count in inclusive.most_common():
        if "asgi_mcp/" in name:
            print(f"{100 * count / total:5.1f}%  {name}")
            shown += 1
            if shown >= top:
                break


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000 if ordered else 0.0


ABLATIONS = ("no-otel", "gc-freeze")


def ablate(app: Any, names: list[str]) -> None:
    for name in names:
        if name == "no-otel":
            server = getattr(app, "host", None)
            lowlevel = getattr(server, "server", None)
            if lowlevel is None:  # the SDK's Starlette app: reach the Server through its session manager
                lowlevel = _sdk_server(app)
            lowlevel.middleware = []
        elif name == "gc-freeze":
            gc.collect()
            gc.freeze()


def _sdk_server(app: Any) -> Any:
    for route in getattr(app, "routes", []):
        endpoint = getattr(route, "app", None) or getattr(route, "endpoint", None)
        manager = getattr(endpoint, "session_manager", None)
        if manager is not None:
            return manager.app
    raise SystemExit("cannot find the SDK server behind this app")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_legacy", description=__doc__.split("\n\n")[0])
    base = ("mcpapp-sse", "mcpapp-json", "sdk-sse", "sdk-json")
    parser.add_argument("--variant", default="mcpapp-sse", choices=base + MCPSERVER_VARIANTS)
    parser.add_argument("-n", type=int, default=5000, help="tools/call requests")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--modern", action="store_true", help="2026-07-28 requests (no session)")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument(
        "--cprofile",
        type=Path,
        nargs="?",
        const=Path("benchmarks/results/profile.pstats"),
        help="run under cProfile, save stats there and print the top functions",
    )
    parser.add_argument("--ablate", action="append", default=[], choices=ABLATIONS)
    parser.add_argument("--repeat", type=int, default=1, help="runs in this process (fresh app each); min and median")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--summarize", type=Path, help="summarize a py-spy --format raw file and exit")
    args = parser.parse_args(argv)
    if args.summarize:
        summarize_collapsed(args.summarize, args.top)
        return
    profiler = cProfile.Profile() if args.cprofile else None
    times: list[float] = []
    latencies: list[float] = []
    gc_time = [0.0, 0]
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_time[0] += time.perf_counter() - gc_started[0]
            gc_time[1] += 1

    for _ in range(args.repeat):
        app = build_app(args.variant)
        ablate(app, args.ablate)
        gc.callbacks.append(on_gc)
        if profiler:
            profiler.enable()
        try:
            elapsed, run_latencies = anyio.run(drive, app, args.n, args.concurrency, args.modern, backend=args.backend)
            times.append(elapsed)
            latencies.extend(run_latencies)
        finally:
            if profiler:
                profiler.disable()
            gc.callbacks.remove(on_gc)
    if profiler:
        args.cprofile.parent.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(args.cprofile)
        stats = pstats.Stats(str(args.cprofile), stream=sys.stdout).strip_dirs()
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
    era = "modern" if args.modern else "legacy"
    ablated = f" [ablated: {', '.join(args.ablate)}]" if args.ablate else ""
    per_call = sorted(t / args.n * 1e6 for t in times)
    print(
        f"{args.variant}{ablated} {era}: {args.n} tools/call x {args.repeat}, concurrency {args.concurrency}, "
        f"{args.backend}: min {per_call[0]:.0f} µs/call, median {statistics.median(per_call):.0f}; "
        f"gc {gc_time[1]} collections, {gc_time[0] / sum(times) * 100:.1f}% of the time; latency "
        f"p50 {_pct(latencies, 50):.2f} ms, p99 {_pct(latencies, 99):.2f} ms, max {_pct(latencies, 100):.2f} ms"
        f"{' (under cProfile)' if profiler else ''}"
    )


if __name__ == "__main__":
    main()
