"""In-process profile of one app's tools/call path: no sockets, no ASGI server, just the app.

The ASGI app is driven directly with in-memory receive/send: lifespan startup, one legacy session
(initialize + notifications/initialized), then N `tools/call` of the `echo` tool with `concurrency`
requests in flight, every answer checked; then lifespan shutdown. Prints µs per tools/call.

    python -m benchmarks.profile_legacy [--variant mcpapp-sse] [-n 5000] [--concurrency 32] [--cprofile]
    py-spy record --format raw -r 2000 -o /tmp/stacks.txt -- python -m benchmarks.profile_legacy -n 20000
    python -m benchmarks.profile_legacy --summarize /tmp/stacks.txt      # self/inclusive time by function

Variants as in `benchmarks.apps` (mcpapp-sse, mcpapp-json, sdk-sse, sdk-json); modern era with
`--modern` (json variants: no session).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from .apps import build_app
from .load import LEGACY_VERSION, MODERN_VERSION, PAYLOAD

HOST = (b"host", b"127.0.0.1:8000")


async def request(app: Any, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/mcp", "raw_path": b"/mcp", "query_string": b"",
        "root_path": "", "headers": [HOST, *headers], "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000), "state": {},
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


async def drive(app: Any, n: int, concurrency: int, modern: bool) -> float:
    to_app, app_receive = anyio.create_memory_object_stream[dict[str, Any]](4)
    app_send, from_app = anyio.create_memory_object_stream[dict[str, Any]](4)
    async with anyio.create_task_group() as tg:
        tg.start_soon(app, {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, app_receive.receive, app_send.send)
        await to_app.send({"type": "lifespan.startup"})
        assert (await from_app.receive())["type"] == "lifespan.startup.complete"

        base = [(b"content-type", b"application/json"), (b"accept", b"application/json, text/event-stream")]
        if modern:
            base += [(b"mcp-protocol-version", MODERN_VERSION.encode()), (b"mcp-method", b"tools/call"),
                     (b"mcp-name", b"echo")]
        else:
            base.append((b"mcp-protocol-version", LEGACY_VERSION.encode()))
            init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": LEGACY_VERSION, "capabilities": {}, "clientInfo": {"name": "p", "version": "1"}}}
            status, headers, body = await request(app, base, json.dumps(init).encode())
            assert status == 200, body
            base.append((b"mcp-session-id", headers[b"mcp-session-id"]))
            status, _, _ = await request(app, base, b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
            assert status == 202, status

        params: dict[str, Any] = {"name": "echo", "arguments": {"text": PAYLOAD}}
        if modern:
            params["_meta"] = {"io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
                               "io.modelcontextprotocol/clientCapabilities": {}}
        bad = 0
        next_id = iter(range(1, n + 1))

        async def worker() -> None:
            nonlocal bad
            for request_id in next_id:
                body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}).encode()
                status, _, answer = await request(app, base, body)
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
    return elapsed


def summarize_collapsed(path: Path, top: int) -> None:
    """Self and inclusive share per function from py-spy's `--format raw` (collapsed stacks)."""
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    by_package: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaf = frames[-1]
        self_time[leaf] += count
        by_package[_package(leaf)] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"{total} samples")
    print("\n-- self time by package --")
    for name, count in by_package.most_common(top):
        print(f"{100 * count / total:5.1f}%  {name}")
    print("\n-- self time by function --")
    for name, count in self_time.most_common(top):
        print(f"{100 * count / total:5.1f}%  {name}")
    print("\n-- inclusive time by function (asgi_mcp and mcp frames) --")
    shown = 0
    for name, count in inclusive.most_common():
        if "asgi_mcp" in name or "/mcp/" in name or "mcp_types" in name:
            print(f"{100 * count / total:5.1f}%  {name}")
            shown += 1
            if shown >= top:
                break


def _package(frame: str) -> str:
    for marker, label in (
        ("asgi_mcp/", "asgi_mcp"), ("/mcp/", "mcp (SDK)"), ("mcp_types", "mcp_types"), ("pydantic", "pydantic"),
        ("opentelemetry", "opentelemetry"), ("/anyio/", "anyio"), ("asyncio/", "asyncio"), ("/trio/", "trio"),
        ("/json/", "json"), ("starlette", "starlette"), ("sse_starlette", "sse_starlette"), ("benchmarks/", "driver"),
    ):
        if marker in frame:
            return label
    return "other: " + frame.split(" (")[-1].split(":")[0][-60:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_legacy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="mcpapp-sse", choices=("mcpapp-sse", "mcpapp-json", "sdk-sse", "sdk-json"))
    parser.add_argument("-n", type=int, default=5000, help="tools/call requests")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--modern", action="store_true", help="2026-07-28 requests (no session)")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--cprofile", type=Path, nargs="?", const=Path("benchmarks/results/profile.pstats"),
                        help="run under cProfile, save stats there and print the top functions")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--summarize", type=Path, help="summarize a py-spy --format raw file and exit")
    args = parser.parse_args(argv)
    if args.summarize:
        summarize_collapsed(args.summarize, args.top)
        return
    app = build_app(args.variant)
    profiler = cProfile.Profile() if args.cprofile else None
    if profiler:
        profiler.enable()
    elapsed = anyio.run(drive, app, args.n, args.concurrency, args.modern, backend=args.backend)
    if profiler:
        profiler.disable()
        args.cprofile.parent.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(args.cprofile)
        stats = pstats.Stats(str(args.cprofile), stream=sys.stdout).strip_dirs()
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
    era = "modern" if args.modern else "legacy"
    print(f"{args.variant} {era}: {args.n} tools/call, concurrency {args.concurrency}, {args.backend}: "
          f"{elapsed:.2f} s, {elapsed / args.n * 1e6:.0f} µs/call{' (under cProfile)' if profiler else ''}")


if __name__ == "__main__":
    main()
