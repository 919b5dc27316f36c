"""Load generation: one MCP session opened before the run, then `tools/call` at full speed.

Scenarios:

    legacy-sse, legacy-json  2025-11-25 session (untimed initialize first), `tools/call` in it
    modern-json              2026-07-28 `tools/call`: no session, `_meta` envelope, Mcp-Method/Mcp-Name
    modern-sse               as modern-json, plus `_meta.progressToken`: the echo tool reports progress,
                             so the answer is an SSE stream (progress notification, then the result);
                             a response without the notification counts as bad
    modern-close             as modern-json, with `Connection: close`: a new TCP connection per request
                             (what a proxy that does not keep connections to its upstream sends, e.g.
                             nginx's default HTTP/1.0 to upstreams), so a request pays the server's
                             accept, connection setup and close as well
    session-churn            no session up front: each iteration is initialize (2025-11-25), then
                             notifications/initialized and DELETE with the returned Mcp-Session-Id.
                             `churns` counts completed iterations; sessions still open when the
                             run ends (cut mid-chain) are listed in `open_sessions` for the caller to end

Engines:

* `wrk` (preferred, Debian package `wrk`): one thread, N keep-alive connections, a generated Lua
  script that POSTs `tools/call` with a fresh JSON-RPC id per request (one session's requests must
  not share ids) and checks every response body: HTTP 200, a JSON-RPC `result`, the echoed text,
  no `isError: true`, no JSON-RPC `error`. Latency percentiles come from wrk. session-churn runs
  one connection per thread (`-tN -cN`): wrk's `response()` does not say which connection answered,
  so each thread's Lua state carries exactly one connection's chain.
* `h11` (fallback when `wrk` is not on PATH): N concurrent keep-alive HTTP/1.1 connections on raw
  sockets driven by h11 under anyio, each reading its response (JSON or SSE) to the end before the
  next request. Same checks, same output. Slower than wrk: it can be the bottleneck for the floor.

Both report `requests`, `ok`, `bad` (a completed response that is not a successful tools/call
result), `socket_errors`, `duration_s`, `rps` (successful responses per second), `p50_ms`, `p90_ms`,
`p99_ms`, `mean_ms` (a tail's shape: at a fixed number of connections the mean follows the rate);
session-churn adds `churns`, `churns_per_s` and `open_sessions`.

    python -m benchmarks.load --url http://127.0.0.1:8000/mcp --scenario legacy-sse --duration 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
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
SCENARIOS = ("legacy-sse", "legacy-json", "modern-json", "modern-sse", "modern-close", "session-churn")
ACCEPT = "application/json, text/event-stream"
PROGRESS_TOKEN = "bench"
PROGRESS_NEEDLE = "notifications/progress"
INITIALIZED_BODY = '{"jsonrpc":"2.0","method":"notifications/initialized"}'


@dataclass
class LoadSpec:
    """One timed run: where to POST, with which headers, and the body around the JSON-RPC id."""

    url: str
    headers: dict[str, str]
    body_prefix: str  # body = prefix + str(id) + suffix
    body_suffix: str
    needle: str = PAYLOAD
    stream_needle: str = ""  # modern-sse: the progress notification, which only an SSE answer can carry
    churn: bool = False  # session-churn: initialize, initialized, DELETE per iteration (no body prefix/suffix)
    extra: dict[str, Any] = field(default_factory=dict)


def tools_call_body(modern: bool, *, progress: bool = False) -> tuple[str, str]:
    params: dict[str, Any] = {"name": "echo", "arguments": {"text": PAYLOAD}}
    if modern:
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        if progress:
            params["_meta"]["progressToken"] = PROGRESS_TOKEN
    rest = json.dumps({"method": "tools/call", "params": params}, separators=(",", ":"))
    return '{"jsonrpc":"2.0","id":', "," + rest[1:]


def initialize_body() -> str:
    """A 2025-11-25 `initialize` request (id 0: the first request of its session)."""
    params = {"protocolVersion": LEGACY_VERSION, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
    return json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}, separators=(",", ":"))


def open_session(url: str, scenario: str) -> tuple[dict[str, str], str | None]:
    """Headers for the timed run; legacy: initialize + notifications/initialized first (untimed).

    Returns the headers and the session id (None for the modern era, which has no session, and for
    session-churn, whose iterations open their own).
    """
    headers = {"content-type": "application/json", "accept": ACCEPT}
    if scenario.startswith("modern"):
        headers.update({"mcp-protocol-version": MODERN_VERSION, "mcp-method": "tools/call", "mcp-name": "echo"})
        if scenario == "modern-close":
            headers["connection"] = "close"  # wrk, and the h11 engine, connect anew after each answer
        return headers, None
    headers["mcp-protocol-version"] = LEGACY_VERSION
    if scenario == "session-churn":
        return headers, None
    with httpx.Client(timeout=10) as client:
        response = client.post(url, headers=headers, content=initialize_body())
        if response.status_code != 200 or '"result"' not in response.text:
            raise RuntimeError(f"initialize failed: {response.status_code} {response.text[:200]}")
        session_id = response.headers.get("mcp-session-id")
        if session_id:
            headers["mcp-session-id"] = session_id
        response = client.post(url, headers=headers, content=INITIALIZED_BODY)
        if response.status_code not in (200, 202):
            raise RuntimeError(f"notifications/initialized failed: {response.status_code}")
    return headers, session_id


def close_session(url: str, headers: dict[str, str]) -> None:
    if "mcp-session-id" not in headers:
        return
    with contextlib.suppress(httpx.HTTPError):
        httpx.delete(url, headers=headers, timeout=5)


def close_sessions(url: str, headers: dict[str, str], session_ids: list[str]) -> None:
    """End sessions a churn run left open (its chains cut by the end of the run); 404s are fine."""
    with httpx.Client(timeout=5) as client:
        for session_id in session_ids:
            with contextlib.suppress(httpx.HTTPError):
                client.delete(url, headers={**headers, "mcp-session-id": session_id})


def churn_once(url: str, headers: dict[str, str]) -> str | None:
    """One untimed churn, then a request in the deleted session: None if that got 404, else what went wrong."""
    with httpx.Client(timeout=10) as client:
        response = client.post(url, headers=headers, content=initialize_body())
        session_id = response.headers.get("mcp-session-id")
        if response.status_code != 200 or not session_id:
            return f"initialize answered {response.status_code}"
        with_session = {**headers, "mcp-session-id": session_id}
        response = client.post(url, headers=with_session, content=INITIALIZED_BODY)
        if response.status_code not in (200, 202):
            return f"notifications/initialized answered {response.status_code}"
        response = client.delete(url, headers=with_session)
        if response.status_code != 200:
            return f"DELETE answered {response.status_code}"
        response = client.post(url, headers=with_session, content='{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
        if response.status_code != 404:
            return f"a request in the deleted session answered {response.status_code}, not 404"
    return None


def make_spec(url: str, scenario: str) -> tuple[LoadSpec, str | None]:
    headers, session_id = open_session(url, scenario)
    if scenario == "session-churn":
        return LoadSpec(url, headers, "", "", churn=True), None
    sse = scenario == "modern-sse"
    prefix, suffix = tools_call_body(scenario.startswith("modern"), progress=sse)
    return LoadSpec(url, headers, prefix, suffix, stream_needle=PROGRESS_NEEDLE if sse else ""), session_id


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

# Counters and the report shared by both scripts; `churns`, `sid` and `orphans` stay 0/nil/"" for calls.
_LUA_COMMON = r"""
local path = [==[%(path)s]==]
local headers = %(headers)s
ok = 0
bad = 0
churns = 0
sid = nil
orphans = ""
first_bad = ""
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local function count_bad(what, status, body)
  bad = bad + 1
  if first_bad == "" then
    first_bad = what .. tostring(status) .. " " .. string.sub(body or "", 1, 160)
  end
end

done = function(summary, latency, requests)
  local tok, tbad, tchurns, sample, open = 0, 0, 0, "", {}
  for _, t in ipairs(threads) do
    tok = tok + t:get("ok")
    tbad = tbad + t:get("bad")
    tchurns = tchurns + t:get("churns")
    local fb = t:get("first_bad")
    if sample == "" and fb ~= nil then sample = fb end
    local s = t:get("sid")
    if s ~= nil then table.insert(open, s) end
    for id in string.gmatch(t:get("orphans") or "", "[^,]+") do table.insert(open, id) end
  end
  for i, id in ipairs(open) do open[i] = '"' .. string.gsub(id, "[^%%w%%-_.]", "") .. '"' end
  local e = summary.errors
  sample = string.gsub(sample, '[%%c"\\]', " ")
  io.write(string.format(
    'BENCHJSON {"requests":%%d,"ok":%%d,"bad":%%d,"socket_errors":%%d,"status_errors":%%d,"timeouts":%%d,' ..
    '"duration_us":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"mean_us":%%d,"sample_bad":"%%s","churns":%%d,' ..
    '"open_sessions":[%%s]}\n',
    summary.requests, tok, tbad, e.connect + e.read + e.write + e.timeout, e.status, e.timeout,
    summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, sample,
    tchurns, table.concat(open, ",")))
end
"""

_LUA_CALL = r"""
local prefix = [==[%(prefix)s]==]
local suffix = [==[%(suffix)s]==]
local needle = [==[%(needle)s]==]
local stream_needle = [==[%(stream_needle)s]==]
local counter = 0

request = function()
  counter = counter + 1
  return wrk.format("POST", path, headers, prefix .. counter .. suffix)
end

response = function(status, hdrs, body)
  if status == 200 and body ~= nil
     and string.find(body, '"result"', 1, true)
     and string.find(body, needle, 1, true)
     and (stream_needle == "" or string.find(body, stream_needle, 1, true))
     and not string.find(body, '"isError":true', 1, true)
     and not string.find(body, '"error"', 1, true) then
    ok = ok + 1
  else
    count_bad("", status, body)
  end
end
"""

# One connection per thread (wrk -tN -cN): this thread's state is its connection's chain.
_LUA_CHURN = r"""
local init_body = [==[%(init_body)s]==]
local initialized_body = [==[%(initialized_body)s]==]
local step = 0  -- the next request: 0 initialize, 1 notifications/initialized, 2 DELETE
local session_headers = nil

request = function()
  if step == 1 then
    return wrk.format("POST", path, session_headers, initialized_body)
  elseif step == 2 then
    return wrk.format("DELETE", path, session_headers)
  end
  return wrk.format("POST", path, headers, init_body)
end

local function session_id(hdrs)
  for k, v in pairs(hdrs) do
    if string.lower(k) == "mcp-session-id" then return v end
  end
  return nil
end

response = function(status, hdrs, body)
  local good = false
  if step == 0 then
    local id = session_id(hdrs)
    good = status == 200 and id ~= nil and body ~= nil
      and string.find(body, '"result"', 1, true) ~= nil
      and not string.find(body, '"error"', 1, true)
    if good then
      sid = id
      session_headers = {}
      for k, v in pairs(headers) do session_headers[k] = v end
      session_headers["mcp-session-id"] = id
    end
  elseif step == 1 then
    good = status == 202 or status == 200
  else
    good = status == 200
  end
  if not good then
    count_bad("step " .. step .. ": ", status, body)
    if sid ~= nil then orphans = orphans .. sid .. "," end
    sid = nil
    step = 0
    return
  end
  ok = ok + 1
  if step == 2 then
    churns = churns + 1
    sid = nil
    step = 0
  else
    step = step + 1
  end
end
"""


def _lua_table(headers: dict[str, str]) -> str:
    items = ", ".join(f"[ [==[{k}]==] ] = [==[{v}]==]" for k, v in headers.items())
    return "{" + items + "}"


def run_wrk(spec: LoadSpec, *, duration: float, connections: int, cpu: int | None) -> dict[str, Any]:
    parts = urlsplit(spec.url)
    values = {
        "path": parts.path or "/",
        "headers": _lua_table(spec.headers),
        "prefix": spec.body_prefix,
        "suffix": spec.body_suffix,
        "needle": spec.needle,
        "stream_needle": spec.stream_needle,
        "init_body": initialize_body(),
        "initialized_body": INITIALIZED_BODY,
    }
    script = (_LUA_COMMON + (_LUA_CHURN if spec.churn else _LUA_CALL)) % values
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        script_path = handle.name
    try:
        base = f"{parts.scheme}://{parts.netloc}"
        command = [
            *_pin(cpu),
            "wrk",
            f"-t{connections if spec.churn else 1}",
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
    result = {
        "engine": "wrk",
        "requests": raw["requests"],
        "ok": raw["ok"],
        "bad": raw["bad"],
        "socket_errors": raw["socket_errors"],
        "duration_s": seconds,
        "rps": raw["ok"] / seconds if seconds else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
        "sample_bad": raw["sample_bad"] or None,
    }
    if spec.churn:
        result.update(_churn_fields(raw["churns"], seconds, raw["open_sessions"]))
    return result


def _churn_fields(churns: int, seconds: float, open_sessions: list[str]) -> dict[str, Any]:
    return {"churns": churns, "churns_per_s": churns / seconds if seconds else 0.0, "open_sessions": open_sessions}


# -- h11 fallback ---------------------------------------------------------------------------------


class H11Client:
    """One keep-alive HTTP/1.1 client connection: h11 on an anyio byte stream, one exchange at a time.

    Shared by the h11 engine and `benchmarks.footprint`; reading each response to its end (JSON or
    SSE) before the next request is all an MCP client needs here.
    """

    def __init__(self, stream: Any, netloc: str) -> None:
        import h11

        self._h11 = h11
        self.stream = stream
        self.netloc = netloc
        self.conn = h11.Connection(h11.CLIENT)
        self.reusable = True  # False once either side said the connection closes after this exchange

    @classmethod
    async def connect(cls, url: str) -> H11Client:
        import anyio

        parts = urlsplit(url)
        stream = await anyio.connect_tcp(parts.hostname or "127.0.0.1", parts.port or 80)
        return cls(stream, parts.netloc)

    async def request(
        self, method: str, target: bytes, headers: list[tuple[str, str]], body: bytes = b""
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send one request, read its whole response: status, headers (names lower-case), body."""
        h11, conn = self._h11, self.conn
        head = [("host", self.netloc), *headers, ("content-length", str(len(body)))]
        await self.stream.send(
            conn.send(h11.Request(method=method, target=target, headers=head))
            + conn.send(h11.Data(data=body))
            + conn.send(h11.EndOfMessage())
        )
        status, response_headers, chunks = 0, [], []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.stream.receive(65536))
                continue
            if isinstance(event, h11.Response):
                status, response_headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise OSError("connection closed mid-response")
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            self.reusable = False
        else:
            conn.start_next_cycle()
        return status, response_headers, b"".join(chunks)

    async def aclose(self) -> None:
        await self.stream.aclose()


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    return next((value.decode() for key, value in headers if key == name), None)


async def _h11_load(spec: LoadSpec, duration: float, connections: int) -> dict[str, Any]:
    import anyio
    import h11

    parts = urlsplit(spec.url)
    path = (parts.path or "/").encode()
    base_headers = list(spec.headers.items())
    latencies: list[float] = []
    counts = {"ok": 0, "bad": 0, "socket_errors": 0, "churns": 0}
    sample: list[str] = []
    open_sessions: set[str] = set()
    next_id = iter(range(1, 1 << 62))
    needle = spec.needle.encode()
    stream_needle = spec.stream_needle.encode()
    init_body, initialized_body = initialize_body().encode(), INITIALIZED_BODY.encode()
    deadline = 0.0

    def is_ok(status: int, body: bytes) -> bool:
        return (
            status == 200
            and b'"result"' in body
            and needle in body
            and stream_needle in body
            and b'"isError":true' not in body
            and b'"error"' not in body
        )

    def record(started: float, good: bool, status: int, body: bytes) -> bool:
        """Count one response; False once the run is over (finished after the bell: not counted, as wrk does)."""
        now = time.perf_counter()
        if now > deadline:
            return False
        latencies.append(now - started)
        if good:
            counts["ok"] += 1
        else:
            counts["bad"] += 1
            if not sample:
                sample.append(f"{status} {body[:160]!r}")
        return good

    async def call(client: H11Client) -> bool:
        body = f"{spec.body_prefix}{next(next_id)}{spec.body_suffix}".encode()
        started = time.perf_counter()
        status, _, data = await client.request("POST", path, base_headers, body)
        return record(started, is_ok(status, data), status, data) or time.perf_counter() < deadline

    async def churn(client: H11Client) -> bool:
        """initialize, initialized, DELETE; a session left open (chain cut or failed) stays in `open_sessions`."""
        started = time.perf_counter()
        status, headers, data = await client.request("POST", path, base_headers, init_body)
        session_id = header(headers, b"mcp-session-id")
        if session_id is not None:
            open_sessions.add(session_id)
        good = status == 200 and session_id is not None and b'"result"' in data and b'"error"' not in data
        if not record(started, good, status, data) or session_id is None:
            return time.perf_counter() < deadline
        with_session = [*base_headers, ("mcp-session-id", session_id)]
        started = time.perf_counter()
        status, _, data = await client.request("POST", path, with_session, initialized_body)
        if not record(started, status in (200, 202), status, data):
            return time.perf_counter() < deadline
        started = time.perf_counter()
        status, _, data = await client.request("DELETE", path, with_session)
        if record(started, status == 200, status, data):
            open_sessions.discard(session_id)
            counts["churns"] += 1
        return time.perf_counter() < deadline

    iteration = churn if spec.churn else call

    async def worker() -> None:
        while time.perf_counter() < deadline:
            try:
                client = await H11Client.connect(spec.url)
            except OSError:
                counts["socket_errors"] += 1
                await anyio.sleep(0.01)
                continue
            try:
                async with client.stream:
                    while client.reusable and await iteration(client):
                        pass
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

    result = {
        "engine": "h11",
        "requests": counts["ok"] + counts["bad"],
        "ok": counts["ok"],
        "bad": counts["bad"],
        "socket_errors": counts["socket_errors"],
        "duration_s": elapsed,
        "rps": counts["ok"] / elapsed,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else 0.0,
        "sample_bad": sample[0] if sample else None,
    }
    if spec.churn:
        result.update(_churn_fields(counts["churns"], elapsed, sorted(open_sessions)))
    return result


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
    close_sessions(args.url, spec.headers, result.get("open_sessions", []))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
