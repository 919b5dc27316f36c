"""Throughput benchmark: McpApp vs the SDK's own transport vs a raw-ASGI floor, side by side.

Every ASGI server measured (uvicorn with uvloop and httptools, hypercorn asyncio, hypercorn trio, and
the built-in server on asyncio and Trio, with httptools or h11) runs the variants of `benchmarks.apps`
it needs, all servers at once (a block of `PORTS_PER_SERVER` ports each from `--base-port`), each
variant in its own process pinned to the server core (`taskset -c 0`); the load generator
(`benchmarks.load`: wrk, else h11) runs pinned to the load core. After a warm-up of every cell, each
round measures every cell (scenario, server, implementation) once: per scenario, every server's
implementations one after the other, so the cells a ratio compares are measured close together in
time; every even round runs that order backwards, so a drift linear in time weighs on both sides of
a comparison alike (`round_order`). The machine's speed drifts (on a shared VM, +-25% over tens of
seconds), so every ratio is paired (`benchmarks.paired`): the median over rounds of the two cells'
quotient within each round, not the quotient of their medians.

Scenarios (one JSON-RPC `tools/call` of the `echo` tool per request, 32 connections, kept alive but in
modern-close):

    legacy-sse     2025-11-25 session (opened before the run), answer on SSE       McpApp(server)      vs sdk-sse
    legacy-json    2025-11-25 session, answer as one JSON body                     McpApp(json=True)   vs sdk-json
    modern-json    2026-07-28, no session, `_meta` envelope + Mcp-Method/Mcp-Name  McpApp(json=True)   vs sdk-json
    modern-sse     as modern-json with `_meta.progressToken`: the tool reports      McpApp(server)      vs sdk-sse
                   progress, so the answer is SSE (notification, then result)
    modern-close   as modern-json with `Connection: close`: a new TCP connection   McpApp(json=True)   vs sdk-json
                   per request (accept, setup and close included)
    session-churn  no standing session: initialize (2025-11-25), initialized,      McpApp(server)      vs sdk-sse
                   DELETE, repeated; figures are churns/s and CPU µs per churn

The floor runs every scenario (for session-churn it answers each step with its fixed body and a fixed
session id: the ceiling of the load generator's three-step chain). After each session-churn run the
harness ends the sessions the run left open, then checks that sessions really end: a few untimed
churns must each get 404 for the deleted session and leave the server's live session count unchanged
(read from the process: `benchmarks.apps` reports it on SIGUSR1); at most one session per connection
may be left by initializes cut at the end of the run. A failed check makes the cell ERRORS.

Every response is checked (see `benchmarks.load`); a cell whose runs had any bad response or socket
error is reported as ERRORS, never as throughput. Reported per cell: median req/s over the rounds
(min-max), median p50/p99 latency, server CPU time per request (utime+stime of the server process / ok
responses); McpApp/SDK and McpApp/floor are paired ratios.

Other jobs on the machine distort throughput. Each run measures the CPU time other processes took on
the server's core, and on the load core ("other load", % of one core; the load core counts only when
the load generator had no headroom left there). Before a run the harness waits (up to
`--quiet-timeout` s) for the cores to go quiet; a run with more than `--max-other-load` % is measured
again (`--retries`) and the least disturbed attempt is kept (counted in `contended_runs` if still over).
Server CPU µs per request is the figure least affected by contention.

SDK server kinds: every transport serves the same SDK server, either the low-level `Server` or an
`MCPServer` with a decorated `echo` tool (the `-mcpserver` variants of `benchmarks.apps`).
`--mcp-server lowlevel|mcpserver|both` (default both) picks which; each kind is its own set of
implementations (`mcpapp`, `sdk`, `mcpapp-mcpserver`, `sdk-mcpserver`; the floor serves no SDK
server), and the table has one row per server, scenario and kind. McpApp runs on every server;
`--sdk-servers` and `--floor-servers` (default all) say where the SDK's transport and the floor run
too, so a run comparing servers need not pay for every baseline everywhere.

Cross-server ratios and targets (`benchmarks.report`): after the throughput table, a table of the
targets of issue 14 from the same run, McpApp's req/s on one server over its req/s on another
(built-in Trio vs hypercorn Trio and vs uvicorn, built-in Trio with h11 vs hypercorn Trio,
built-in asyncio vs uvicorn; paired per round), its p99 on the built-in server vs uvicorn's (the
cells' medians), and McpApp over the SDK on uvicorn (paired), each met / not met / not measured.
`--docs` writes all tables into docs/performance.md (between `<!-- bench:begin -->` and
`<!-- bench:end -->`) and an SVG chart of the (paired) ratios to docs/img/bench.svg.
`--conn-footprint N` adds RSS per idle keep-alive connection and per open SSE stream on each server
(`benchmarks.footprint.run_connection_footprint`).

    python -m benchmarks.run [--servers uvicorn,hypercorn-trio,builtin,builtin-trio] [--duration 5] [--rounds 3]
        [--scenarios legacy-sse,...|none] [--footprint [--footprint-sessions 1000,10000] [--footprint-tenants 1000]]
        [--mcp-server lowlevel|mcpserver|both] [--sdk-servers all|none|S,...] [--floor-servers all|none|S,...]
        [--conn-footprint N] [--fleet [--count-sessions 50] [--count-requests 200]] [--docs]

Issue 14's acceptance run (about 9 minutes on a quiet 2-core machine):

    python -m benchmarks.run --servers builtin-trio,builtin-h11-trio,hypercorn-trio,uvicorn,builtin,builtin-uvloop \\
        --scenarios legacy-sse,legacy-json,modern-json --mcp-server both --sdk-servers uvicorn \\
        --floor-servers none --duration 2.5 --rounds 3 --warmup 0.5 --retries 1 --conn-footprint 1000 --docs

`--fleet` adds the fleet benchmark of issue 13 (`benchmarks.fleet`): the harness starts its own
redis-server (Debian's package, on PATH) and runs legacy-json on uvicorn with McpApp on Redis and
in-memory (one worker each, pinned), and on Redis with one and two worker processes (unpinned); it
counts Redis round trips per request for held and adopted sessions. Its figures and targets go into
the "Fleet (Redis)" section of docs/performance.md (`--docs`, between `<!-- bench-fleet:begin -->`
and `<!-- bench-fleet:end -->`). Issue 13's run (about 2.5 minutes on a quiet 2-core machine):

    python -m benchmarks.run --scenarios none --fleet --duration 5 --rounds 5 --warmup 1 --docs

All servers' processes are up for the whole throughput run (the acceptance run above: 24 processes,
the defaults with every baseline everywhere: 63; about 75 MB RSS each), idle but for the cell measured.

`--footprint` also measures memory (`benchmarks.footprint`: RSS per idle legacy session at each of
`--footprint-sessions`, McpApp vs SDK; RSS per tenant and the time to open `--footprint-tenants`
tenants) on the same servers, opening `--connections` sessions at a time; `--scenarios none` skips
the throughput runs. The defaults (7 servers, 5 scenarios, both kinds, 3 rounds of 5 s) take well
over an hour; `--footprint` adds about six minutes per three servers.

Results: a Markdown table on stdout, everything in `benchmarks/results/latest.json` (`summary`: per
cell; `runs`: every run with its `round`, which the paired ratios read; `benchmarks.report` renders a
saved file again), written after each round, so a cut run keeps the rounds it finished.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from .apps import MCPSERVER_SUFFIX, SERVER_KINDS, SERVERS
from .load import SCENARIOS, churn_once, close_session, close_sessions, make_spec, pick_engine, run_load
from .paired import cell_ratio

BASE_IMPLS = ("mcpapp", "sdk", "floor")
# An implementation serving the MCPServer is its low-level name + MCPSERVER_SUFFIX ("mcpapp-mcpserver").
IMPLS = (*BASE_IMPLS, *(impl + MCPSERVER_SUFFIX for impl in BASE_IMPLS if impl != "floor"))
VARIANT_FOR = {
    ("mcpapp", "legacy-sse"): "mcpapp-sse",
    ("mcpapp", "legacy-json"): "mcpapp-json",
    ("mcpapp", "modern-json"): "mcpapp-json",
    ("sdk", "legacy-sse"): "sdk-sse",
    ("sdk", "legacy-json"): "sdk-json",
    ("sdk", "modern-json"): "sdk-json",
    ("floor", "legacy-sse"): "floor",
    ("floor", "legacy-json"): "floor",
    ("floor", "modern-json"): "floor",
    ("mcpapp", "modern-sse"): "mcpapp-sse",
    ("sdk", "modern-sse"): "sdk-sse",
    ("floor", "modern-sse"): "floor",
    ("mcpapp", "modern-close"): "mcpapp-json",
    ("sdk", "modern-close"): "sdk-json",
    ("floor", "modern-close"): "floor",
    ("mcpapp", "session-churn"): "mcpapp-sse",
    ("sdk", "session-churn"): "sdk-sse",
    ("floor", "session-churn"): "floor",
}
NOTES = {
    "modern-sse": "modern-sse: the request carries `_meta.progressToken` and the echo tool reports progress once,"
    " so both transports (McpApp(server) and the SDK's streamable_http_app(), each in SSE mode) answer with an"
    " SSE stream: a progress notification, then the result; every response is checked for both. Without a"
    " notification both would answer a quick tool with plain JSON (they commit to SSE only when the handler"
    " streams or outlives the keep-alive interval).",
    "modern-close": "modern-close: each request comes on a new TCP connection (`Connection: close`), so a"
    " request also pays for the server's accept, its connection setup and its close; the 32 connections are 32"
    " clients, each opening its next connection once its answer is in.",
    "session-churn": "session-churn: rates are completed churns/s (initialize, notifications/initialized, DELETE:"
    " three requests each; req/s in the JSON) and the CPU column is µs per churn. wrk runs one connection per"
    " thread here; the floor's figure is the load generator's ceiling. Sessions are checked to end (404 after"
    " DELETE, live session count unchanged).",
}
VERIFY_CHURNS = 10
# Ports, from --base-port: a block per server for the throughput runs (all servers are up at once),
# then the later runs past them (the throughput ports' sockets may linger).
PORTS_PER_SERVER = 10  # a server runs at most 9 variants: 5, and 4 of them with the MCPServer
FOOTPRINT_PORT_OFFSET = PORTS_PER_SERVER * len(SERVERS) + 10
CONNECTIONS_PORT_OFFSET = FOOTPRINT_PORT_OFFSET + 10
FLEET_PORT_OFFSET = CONNECTIONS_PORT_OFFSET + 20  # benchmarks.fleet uses a port per cell (4)


def impl_name(impl: str, kind: str) -> str:
    """`mcpapp` served with the `kind` server: `mcpapp` (low-level) or `mcpapp-mcpserver`."""
    return impl if kind == "lowlevel" or impl == "floor" else impl + MCPSERVER_SUFFIX


def variant_for(impl: str, scenario: str) -> str:
    """The `benchmarks.apps` variant that serves `impl` (with or without the MCPServer suffix) in `scenario`."""
    if impl.endswith(MCPSERVER_SUFFIX):
        return VARIANT_FOR[(impl[: -len(MCPSERVER_SUFFIX)], scenario)] + MCPSERVER_SUFFIX
    return VARIANT_FOR[(impl, scenario)]


def impls_for(server: str, kinds: Sequence[str], sdk_servers: Sequence[str], floor_servers: Sequence[str]) -> list[str]:
    """What runs on `server`: McpApp with every kind; the SDK and the floor only where asked for."""
    chosen = [impl_name("mcpapp", kind) for kind in kinds]
    if server in sdk_servers:
        chosen += [impl_name("sdk", kind) for kind in kinds]
    if server in floor_servers:
        chosen.append("floor")
    return chosen


SERVER_LABEL = {
    "uvicorn": "uvicorn",
    "hypercorn": "hypercorn asyncio",
    "hypercorn-trio": "hypercorn trio",
    "builtin": "built-in asyncio",
    "builtin-uvloop": "built-in uvloop",
    "builtin-trio": "built-in trio",
    "builtin-h11": "built-in asyncio (h11)",
    "builtin-h11-trio": "built-in trio (h11)",
}
ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None and cpu >= 0 and shutil.which("taskset") else []


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _busy_jiffies(cpus: list[int]) -> int:
    """Jiffies these CPUs spent running tasks (user, nice, system) or stolen by the hypervisor (steal).

    Interrupt and softirq time is left out: loopback network processing lands there, on the
    benchmark's own cores, and belongs to no process, so it would read as "other load".
    """
    busy = 0
    with open("/proc/stat") as handle:
        for line in handle:
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(v) for v in values[:8])
                busy += user + nice + system + steal
    return busy


def wait_quiet(cores: list[int], threshold_pct: float, timeout: float) -> float:
    """Wait (at most `timeout` s) until other processes take under `threshold_pct` % of the cores.

    Returns the last reading.
    """
    deadline = time.monotonic() + timeout
    while True:
        before = _busy_jiffies(cores)
        time.sleep(1.0)
        load = (_busy_jiffies(cores) - before) / CLK_TCK * 100
        if load < threshold_pct or time.monotonic() >= deadline:
            return load


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start within {timeout}s")


class ServerSet:
    """Variant processes of one ASGI server (by default the five of the throughput runs), pinned to the server core.

    `app_args` go to every `benchmarks.apps` process (e.g. `--max-sessions` for footprint runs).
    """

    def __init__(
        self,
        server: str,
        base_port: int,
        cpu: int | None,
        *,
        gc_freeze: bool = False,
        log_dir: Path | None = None,
        variants: Sequence[str] | None = None,
        app_args: Sequence[str] = (),
    ) -> None:
        self.server = server
        self.cpu = cpu
        self.gc_freeze = gc_freeze
        self.log_dir = log_dir
        self.app_args = list(app_args)
        self.logs: dict[str, Path] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        for offset, variant in enumerate(variants or sorted(set(VARIANT_FOR.values()))):
            self.ports[variant] = base_port + offset

    def __enter__(self) -> ServerSet:
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        try:
            for variant, port in self.ports.items():
                command = [
                    *_pin(self.cpu),
                    sys.executable,
                    "-m",
                    "benchmarks.apps",
                    variant,
                    "--server",
                    self.server,
                    "--port",
                    str(port),
                    *(["--gc-freeze"] if self.gc_freeze else []),
                    *self.app_args,
                ]
                log_dir = self.log_dir or Path(tempfile.gettempdir())
                self.logs[variant] = log_dir / f"bench-{self.server}-{variant}.log"
                with open(self.logs[variant], "wb") as log:
                    self.procs[variant] = subprocess.Popen(
                        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log
                    )
            for variant, port in self.ports.items():
                _wait_port(port, self.procs[variant], self.logs[variant])
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def url(self, variant: str) -> str:
        return f"http://127.0.0.1:{self.ports[variant]}/mcp"

    def pid(self, variant: str) -> int:
        proc = self.procs[variant]
        if proc.poll() is not None:
            tail = self.logs[variant].read_text()[-2000:] if variant in self.logs else ""
            raise RuntimeError(f"{self.server} {variant} died (exit {proc.returncode}):\n{tail}")
        return proc.pid

    def stats(self, variant: str, timeout: float = 30.0) -> dict[str, Any]:
        """The process's own report (SIGUSR1, see `benchmarks.apps`): it collects garbage, then counts live sessions."""
        log = self.logs[variant]
        offset = log.stat().st_size
        os.kill(self.pid(variant), signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(log, "rb") as handle:
                handle.seek(offset)
                complete = handle.read().decode(errors="replace").split("\n")[:-1]
            for line in complete:
                if line.startswith("BENCHSTATS "):
                    report: dict[str, Any] = json.loads(line[len("BENCHSTATS ") :])
                    return report
            time.sleep(0.05)
        raise RuntimeError(f"{self.server} {variant} did not report its stats within {timeout}s")


def measure(
    servers: ServerSet,
    impl: str,
    scenario: str,
    *,
    engine: str,
    duration: float,
    connections: int,
    load_cpu: int | None,
) -> dict[str, Any]:
    variant = variant_for(impl, scenario)
    url = servers.url(variant)
    pid = servers.pid(variant)
    spec, _ = make_spec(url, scenario)
    live_before = servers.stats(variant)["live_sessions"] if spec.churn and impl != "floor" else None
    pinned = servers.cpu is not None and load_cpu is not None and servers.cpu != load_cpu
    all_cores = list(range(os.cpu_count() or 1))
    server_cores = [servers.cpu] if pinned else all_cores
    load_cores = [load_cpu] if pinned else []
    try:
        cpu_before, load_before = _cpu_seconds(pid), _children_cpu()
        busy_before = _busy_jiffies(server_cores), _busy_jiffies(load_cores)
        result = run_load(spec, engine=engine, duration=duration, connections=connections, cpu=load_cpu)
        cpu_after, load_after = _cpu_seconds(pid), _children_cpu()
        busy_after = _busy_jiffies(server_cores), _busy_jiffies(load_cores)
    finally:
        close_session(url, spec.headers)
    result["server_cpu_s"] = cpu_after - cpu_before
    result["load_cpu_s"] = load_after - load_before
    # CPU time other processes took during the run (other jobs on the machine), in % of one core: on the
    # server's core it takes throughput away from the server; on the load core it matters only once the
    # load generator has no headroom left. Unpinned, both are counted together as "server core".
    seconds = result["duration_s"] or 1.0
    server_busy = (busy_after[0] - busy_before[0]) / CLK_TCK
    load_busy = (busy_after[1] - busy_before[1]) / CLK_TCK
    if pinned:
        other_server = server_busy - result["server_cpu_s"]
        other_load = load_busy - result["load_cpu_s"]
    else:
        other_server, other_load = server_busy - result["server_cpu_s"] - result["load_cpu_s"], 0.0
    result["other_on_server_core_pct"] = max(0.0, other_server / seconds * 100)
    result["other_on_load_core_pct"] = max(0.0, other_load / seconds * 100)
    result["load_core_busy_pct"] = load_busy / seconds * 100 if pinned else None
    # What decides whether a run counts: others on the server core, or a load core with no headroom left.
    headroom_gone = pinned and result["load_core_busy_pct"] > 95 and result["other_on_load_core_pct"] > 5
    result["foreign_cpu_pct"] = result["other_on_server_core_pct"] + (
        result["other_on_load_core_pct"] if headroom_gone else 0.0
    )
    result["cpu_us_per_req"] = (cpu_after - cpu_before) / result["ok"] * 1e6 if result["ok"] else None
    result["variant"] = variant
    if spec.churn:
        churns = result["churns"]
        result["cpu_us_per_churn"] = (cpu_after - cpu_before) / churns * 1e6 if churns else None
        left_open = result.pop("open_sessions")
        result["open_sessions_at_end"] = len(left_open)
        if live_before is not None:
            close_sessions(url, spec.headers, left_open)
            check_sessions_end(servers, variant, url, spec.headers, result, live_before, connections)
    return result


def check_sessions_end(
    servers: ServerSet,
    variant: str,
    url: str,
    headers: dict[str, str],
    result: dict[str, Any],
    live_before: int,
    connections: int,
) -> None:
    """After a churn run: do sessions really end? A failure counts as a bad response (the cell is ERRORS).

    An initialize still in flight when the run ended creates a session the client never heard of
    (wrk is gone); there can be one per connection, and they idle out. Beyond that, the live count
    must not grow, and `VERIFY_CHURNS` untimed churns must each end (404 afterwards, count unchanged).
    """
    time.sleep(0.3)  # let initializes cut at the bell finish on the server
    live_after_run = servers.stats(variant)["live_sessions"]
    problems = [problem for problem in (churn_once(url, headers) for _ in range(VERIFY_CHURNS)) if problem]
    live_after_check = servers.stats(variant)["live_sessions"]
    result["sessions_left_by_run"] = live_after_run - live_before
    result["sessions_left_by_check"] = live_after_check - live_after_run
    if live_after_run - live_before > connections:
        problems.append(f"{live_after_run - live_before} sessions still live after the run (≤ {connections} expected)")
    if live_after_check != live_after_run:
        problems.append(f"{live_after_check - live_after_run} of {VERIFY_CHURNS} deleted sessions still live")
    if problems:
        result["bad"] += 1
        result["sample_bad"] = result.get("sample_bad") or "; ".join(problems)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    failed = [r for r in runs if r["bad"] or r["socket_errors"] or not r["ok"]]
    if failed:
        return {
            "status": "errors",
            "bad": sum(r["bad"] for r in runs),
            "socket_errors": sum(r["socket_errors"] for r in runs),
            "sample_bad": next((r["sample_bad"] for r in failed if r.get("sample_bad")), None),
        }
    rps = [r["rps"] for r in runs]
    cpu = [r["cpu_us_per_req"] for r in runs if r["cpu_us_per_req"] is not None]
    churn: dict[str, Any] = {}
    if runs and all("churns_per_s" in r for r in runs):
        rates = [r["churns_per_s"] for r in runs]
        per_churn = [r["cpu_us_per_churn"] for r in runs if r["cpu_us_per_churn"] is not None]
        churn = {
            "churns_per_s": statistics.median(rates),
            "churns_per_s_min": min(rates),
            "churns_per_s_max": max(rates),
            "cpu_us_per_churn": statistics.median(per_churn) if per_churn else None,
            "churns": sum(r["churns"] for r in runs),
        }
    return {
        **churn,
        "status": "ok",
        "rps": statistics.median(rps),
        "rps_min": min(rps),
        "rps_max": max(rps),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "cpu_us_per_req": statistics.median(cpu) if cpu else None,
        "requests": sum(r["requests"] for r in runs),
        "foreign_cpu_pct_max": max((r.get("foreign_cpu_pct") or 0.0) for r in runs),
        "contended_runs": sum(1 for r in runs if r.get("contended")),
    }


def _rate_key(cell: dict[str, Any]) -> str:
    """What the table shows as the rate: churns/s for session-churn, else req/s."""
    return "churns_per_s" if "churns_per_s" in cell else "rps"


MISSING: dict[str, Any] = {"status": "absent"}  # a cell this run did not measure


def _fmt_rps(cell: dict[str, Any]) -> str:
    if cell["status"] == "absent":
        return "-"
    if cell["status"] != "ok":
        return f"ERRORS ({cell['bad']} bad, {cell['socket_errors']} socket)"
    key = _rate_key(cell)
    return f"{cell[key]:,.0f} ({cell[key + '_min']:,.0f}-{cell[key + '_max']:,.0f})".replace(",", " ")


def _fmt_lat(cell: dict[str, Any]) -> str:
    return f"{cell['p50_ms']:.1f} / {cell['p99_ms']:.1f}" if cell["status"] == "ok" else "-"


def _fmt_cpu(cell: dict[str, Any]) -> str:
    if cell["status"] != "ok":
        return "-"
    value = cell.get("cpu_us_per_churn") if "churns_per_s" in cell else cell.get("cpu_us_per_req")
    return f"{value:,.0f}".replace(",", " ") if value else "-"


def _fmt_foreign(*cells: dict[str, Any]) -> str:
    values = [c["foreign_cpu_pct_max"] for c in cells if c["status"] == "ok"]
    return f"{max(values):.0f}" if values else "-"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


KIND_LABEL = {"lowlevel": "Server", "mcpserver": "MCPServer"}


def table(summary: dict[str, dict[str, dict[str, dict[str, Any]]]], runs: dict[str, Any] | None = None) -> str:
    """One row per server, scenario and SDK server kind (low-level `Server`, `MCPServer`); unmeasured cells "-".

    The McpApp/SDK and McpApp/floor columns are paired per round from `runs` (`benchmarks.paired`).
    """
    lines = [
        "| server | scenario | SDK server | McpApp req/s | SDK req/s | floor req/s | McpApp/SDK | McpApp/floor "
        "| McpApp p50/p99 ms | SDK p50/p99 ms | CPU µs/req McpApp / SDK / floor | other load % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for server, scenarios in summary.items():
        for scenario, cells in scenarios.items():
            for kind in SERVER_KINDS:
                mcpapp, sdk = impl_name("mcpapp", kind), impl_name("sdk", kind)
                m, s, f = cells.get(mcpapp, MISSING), cells.get(sdk, MISSING), cells.get("floor", MISSING)
                if m is MISSING and s is MISSING:
                    continue
                over_sdk = cell_ratio(summary, runs, (server, scenario, mcpapp), (server, scenario, sdk))
                over_floor = cell_ratio(summary, runs, (server, scenario, mcpapp), (server, scenario, "floor"))
                lines.append(
                    f"| {SERVER_LABEL[server]} | {scenario} | {KIND_LABEL[kind]} | {_fmt_rps(m)} | {_fmt_rps(s)} "
                    f"| {_fmt_rps(f)} | {_fmt_ratio(over_sdk)} | {_fmt_ratio(over_floor)} "
                    f"| {_fmt_lat(m)} | {_fmt_lat(s)} "
                    f"| {_fmt_cpu(m)} / {_fmt_cpu(s)} / {_fmt_cpu(f)} | {_fmt_foreign(m, s, f)} |"
                )
    measured = {scenario for scenarios in summary.values() for scenario in scenarios}
    notes = [f"- {text}" for scenario, text in NOTES.items() if scenario in measured]
    return "\n".join([*lines, "", *notes] if notes else lines)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, str | None]:
    dists = (
        "mcp",
        "asgi-mcp",
        "starlette",
        "sse-starlette",
        "uvicorn",
        "hypercorn",
        "trio",
        "anyio",
        "h11",
        "uvloop",
        "httptools",
    )
    return {dist: _version(dist) for dist in dists}


def environment(engine: str, args: argparse.Namespace) -> dict[str, Any]:
    versions = package_versions()
    wrk_version = None
    if engine == "wrk":
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        wrk_version = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "engine": engine,
        "wrk": wrk_version,
        "versions": versions,
        "uvicorn_loop_http": "uvloop/httptools"
        if versions["uvloop"] and versions["httptools"]
        else "asyncio/h11"
        if not versions["uvloop"] and not versions["httptools"]
        else "auto (partial)",
        "duration_s": args.duration,
        "rounds": args.rounds,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "server_cpu": args.server_cpu,
        "load_cpu": args.load_cpu,
        "gc_freeze": args.gc_freeze,
        "max_other_load_pct": args.max_other_load,
        "footprint": {"sessions": args.footprint_sessions, "tenants": args.footprint_tenants}
        if args.footprint
        else None,
        "conn_footprint": args.conn_footprint,
        "mcp_server": args.mcp_server,
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:]),
        "code": getattr(args, "code_at_start", None) or code_fingerprint(),
    }


def code_fingerprint() -> dict[str, Any]:
    """Which asgi_mcp was measured: HEAD, whether the tree was dirty, and a hash of the package sources."""
    import hashlib

    def git(*argv: str) -> str:
        out = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip()

    digest = hashlib.sha256()
    for path in sorted((ROOT / "asgi_mcp").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return {
        "head": git("rev-parse", "HEAD") or None,
        "asgi_mcp_dirty": bool(git("status", "--porcelain", "--", "asgi_mcp")),
        "asgi_mcp_sha256": digest.hexdigest()[:16],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"comma-separated subset of {', '.join(SERVERS)}")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {', '.join(SCENARIOS)}; none: no throughput runs (with --footprint)",
    )
    parser.add_argument(
        "--mcp-server",
        choices=("lowlevel", "mcpserver", "both"),
        default="both",
        help="the SDK server the transports serve: the low-level Server, an MCPServer with a decorated tool, or both",
    )
    parser.add_argument(
        "--sdk-servers", default="all", help="servers on which the SDK's own transport runs too (all, none or a list)"
    )
    parser.add_argument("--floor-servers", default="all", help="servers on which the raw-ASGI floor runs too")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per timed run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed seconds per cell before round 1 (0: none)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--engine", choices=("auto", "wrk", "h11"), default="auto")
    parser.add_argument("--server-cpu", type=int, default=0, help="core for the servers (-1: no pinning)")
    parser.add_argument("--load-cpu", type=int, default=1, help="core for the load generator (-1: no pinning)")
    parser.add_argument("--base-port", type=int, default=8300)
    parser.add_argument(
        "--max-other-load",
        type=float,
        default=15.0,
        help="%% of a core other processes may take on the benchmark cores during a run before it is"
        " measured again (0: never check)",
    )
    parser.add_argument("--retries", type=int, default=3, help="re-measurements of a contended run")
    parser.add_argument("--quiet-timeout", type=float, default=20.0, help="seconds to wait for the machine to go quiet")
    parser.add_argument("--gc-freeze", action="store_true", help="servers call gc.freeze() after building the app")
    parser.add_argument(
        "--footprint",
        action="store_true",
        help="also measure memory (benchmarks.footprint): RSS per idle session, McpApp vs SDK, and per tenant",
    )
    parser.add_argument(
        "--footprint-sessions", default="1000,10000", help="comma-separated idle session counts (--footprint)"
    )
    parser.add_argument("--footprint-tenants", type=int, default=1000, help="tenants to open, 0: none (--footprint)")
    parser.add_argument(
        "--conn-footprint",
        type=int,
        default=0,
        metavar="N",
        help="also measure RSS per idle keep-alive connection and per open SSE stream over N of each (0: skip)",
    )
    parser.add_argument(
        "--fleet",
        action="store_true",
        help="also the fleet benchmark (benchmarks.fleet): McpApp on a redis-server of its own, one uvicorn worker"
        " and two, vs in-memory; Redis round trips per request, held and adopted",
    )
    parser.add_argument("--count-sessions", type=int, default=50, help="adopted sessions counted (--fleet)")
    parser.add_argument("--count-requests", type=int, default=200, help="requests counted per count (--fleet)")
    parser.add_argument(
        "--docs",
        action="store_true",
        help="write the tables into docs/performance.md (between its bench markers), the chart to docs/img/bench.svg",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json")
    args = parser.parse_args(argv)

    servers = [s for s in args.servers.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s and s != "none"]
    for name in servers:
        if name not in SERVERS:
            parser.error(f"unknown server {name!r}")
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}")
    if not scenarios and not args.footprint and not args.conn_footprint and not args.fleet:
        parser.error("nothing to measure: no scenarios, no --footprint, no --conn-footprint, no --fleet")
    if args.fleet and shutil.which("redis-server") is None:
        parser.error("--fleet starts a redis-server of its own: none on PATH (Debian: apt-get install redis-server)")
    if args.fleet and importlib.util.find_spec("coredis") is None:
        parser.error("--fleet needs the redis extra: pip install 'asgi-mcp[redis]'")
    kinds = list(SERVER_KINDS) if args.mcp_server == "both" else [args.mcp_server]
    sdk_servers = _server_list(parser, args.sdk_servers, servers)
    floor_servers = _server_list(parser, args.floor_servers, servers)
    if (os.cpu_count() or 1) < 2 and (args.server_cpu >= 0 or args.load_cpu >= 0):
        print("warning: fewer than 2 CPUs; server and load share a core", file=sys.stderr)
    engine = pick_engine(args.engine)
    server_cpu = None if args.server_cpu < 0 else args.server_cpu
    load_cpu = None if args.load_cpu < 0 else args.load_cpu
    print(
        f"engine={engine} servers={servers} scenarios={scenarios} duration={args.duration}s "
        f"rounds={args.rounds} connections={args.connections}",
        file=sys.stderr,
    )

    impls_by_server = {server: impls_for(server, kinds, sdk_servers, floor_servers) for server in servers}
    started = time.monotonic()
    args.code_at_start = code_fingerprint()  # the servers import asgi_mcp now; the tree may change later
    others = args.footprint or args.conn_footprint or args.fleet
    raw: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    if scenarios:
        raw = run_throughput(
            args,
            scenarios,
            impls_by_server,
            engine=engine,
            server_cpu=server_cpu,
            load_cpu=load_cpu,
            written=lambda raw_, last: write_results(raw_, args, engine, started, complete=last and not others),
        )

    fleet: dict[str, Any] | None = None
    if args.fleet:
        from .fleet import Rounds, run_fleet

        plan = Rounds(
            engine=engine,
            duration=args.duration,
            rounds=args.rounds,
            warmup=args.warmup,
            connections=args.connections,
            load_cpu=load_cpu,
            max_other_load=args.max_other_load,
            quiet_timeout=args.quiet_timeout,
        )
        fleet = run_fleet(
            plan,
            base_port=args.base_port + FLEET_PORT_OFFSET,
            server_cpu=server_cpu,
            count_sessions=args.count_sessions,
            count_requests=args.count_requests,
        )
        last = not args.footprint and not args.conn_footprint
        write_results(raw, args, engine, started, complete=last, fleet=fleet)

    footprint: dict[str, Any] | None = None
    if args.footprint:
        from .footprint import run_footprint

        footprint = run_footprint(
            servers,
            sizes=tuple(int(n) for n in args.footprint_sessions.split(",") if n),
            tenants=args.footprint_tenants,
            concurrency=args.connections,
            base_port=args.base_port + FOOTPRINT_PORT_OFFSET,
            server_cpu=server_cpu,
            load_cpu=load_cpu,
        )
        write_results(raw, args, engine, started, complete=not args.conn_footprint, footprint=footprint, fleet=fleet)
    if args.conn_footprint:
        from .footprint import run_connection_footprint

        connections = run_connection_footprint(
            servers,
            count=args.conn_footprint,
            base_port=args.base_port + CONNECTIONS_PORT_OFFSET,
            server_cpu=server_cpu,
            load_cpu=load_cpu,
        )
        write_results(
            raw, args, engine, started, complete=True, footprint=footprint, connections=connections, fleet=fleet
        )


def round_order(
    scenarios: Sequence[str], impls_by_server: dict[str, list[str]], round_no: int
) -> list[tuple[str, str, str]]:
    """The cells (scenario, server, implementation) of one round, in the order they are measured.

    Per scenario, every server's implementations one after the other, so the cells a ratio compares
    (the same scenario on two servers, McpApp and the SDK on one) are measured close together; every
    even round runs the whole order backwards, so a drift that is linear in time weighs on both
    cells of a comparison alike over two rounds.
    """
    cells = [(sc, server, impl) for sc in scenarios for server, impls in impls_by_server.items() for impl in impls]
    return cells if round_no % 2 else cells[::-1]


def run_throughput(
    args: argparse.Namespace,
    scenarios: Sequence[str],
    impls_by_server: dict[str, list[str]],
    *,
    engine: str,
    server_cpu: int | None,
    load_cpu: int | None,
    written: Callable[[dict[str, dict[str, dict[str, list[dict[str, Any]]]]], bool], None],
) -> dict[str, dict[str, dict[str, list[dict[str, Any]]]]]:
    """Every server's variant processes up at once (a port block each), warm-up, then the rounds.

    Each round measures every cell once (`round_order`); `written(raw, last_round)` is called after
    each round, so a cut run keeps the rounds it finished.
    """
    raw: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {
        server: {sc: {impl: [] for impl in impls} for sc in scenarios} for server, impls in impls_by_server.items()
    }
    bench_cores = [server_cpu] if server_cpu is not None else list(range(os.cpu_count() or 1))
    with contextlib.ExitStack() as stack:
        sets: dict[str, ServerSet] = {}
        for server, impls in impls_by_server.items():
            variants = sorted({variant_for(impl, sc) for impl in impls for sc in scenarios})
            port = args.base_port + PORTS_PER_SERVER * SERVERS.index(server)
            sets[server] = stack.enter_context(
                ServerSet(server, port, server_cpu, gc_freeze=args.gc_freeze, variants=variants)
            )
        if args.warmup > 0:
            for scenario, server, impl in round_order(scenarios, impls_by_server, 1):
                measure(
                    sets[server],
                    impl,
                    scenario,
                    engine=engine,
                    duration=args.warmup,
                    connections=args.connections,
                    load_cpu=load_cpu,
                )
        for round_no in range(1, args.rounds + 1):
            for scenario, server, impl in round_order(scenarios, impls_by_server, round_no):
                result = measure_least_disturbed(
                    args, bench_cores, sets[server], impl, scenario, engine=engine, load_cpu=load_cpu
                )
                result["round"] = round_no
                raw[server][scenario][impl].append(result)
                status = "ok" if not (result["bad"] or result["socket_errors"]) else "ERRORS"
                churns = f" ({result['churns_per_s']:.0f} churns/s)" if "churns_per_s" in result else ""
                print(
                    f"  {SERVER_LABEL[server]:17} {scenario:13} {impl:16} round {round_no}: "
                    f"{result['rps']:8.0f} req/s{churns}  p50 {result['p50_ms']:6.1f} ms  "
                    f"p99 {result['p99_ms']:6.1f} ms  "
                    f"other load {result['foreign_cpu_pct'] or 0:3.0f}%  {status}",
                    file=sys.stderr,
                    flush=True,
                )
            written(raw, round_no == args.rounds)
    return raw


def measure_least_disturbed(
    args: argparse.Namespace,
    bench_cores: list[int],
    servers: ServerSet,
    impl: str,
    scenario: str,
    *,
    engine: str,
    load_cpu: int | None,
) -> dict[str, Any]:
    """One timed run of a cell, measured again (up to `--retries`) while other load is over `--max-other-load`.

    Returns the least disturbed attempt (`contended` if it was still over).
    """
    best: dict[str, Any] | None = None
    for attempt in range(args.retries + 1):
        if args.max_other_load > 0:
            # Waiting for quiet watches the server's core (the one whose share decides throughput).
            wait_quiet(bench_cores, args.max_other_load, args.quiet_timeout)
        result = measure(
            servers,
            impl,
            scenario,
            engine=engine,
            duration=args.duration,
            connections=args.connections,
            load_cpu=load_cpu,
        )
        result["attempt"] = attempt + 1
        result["contended"] = (result["foreign_cpu_pct"] or 0) > args.max_other_load > 0
        if best is None or (result["foreign_cpu_pct"] or 0) < (best["foreign_cpu_pct"] or 0):
            best = result
        if not result["contended"]:
            break
        print(
            f"  (other processes took {result['foreign_cpu_pct']:.0f}% of the benchmark cores; measuring again)",
            file=sys.stderr,
            flush=True,
        )
    assert best is not None
    return best


def _server_list(parser: argparse.ArgumentParser, value: str, servers: list[str]) -> list[str]:
    """`all`, `none`, or a comma-separated list (each among SERVERS)."""
    if value == "all":
        return servers
    chosen = [name for name in value.split(",") if name and name != "none"]
    for name in chosen:
        if name not in SERVERS:
            parser.error(f"unknown server {name!r}")
    return chosen


def write_results(
    raw: dict[str, dict[str, dict[str, list[dict[str, Any]]]]],
    args: argparse.Namespace,
    engine: str,
    started: float,
    *,
    complete: bool,
    footprint: dict[str, Any] | None = None,
    connections: dict[str, Any] | None = None,
    fleet: dict[str, Any] | None = None,
) -> None:
    """Summarize the rounds measured so far and write the JSON (after each round, so a cut run keeps them).

    Complete: print the tables (`benchmarks.report`: throughput, the issue's targets, memory) and,
    with `--docs`, write them and the chart into the documentation.
    """
    from . import report

    summary = {
        server: {sc: {impl: summarize(runs) for impl, runs in cells.items()} for sc, cells in scenarios_.items()}
        for server, scenarios_ in raw.items()
    }
    document = {
        "environment": environment(engine, args),
        "complete": complete,
        "elapsed_s": round(time.monotonic() - started, 1),
        "summary": summary,
        "runs": raw,
        "footprint": footprint,
        "connections": connections,
        "fleet": fleet,
    }
    rendered = report.render_markdown(document)
    document["table_markdown"] = rendered
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    if not complete:
        return
    print(rendered)
    print(f"results written to {args.output}", file=sys.stderr)
    if args.docs:
        for path in report.write_docs(document):
            print(f"wrote {path}", file=sys.stderr)
    failed = any(cell["status"] != "ok" for sc in summary.values() for cells in sc.values() for cell in cells.values())
    broken = [section for section in (footprint, connections, fleet) if section is not None and not section["ok"]]
    if failed or broken:
        sys.exit(1)


if __name__ == "__main__":
    main()
