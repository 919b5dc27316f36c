"""Load generation: one MCP session opened before the run, then `tools/call` at full speed.

Engines:

* `wrk` (preferred, Debian package `wrk`): one thread, N keep-alive connections, a generated Lua
  script that POSTs `tools/call` with a fresh JSON-RPC id per request (one session's requests must
  not share ids) and checks every response body: HTTP 200, a JSON-RPC `result`, the echoed text,
  no `isError: true`, no JSON-RPC `error`. Latency percentiles come from wrk.
* `h11` (fallback when `wrk` is not on PATH): N concurrent keep-alive HTTP/1.1 connections on raw
  sockets driven by h11 under anyio, each reading its response (JSON or SSE) to the end before the
  next request. Same checks, same output. Slower than wrk: it can be the bottleneck for the floor.

Both report `requests`, `ok`, `bad` (a completed response that is not a successful tools/call
result), `socket_errors`, `duration_s`, `rps` (successful responses per second), `p50_ms`, `p99_ms`.

    python -m benchmarks.load --url http://127.0.0.1:8000/mcp --scenario legacy-sse --duration 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

LEGACY_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
PAYLOAD = "bench-payload"
SCENARIOS = ("legacy-sse", "legacy-json", "modern-json")
ACCEPT = "application/json, text/event-stream"


@dataclass
class LoadSpec:
    """One timed run: where to POST, with which headers, and the body around the JSON-RPC id."""

    url: str
    headers: dict[str, str]
    body_prefix: str  # body = prefix + str(id) + suffix
    body_suffix: str
    needle: str = PAYLOAD
    extra: dict[str, Any] = field(default_factory=dict)


def tools_call_body(modern: bool) -> tuple[str, str]:
    params: dict[str, Any] = {"name": "echo", "arguments": {"text": PAYLOAD}}
    if modern:
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    rest = json.dumps({"method": "tools/call", "params": params}, separators=(",", ":"))
    return '{"jsonrpc":"2.0","id":', "," + rest[1:]


def open_session(url: str, scenario: str) -> tuple[dict[str, str], str | None]:
    """Headers for the timed run; legacy: initialize + notifications/initialized first (untimed).

    Returns the headers and the session id (None for the modern era, which has no session).
    """
    headers = {"content-type": "application/json", "accept": ACCEPT}
    if scenario.startswith("modern"):
        headers.update({"mcp-protocol-version": MODERN_VERSION, "mcp-method": "tools/call", "mcp-name": "echo"})
        return headers, None
    headers["mcp-protocol-version"] = LEGACY_VERSION
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"},
        },
    }
    with httpx.Client(timeout=10) as client:
        response = client.post(url, headers=headers, json=init)
        if response.status_code != 200 or '"result"' not in response.text:
            raise RuntimeError(f"initialize failed: {response.status_code} {response.text[:200]}")
        session_id = response.headers.get("mcp-session-id")
        if session_id:
            headers["mcp-session-id"] = session_id
        response = client.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        if response.status_code not in (200, 202):
            raise RuntimeError(f"notifications/initialized failed: {response.status_code}")
    return headers, session_id


def close_session(url: str, headers: dict[str, str]) -> None:
    if "mcp-session-id" not in headers:
        return
    with contextlib.suppress(httpx.HTTPError):
        httpx.delete(url, headers=headers, timeout=5)


def make_spec(url: str, scenario: str) -> tuple[LoadSpec, str | None]:
    headers, session_id = open_session(url, scenario)
    prefix, suffix = tools_call_body(scenario.startswith("modern"))
    return LoadSpec(url, headers, prefix, suffix), session_id


def engine_available(engine: str) -> bool:
    return engine != "wrk" or shutil.which("wrk") is not None


def pick_engine(requested: str = "auto") -> str:
    if requested == "auto":
        return "wrk" if shutil.which("wrk") else "h11"
    if not engine_available(requested):
        raise SystemExit(f"load engine {requested!r} is not available")
    return requested


def _pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []


# -- wrk ------------------------------------------------------------------------------------------

_LUA = r"""
local path = [==[%(path)s]==]
local headers = %(headers)s
local prefix = [==[%(prefix)s]==]
local suffix = [==[%(suffix)s]==]
local needle = [==[%(needle)s]==]
local counter = 0
ok = 0
bad = 0
first_bad = ""
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

request = function()
  counter = counter + 1
  return wrk.format("POST", path, headers, prefix .. counter .. suffix)
end

response = function(status, hdrs, body)
  if status == 200 and body ~= nil
     and string.find(body, '"result"', 1, true)
     and string.find(body, needle, 1, true)
     and not string.find(body, '"isError":true', 1, true)
     and not string.find(body, '"error"', 1, true) then
    ok = ok + 1
  else
    bad = bad + 1
    if first_bad == "" then
      first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 160)
    end
  end
end

done = function(summary, latency, requests)
  local tok, tbad, sample = 0, 0, ""
  for _, t in ipairs(threads) do
    tok = tok + t:get("ok")
    tbad = tbad + t:get("bad")
    local fb = t:get("first_bad")
    if sample == "" and fb ~= nil then sample = fb end
  end
  local e = summary.errors
  sample = string.gsub(sample, '[%%c"\\]', " ")
  io.write(string.format(
    'BENCHJSON {"requests":%%d,"ok":%%d,"bad":%%d,"socket_errors":%%d,"status_errors":%%d,"timeouts":%%d,' ..
    '"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,"sample_bad":"%%s"}\n',
    summary.requests, tok, tbad, e.connect + e.read + e.write + e.timeout, e.status, e.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99), sample))
end
"""


def _lua_table(headers: dict[str, str]) -> str:
    items = ", ".join(f"[ [==[{k}]==] ] = [==[{v}]==]" for k, v in headers.items())
    return "{" + items + "}"


def run_wrk(spec: LoadSpec, *, duration: float, connections: int, cpu: int | None) -> dict[str, Any]:
    parts = urlsplit(spec.url)
    script = _LUA % {
        "path": parts.path or "/",
        "headers": _lua_table(spec.headers),
        "prefix": spec.body_prefix,
        "suffix": spec.body_suffix,
        "needle": spec.needle,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        script_path = handle.name
    try:
        base = f"{parts.scheme}://{parts.netloc}"
        command = [
            *_pin(cpu),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            script_path,
            base + (parts.path or "/"),
        ]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    finally:
        os.unlink(script_path)
    line = next((ln for ln in completed.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk produced no result (rc={completed.returncode}): {completed.stderr[-500:]}")
    raw = json.loads(line[len("BENCHJSON ") :])
    seconds = raw["duration_us"] / 1e6
    return {
        "engine": "wrk",
        "requests": raw["requests"],
        "ok": raw["ok"],
        "bad": raw["bad"],
        "socket_errors": raw["socket_errors"],
        "duration_s": seconds,
        "rps": raw["ok"] / seconds if seconds else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "sample_bad": raw["sample_bad"] or None,
    }


# -- h11 fallback ---------------------------------------------------------------------------------


async def _h11_load(spec: LoadSpec, duration: float, connections: int) -> dict[str, Any]:
    import anyio
    import h11

    parts = urlsplit(spec.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = (parts.path or "/").encode()
    base_headers = [("host", parts.netloc), *spec.headers.items()]
    latencies: list[float] = []
    counts = {"ok": 0, "bad": 0, "socket_errors": 0}
    sample: list[str] = []
    next_id = iter(range(1, 1 << 62))
    needle = spec.needle.encode()
    deadline = 0.0

    def is_ok(status: int, body: bytes) -> bool:
        return (
            status == 200
            and b'"result"' in body
            and needle in body
            and b'"isError":true' not in body
            and b'"error"' not in body
        )

    async def worker() -> None:
        while time.perf_counter() < deadline:
            try:
                stream = await anyio.connect_tcp(host, port)
            except OSError:
                counts["socket_errors"] += 1
                await anyio.sleep(0.01)
                continue
            conn = h11.Connection(h11.CLIENT)
            try:
                async with stream:
                    while time.perf_counter() < deadline:
                        body = f"{spec.body_prefix}{next(next_id)}{spec.body_suffix}".encode()
                        headers = [*base_headers, ("content-length", str(len(body)))]
                        started = time.perf_counter()
                        await stream.send(
                            conn.send(h11.Request(method="POST", target=path, headers=headers))
                            + conn.send(h11.Data(data=body))
                            + conn.send(h11.EndOfMessage())
                        )
                        status, chunks = 0, []
                        while True:
                            event = conn.next_event()
                            if event is h11.NEED_DATA:
                                conn.receive_data(await stream.receive(65536))
                                continue
                            if isinstance(event, h11.Response):
                                status = event.status_code
                            elif isinstance(event, h11.Data):
                                chunks.append(bytes(event.data))
                            elif isinstance(event, h11.EndOfMessage):
                                break
                            elif isinstance(event, h11.ConnectionClosed):
                                raise OSError("connection closed mid-response")
                        latency = time.perf_counter() - started
                        if time.perf_counter() > deadline:
                            return  # finished after the bell: not counted, as wrk does
                        data = b"".join(chunks)
                        if is_ok(status, data):
                            counts["ok"] += 1
                        else:
                            counts["bad"] += 1
                            if not sample:
                                sample.append(f"{status} {data[:160]!r}")
                        latencies.append(latency)
                        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                            break
                        conn.start_next_cycle()
            except (OSError, anyio.EndOfStream, anyio.BrokenResourceError, h11.RemoteProtocolError):
                if time.perf_counter() < deadline:
                    counts["socket_errors"] += 1

    started = time.perf_counter()
    deadline = started + duration
    async with anyio.create_task_group() as tg:
        for _ in range(connections):
            tg.start_soon(worker)
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000 if latencies else 0.0

    return {
        "engine": "h11",
        "requests": counts["ok"] + counts["bad"],
        "ok": counts["ok"],
        "bad": counts["bad"],
        "socket_errors": counts["socket_errors"],
        "duration_s": elapsed,
        "rps": counts["ok"] / elapsed,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "sample_bad": sample[0] if sample else None,
    }


def run_h11(spec: LoadSpec, *, duration: float, connections: int, cpu: int | None) -> dict[str, Any]:
    """Run the h11 engine in its own process (pinned like wrk would be)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec.__dict__, handle)
        spec_path = handle.name
    try:
        command = [
            *_pin(cpu),
            sys.executable,
            "-m",
            "benchmarks.load",
            "--engine-child",
            spec_path,
            "--duration",
            str(duration),
            "--connections",
            str(connections),
        ]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    finally:
        os.unlink(spec_path)
    line = next((ln for ln in completed.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"h11 load produced no result (rc={completed.returncode}): {completed.stderr[-500:]}")
    result: dict[str, Any] = json.loads(line[len("BENCHJSON ") :])
    return result


def run_load(spec: LoadSpec, *, engine: str, duration: float, connections: int, cpu: int | None = 1) -> dict[str, Any]:
    if engine == "wrk":
        return run_wrk(spec, duration=duration, connections=connections, cpu=cpu)
    return run_h11(spec, duration=duration, connections=connections, cpu=cpu)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/mcp")
    parser.add_argument("--scenario", choices=SCENARIOS, default="legacy-sse")
    parser.add_argument("--engine", choices=("auto", "wrk", "h11"), default="auto")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--cpu", type=int, default=1, help="core to pin the load generator to (-1: none)")
    parser.add_argument("--engine-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.engine_child:
        import anyio

        with open(args.engine_child) as handle:
            spec = LoadSpec(**json.load(handle))
        result = anyio.run(_h11_load, spec, args.duration, args.connections)
        print("BENCHJSON " + json.dumps(result), flush=True)
        return
    spec, _ = make_spec(args.url, args.scenario)
    try:
        result = run_load(
            spec,
            engine=pick_engine(args.engine),
            duration=args.duration,
            connections=args.connections,
            cpu=None if args.cpu < 0 else args.cpu,
        )
    finally:
        close_session(args.url, spec.headers)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
