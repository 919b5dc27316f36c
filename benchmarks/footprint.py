"""Memory footprint: resident memory per idle legacy session, McpApp vs the SDK; and per tenant.

Sessions: for each ASGI server, each pair of variants (mcpapp-json vs sdk-json, mcpapp-sse vs
sdk-sse) and each size N (default 1 000 and 10 000), a fresh `benchmarks.apps` process, pinned to
the server core, with `--max-sessions` above what the run opens (both libraries default to 10 000;
their 30-minute idle timeout is far longer than a run). The client (h11 on anyio, `--concurrency`
keep-alive connections, pinned to the load core) opens one warm-up session per connection, so
per-connection buffers and first-use caches land in the baseline; the process then collects garbage
(SIGUSR1, see `benchmarks.apps`) and its VmRSS is read from /proc/PID/status. Then N sessions
(2025-11-25 initialize + notifications/initialized; kept open, no GET stream), garbage collection,
VmRSS again. Reported: (RSS after - RSS before) / N in bytes per session, the McpApp/SDK ratio (the
target: at most 0.25), the open rate, and the server's own live session count, which must be N plus
the warm-up. Every open must succeed: any error (or a wrong live count) reports the cell as ERRORS.

Connections (`run_connection_footprint`, `python -m benchmarks.run --conn-footprint N`): what the
ASGI server itself holds per connection, next to uvicorn's and hypercorn's. Idle keep-alive: a fresh
`floor` process, 32 warm-up connections (one POST each, then closed), garbage collection and VmRSS;
then N connections, one POST each, kept open and idle; VmRSS again; growth / N. SSE stream: a fresh
`mcpapp-sse` process with N legacy sessions opened first (and a few warm-up GET streams, closed),
VmRSS; then one standalone GET stream per session, each on its own new connection, held open (the
response head read, nothing more); VmRSS again; growth / N: the connection, the server's streaming
response and McpApp's attached stream together. Every request must succeed and every stream answer
200 `text/event-stream`, else the cell reads ERRORS.

Tenants: `mcpapp-tenants` (McpApp(tenants=Tenants(...)), JSON answers) with N tokens plus one per
connection for the warm-up, each token's factory the same `make_server`. After the warm-up (one
session and one tools/call per warm-up token), one session per remaining token, each followed by one
`tools/call`. Reported: RSS per tenant (its server, built on its first request, plus its session),
the time to open all N, errors (must be 0). The SDK has no tenants: McpApp only.

    python -m benchmarks.footprint [--servers uvicorn,hypercorn,hypercorn-trio] [--sessions 1000,10000]
        [--tenants 1000] [--concurrency 32]

Also run by `python -m benchmarks.run --footprint`. Results: a Markdown table on stdout; alone, the
JSON goes to `benchmarks/results/footprint.json`, from `benchmarks.run` under `footprint` in its JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio

from .apps import SERVERS, tenant_token
from .load import (
    ACCEPT,
    INITIALIZED_BODY,
    LEGACY_VERSION,
    PAYLOAD,
    H11Client,
    header,
    initialize_body,
    tools_call_body,
)
from .run import ROOT, SERVER_LABEL, ServerSet, code_fingerprint, package_versions

PAIRS = (("mcpapp-json", "sdk-json"), ("mcpapp-sse", "sdk-sse"))
DEFAULT_SIZES = (1_000, 10_000)
DEFAULT_TENANTS = 1_000
DEFAULT_CONCURRENCY = 32
SETTLE_S = 0.5


@dataclass
class Opened:
    """What one batch of opens came to."""

    ok: int = 0
    errors: int = 0
    sample_error: str | None = None
    seconds: float = 0.0


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Run the client on the load core (this process), as the throughput runs do with wrk."""
    if cpu is None or cpu < 0 or not hasattr(os, "sched_setaffinity"):
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


async def open_one(client: H11Client, path: bytes, headers: list[tuple[str, str]], call_tool: bool) -> str | None:
    """initialize + notifications/initialized (+ one tools/call); the session stays open. None, or what failed."""
    status, response_headers, body = await client.request("POST", path, headers, initialize_body().encode())
    session_id = header(response_headers, b"mcp-session-id")
    if status != 200 or session_id is None or b'"result"' not in body:
        return f"initialize: {status} {body[:160]!r}"
    with_session = [*headers, ("mcp-session-id", session_id)]
    status, _, body = await client.request("POST", path, with_session, INITIALIZED_BODY.encode())
    if status not in (200, 202):
        return f"notifications/initialized: {status} {body[:160]!r}"
    if call_tool:
        prefix, suffix = tools_call_body(False)
        status, _, body = await client.request("POST", path, with_session, f"{prefix}1{suffix}".encode())
        if status != 200 or PAYLOAD.encode() not in body or b'"error"' in body or b'"isError":true' in body:
            return f"tools/call: {status} {body[:160]!r}"
    return None


async def open_sessions(
    clients: list[H11Client],
    url: str,
    indices: list[Iterator[int]],
    *,
    token_for: Callable[[int], str] | None,
    call_tool: bool,
) -> Opened:
    """Open one session per index; client i takes its indices from `indices[i]` (a shared iterator: any free client)."""
    import h11

    path = (urlsplit(url).path or "/").encode()
    base = [("content-type", "application/json"), ("accept", ACCEPT), ("mcp-protocol-version", LEGACY_VERSION)]
    opened = Opened()

    async def worker(slot: int) -> None:
        for index in indices[slot]:
            headers = base if token_for is None else [*base, ("authorization", f"Bearer {token_for(index)}")]
            try:
                if not clients[slot].reusable:
                    await clients[slot].aclose()
                    clients[slot] = await H11Client.connect(url)
                problem = await open_one(clients[slot], path, headers, call_tool)
            except (OSError, anyio.EndOfStream, anyio.BrokenResourceError, h11.ProtocolError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
                clients[slot].reusable = False  # reconnect before the next open
            if problem is None:
                opened.ok += 1
            else:
                opened.errors += 1
                opened.sample_error = opened.sample_error or problem

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for slot in range(len(clients)):
            tg.start_soon(worker, slot)
    opened.seconds = time.perf_counter() - started
    return opened


def settle(servers: ServerSet, variant: str) -> tuple[int, int | None]:
    """Garbage-collect in the server, let it go quiet, read its RSS; returns (RSS bytes, live sessions)."""
    live = servers.stats(variant)["live_sessions"]
    time.sleep(SETTLE_S)
    return rss_bytes(servers.pid(variant)), live


async def _measure(servers: ServerSet, variant: str, count: int, concurrency: int, tenants: bool) -> dict[str, Any]:
    url = servers.url(variant)
    token_for = tenant_token if tenants else None
    clients = [await H11Client.connect(url) for _ in range(concurrency)]
    try:
        # Warm-up: one session on every connection, with indices past the measured ones (tenants: own tokens).
        warm = await open_sessions(
            clients, url, [iter([count + i]) for i in range(concurrency)], token_for=token_for, call_tool=tenants
        )
        rss_before, live_before = settle(servers, variant)
        shared = iter(range(count))
        opened = await open_sessions(clients, url, [shared] * concurrency, token_for=token_for, call_tool=tenants)
        rss_after, live_after = settle(servers, variant)
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()
    expected = count + concurrency
    errors = warm.errors + opened.errors
    status = "ok" if errors == 0 and live_after == expected else "errors"
    return {
        "status": status,
        "variant": variant,
        "count": count,
        "warmup": concurrency,
        "errors": errors,
        "sample_error": warm.sample_error or opened.sample_error,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "bytes_each": (rss_after - rss_before) / count,
        "open_s": opened.seconds,
        "opens_per_s": opened.ok / opened.seconds if opened.seconds else 0.0,
        "live_sessions_before": live_before,
        "live_sessions_after": live_after,
        "live_sessions_expected": expected,
    }


def measure(
    server: str,
    variant: str,
    count: int,
    *,
    concurrency: int,
    base_port: int,
    server_cpu: int | None,
    load_cpu: int | None,
    tenants: bool = False,
) -> dict[str, Any]:
    """One fresh server process: baseline after the warm-up, then `count` sessions (or tenants)."""
    app_args = ["--max-sessions", str(max(20_000, 2 * (count + concurrency)))]
    if tenants:
        app_args += ["--tenants", str(count + concurrency)]
    with ServerSet(server, base_port, server_cpu, variants=[variant], app_args=app_args) as servers, pinned(load_cpu):
        result = anyio.run(_measure, servers, variant, count, concurrency, tenants)
    print(f"  {SERVER_LABEL[server]:17} {variant:14} {count:6}: {_describe(result)}", file=sys.stderr, flush=True)
    return result


def _describe(cell: dict[str, Any]) -> str:
    text = (
        f"{cell['bytes_each']:8.0f} B each, opened in {cell['open_s']:6.2f} s ({cell['opens_per_s']:5.0f}/s), "
        f"live {cell['live_sessions_after']}/{cell['live_sessions_expected']}"
    )
    if cell["status"] != "ok":
        text += f"  ERRORS ({cell['errors']}: {cell['sample_error']})"
    return text


def run_footprint(
    servers: list[str],
    *,
    sizes: tuple[int, ...] = DEFAULT_SIZES,
    tenants: int = DEFAULT_TENANTS,
    concurrency: int = DEFAULT_CONCURRENCY,
    base_port: int = 8400,
    server_cpu: int | None = 0,
    load_cpu: int | None = 1,
) -> dict[str, Any]:
    """Measure every server; returns the results with their Markdown table (`table_markdown`)."""
    options = {"concurrency": concurrency, "base_port": base_port, "server_cpu": server_cpu, "load_cpu": load_cpu}
    one = functools.partial(
        measure, concurrency=concurrency, base_port=base_port, server_cpu=server_cpu, load_cpu=load_cpu
    )
    sessions: dict[str, dict[str, dict[str, Any]]] = {}
    per_tenant: dict[str, dict[str, Any]] = {}
    for server in servers:
        sessions[server] = {
            str(count): {variant: one(server, variant, count) for pair in PAIRS for variant in pair} for count in sizes
        }
        if tenants > 0:
            per_tenant[server] = one(server, "mcpapp-tenants", tenants, tenants=True)
    cells = [cell for sizes_ in sessions.values() for cells in sizes_.values() for cell in cells.values()]
    return {
        "ok": all(cell["status"] == "ok" for cell in [*cells, *per_tenant.values()]),
        "options": {"sizes": list(sizes), "tenants": tenants, **options},
        "sessions": sessions,
        "tenants": per_tenant,
        "table_markdown": table(sessions, per_tenant),
    }


def _fmt_bytes(cell: dict[str, Any]) -> str:
    if cell["status"] != "ok":
        return f"ERRORS ({cell['errors']} failed, live {cell['live_sessions_after']}/{cell['live_sessions_expected']})"
    return f"{cell['bytes_each']:,.0f}".replace(",", " ")


def _ratio(mcpapp: dict[str, Any], sdk: dict[str, Any]) -> str:
    if mcpapp["status"] != "ok" or sdk["status"] != "ok" or sdk["bytes_each"] <= 0:
        return "-"
    return f"{mcpapp['bytes_each'] / sdk['bytes_each']:.2f}"


def table(sessions: dict[str, dict[str, dict[str, Any]]], per_tenant: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| server | idle sessions | McpApp JSON B/session | SDK JSON B/session | McpApp/SDK "
        "| McpApp SSE B/session | SDK SSE B/session | McpApp/SDK | opens/s JSON McpApp / SDK |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for server, sizes in sessions.items():
        for count, cells in sizes.items():
            mj, sj, ms, ss = (cells[v] for pair in PAIRS for v in pair)
            lines.append(
                f"| {SERVER_LABEL[server]} | {int(count):,} | {_fmt_bytes(mj)} | {_fmt_bytes(sj)} | {_ratio(mj, sj)} "
                f"| {_fmt_bytes(ms)} | {_fmt_bytes(ss)} | {_ratio(ms, ss)} "
                f"| {mj['opens_per_s']:,.0f} / {sj['opens_per_s']:,.0f} |".replace(",", " ")
            )
    if per_tenant:
        lines += [
            "",
            "| server | tenants (McpApp only) | RSS B/tenant | time to open all s | tenants/s | errors |",
            "|---|---|---|---|---|---|",
        ]
        for server, cell in per_tenant.items():
            lines.append(
                f"| {SERVER_LABEL[server]} | {cell['count']:,} | {_fmt_bytes(cell)} | {cell['open_s']:.2f} "
                f"| {cell['opens_per_s']:,.0f} | {cell['errors']} |".replace(",", " ")
            )
    lines += [
        "",
        "- B/session: growth of the server's VmRSS (after a full collection) from the warm-up baseline to N idle"
        " legacy sessions, divided by N. B/tenant: the same for one session and one tools/call per tenant, the"
        " tenant's server built on its first request. The SDK has no tenants.",
    ]
    return "\n".join(lines)


CONN_WARMUP = 32


def _raw_request(method: str, port: int, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} /mcp HTTP/1.1", f"host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    if method != "GET":
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read a response head; returns (head, what followed it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before the response head: {data[:120]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _keepalive_connection(port: int) -> tuple[socket.socket | None, str | None]:
    """One connection with one POST to the floor, its answer read in full; the socket stays open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    prefix, suffix = tools_call_body(False)
    body = f"{prefix}1{suffix}".encode()
    sock.sendall(_raw_request("POST", port, {"content-type": "application/json", "accept": ACCEPT}, body))
    head, rest = _read_head(sock)
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        None,
    )
    if not head.startswith(b"HTTP/1.1 200") or length is None:
        sock.close()
        return None, f"keep-alive POST: {head[:120]!r}"
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None, "closed mid-answer"
        rest += chunk
    return sock, None


def _open_stream(port: int, session_id: str) -> tuple[socket.socket | None, str | None]:
    """A new connection with a standalone GET stream on `session_id`; the head read, the stream left open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    headers = {"accept": "text/event-stream", "mcp-protocol-version": LEGACY_VERSION, "mcp-session-id": session_id}
    sock.sendall(_raw_request("GET", port, headers))
    head, _ = _read_head(sock)
    if not head.startswith(b"HTTP/1.1 200") or b"text/event-stream" not in head.lower():
        sock.close()
        return None, f"GET stream: {head[:160]!r}"
    return sock, None


def _legacy_sessions(url: str, count: int) -> list[str]:
    import httpx

    headers = {"content-type": "application/json", "accept": ACCEPT, "mcp-protocol-version": LEGACY_VERSION}
    ids: list[str] = []
    with httpx.Client(timeout=10) as client:
        for _ in range(count):
            answer = client.post(url, headers=headers, content=initialize_body())
            session_id = answer.headers.get("mcp-session-id")
            if answer.status_code != 200 or not session_id:
                raise RuntimeError(f"initialize: {answer.status_code} {answer.text[:160]}")
            answer = client.post(url, headers={**headers, "mcp-session-id": session_id}, content=INITIALIZED_BODY)
            if answer.status_code not in (200, 202):
                raise RuntimeError(f"notifications/initialized: {answer.status_code}")
            ids.append(session_id)
    return ids


def _hold(opened: list[tuple[socket.socket | None, str | None]], held: list[socket.socket]) -> tuple[int, str | None]:
    """Keep the sockets that opened; returns (failures, a sample failure)."""
    failures = [problem for sock, problem in opened if sock is None]
    held += [sock for sock, _ in opened if sock is not None]
    return len(failures), failures[0] if failures else None


def _connection_cell(server: str, what: str, count: int, base_port: int, server_cpu: int | None) -> dict[str, Any]:
    """One fresh server process: RSS growth per idle keep-alive connection (`what="keepalive"`) or SSE stream."""
    variant = "floor" if what == "keepalive" else "mcpapp-sse"
    app_args = ["--max-sessions", str(max(20_000, 2 * (count + CONN_WARMUP)))]
    held: list[socket.socket] = []
    with ServerSet(server, base_port, server_cpu, variants=[variant], app_args=app_args) as servers:
        port = servers.ports[variant]
        try:
            if what == "keepalive":
                errors, sample = _hold([_keepalive_connection(port) for _ in range(CONN_WARMUP)], held)
                for sock in held:
                    sock.close()
                held.clear()
                rss_before, _ = settle(servers, variant)
                opened = [_keepalive_connection(port) for _ in range(count)]
            else:
                ids = _legacy_sessions(servers.url(variant), count + CONN_WARMUP)
                errors, sample = _hold([_open_stream(port, i) for i in ids[count:]], held)
                for sock in held:
                    sock.close()
                held.clear()
                rss_before, _ = settle(servers, variant)
                opened = [_open_stream(port, i) for i in ids[:count]]
            more, more_sample = _hold(opened, held)
            rss_after, _ = settle(servers, variant)
        except (OSError, RuntimeError) as exc:
            return {"status": "errors", "what": what, "count": count, "errors": 1, "sample_error": repr(exc)}
        finally:
            for sock in held:
                sock.close()
    errors += more
    cell = {
        "status": "ok" if errors == 0 else "errors",
        "what": what,
        "count": count,
        "errors": errors,
        "sample_error": sample or more_sample,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "bytes_each": (rss_after - rss_before) / count,
    }
    shown = f"{cell['bytes_each']:8.0f} B each" if errors == 0 else f"ERRORS ({errors}: {cell['sample_error']})"
    print(f"  {SERVER_LABEL[server]:22} {what:9} {count:6}: {shown}", file=sys.stderr, flush=True)
    return cell


def run_connection_footprint(
    servers: list[str], *, count: int, base_port: int = 8480, server_cpu: int | None = 0, load_cpu: int | None = 1
) -> dict[str, Any]:
    """RSS per idle keep-alive connection and per open SSE stream on each server; with its Markdown table."""
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    with pinned(load_cpu):
        for server in servers:
            cells[server] = {
                what: _connection_cell(server, what, count, base_port, server_cpu) for what in ("keepalive", "sse")
            }
    ok = all(cell["status"] == "ok" for per_server in cells.values() for cell in per_server.values())
    return {"ok": ok, "count": count, "cells": cells, "table_markdown": connection_table(cells, count)}


def connection_table(cells: dict[str, dict[str, dict[str, Any]]], count: int) -> str:
    lines = [
        "| server | B per idle keep-alive connection | B per open SSE stream (McpApp GET, its connection included) |",
        "|---|---|---|",
    ]
    for server, per_server in cells.items():
        lines.append(
            f"| {SERVER_LABEL[server]} | {_fmt_conn(per_server['keepalive'])} | {_fmt_conn(per_server['sse'])} |"
        )
    lines += [
        "",
        f"- Growth of the server process's VmRSS (after a full collection) over {count} connections or streams,"
        " divided by their number; keep-alive connections against the floor app (one POST each, then idle), SSE"
        " streams as standalone GETs on as many legacy McpApp sessions opened beforehand.",
    ]
    return "\n".join(lines)


def _fmt_conn(cell: dict[str, Any]) -> str:
    if cell["status"] != "ok":
        return f"ERRORS ({cell['errors']}: {cell['sample_error']})"
    return f"{cell['bytes_each']:,.0f}".replace(",", " ")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.footprint", description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"comma-separated subset of {', '.join(SERVERS)}")
    parser.add_argument(
        "--sessions", default=",".join(map(str, DEFAULT_SIZES)), help="comma-separated idle session counts"
    )
    parser.add_argument("--tenants", type=int, default=DEFAULT_TENANTS, help="tenants to open (0: skip)")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="connections opening sessions")
    parser.add_argument("--server-cpu", type=int, default=0, help="core for the server (-1: no pinning)")
    parser.add_argument("--load-cpu", type=int, default=1, help="core for the client (-1: no pinning)")
    parser.add_argument("--base-port", type=int, default=8400)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "footprint.json")
    args = parser.parse_args(argv)
    servers = [s for s in args.servers.split(",") if s]
    for name in servers:
        if name not in SERVERS:
            parser.error(f"unknown server {name!r}")
    started = time.monotonic()
    code = code_fingerprint()
    results = run_footprint(
        servers,
        sizes=tuple(int(n) for n in args.sessions.split(",") if n),
        tenants=args.tenants,
        concurrency=args.concurrency,
        base_port=args.base_port,
        server_cpu=None if args.server_cpu < 0 else args.server_cpu,
        load_cpu=None if args.load_cpu < 0 else args.load_cpu,
    )
    document = {
        "environment": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "versions": package_versions(),
            "code": code,
        },
        "elapsed_s": round(time.monotonic() - started, 1),
        **results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(results["table_markdown"])
    print(f"results written to {args.output}", file=sys.stderr)
    if not results["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
