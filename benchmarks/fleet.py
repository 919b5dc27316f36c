"""The fleet benchmark (`python -m benchmarks.run --fleet`): McpApp on Redis, one worker and two.

The harness starts its own `redis-server` (Debian's package, found on PATH; `tests.kit.redis_server`,
which imports nothing but the standard library) on a free 127.0.0.1 port in a temporary directory, then
serves on uvicorn (uvloop, httptools) four processes of `benchmarks.apps`:

    memory     mcpapp-json, in-memory            1 worker    pinned to the server core
    redis      mcpapp-json-redis                 1 worker    pinned to the server core
    redis-1w   mcpapp-json-redis                 1 worker    unpinned
    redis-2w   mcpapp-json-redis (--workers 2)   2 workers   unpinned, one listening socket

and runs the legacy-json scenario (`benchmarks.load`: one 2025-11-25 session per cell, opened before
its first run and kept for all, `tools/call` of `echo` on every keep-alive connection, JSON answers)
on each, rounds interleaved (every other round backwards); its two ratios are paired per round
(`benchmarks.paired`), as in the main runs.

Fairness. `memory` and `redis` compare like with like as the other benchmarks do: the server alone on
its core, the load generator on the other. Two workers cannot be pinned to one core, and a 2-core
machine has no third core for the load generator: `redis-1w` and `redis-2w` both run unpinned, with
the load generator unpinned too (one wrk thread, as everywhere), so the two cells differ only in the
worker count. The load generator's CPU share (shown) is taken from what the second worker could use.

Adoption in the two-worker run. The session is opened (untimed) through the shared socket and lands
on either worker; the first request reaching the other worker adopts it (one directory lookup), and
from then on both workers hold it. The warm-up run makes those adoptions, so the measured rounds
serve held sessions only: the Redis commands counted around each measured run show it.

Redis round trips. One round trip is one command, one pipeline or one script call sent by a worker.
`INFO commandstats` counts every command a script runs as well as the script call (EVALSHA), and
every command of a pipeline or a MULTI/EXEC separately. So the harness reads three counters around a
count, over one connection of its own (its INFO calls are subtracted): `commands` (sum of
`calls + rejected_calls` of commandstats), `in scripts` (commands MONITOR shows as run by `lua`;
subtracted), and `socket reads` (`total_reads_processed` of `INFO stats`, the network round trips a
pipeline would show as fewer than its commands). Round trips = commands - in scripts; the socket reads
are shown beside them. asgi_mcp sends no pipelines, so for requests in a row the two agree; commands
sent at the same moment on one connection (coredis writes them together) arrive in one socket read,
as the burst below shows. Counts:

* held: `--count-requests` requests in one session on the worker that opened it (target 0);
* adopted: `--count-sessions` sessions opened on worker A (`redis`), each session's first `tools/call`
  sent to worker B (`redis-1w`, its own port): round trips per adopted session (target <= 1), then
  `--count-requests` more requests there, spread over those sessions (target 0). One adoption
  beforehand is left out and shown apart: a worker's first session of a tenant also subscribes
  to the tenant's bus channel (once per worker and tenant, not per session). The `initialize` of the
  counted sessions is shown too (no target): one script call each, whose inner commands commandstats
  counts as well, which is why they are subtracted;
* burst: one session opened on worker A, then `BURST` (16) first requests for it sent to worker B at
  once, each on its own connection, as a client's parallel calls (or a proxy's connections) may
  arrive: round trips for the one adoption (target <= 1, as for one first request).

Counts are exact whatever else the machine runs; the throughput figures need a quiet machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .load import INITIALIZED_BODY, LEGACY_VERSION, LoadSpec, close_session, initialize_body, make_spec, run_load
from .paired import paired_ratio
from .report import Verdict

SCENARIO = "legacy-json"
SERVER = "uvicorn"


@dataclass(frozen=True)
class Cell:
    name: str
    variant: str
    workers: int
    pinned: bool
    label: str


CELLS = (
    Cell("memory", "mcpapp-json", 1, True, "in-memory, 1 worker (pinned)"),
    Cell("redis", "mcpapp-json-redis", 1, True, "Redis, 1 worker (pinned)"),
    Cell("redis-1w", "mcpapp-json-redis", 1, False, "Redis, 1 worker (unpinned)"),
    Cell("redis-2w", "mcpapp-json-redis", 2, False, "Redis, 2 workers (unpinned)"),
)
REDIS_OVER_MEMORY = 0.9
TWO_OVER_ONE = 1.6
ROOT = Path(__file__).resolve().parent.parent


# -- counting Redis commands -----------------------------------------------------------------------


class Resp:
    """A minimal blocking RESP2 client: one connection of the harness's own (no handshake commands)."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.reader = self.sock.makefile("rb")

    def call(self, *args: str) -> Any:
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        self.sock.sendall(payload.encode())
        return self.read()

    def read(self) -> Any:
        line = self.reader.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.reader.read(size + 2)[:-2].decode()
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected RESP line {line[:80]!r}")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _info(text: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))
    return dict(pairs)


class CommandCounter:
    """`commands` and `socket reads` of the whole server, read over one connection of the harness's own."""

    def __init__(self, host: str, port: int) -> None:
        self.resp = Resp(host, port)

    def read(self) -> tuple[int, int]:
        stats = _info(self.resp.call("INFO", "commandstats"))
        reads = int(_info(self.resp.call("INFO", "stats"))["total_reads_processed"])
        commands = 0
        for key, value in stats.items():
            if key.startswith("cmdstat_"):
                fields = dict(item.split("=", 1) for item in value.split(","))
                commands += int(fields["calls"]) + int(fields.get("rejected_calls", "0"))
        return commands, reads

    def close(self) -> None:
        self.resp.close()


# Between two `CommandCounter.read`s Redis counts two INFO commands and two socket reads of the counter's
# own (a command's stats are counted after it runs, its socket read before).
OWN_PER_COUNT = 2


SYNC_MARKER = "bench-fleet-sync"


class Monitor:
    """MONITOR on a connection of its own, in a thread: the command names each kind of client sent.

    Its stream trails the commands; `sync` sends a marker (ECHO) through the counter's connection and
    waits for MONITOR to show it: Redis runs one command at a time, so everything before it was shown.
    """

    def __init__(self, host: str, port: int) -> None:
        self.resp = Resp(host, port)
        self.seen: Counter[str] = Counter()
        self.markers: set[str] = set()
        self.sequence = 0
        self.changed = threading.Condition()
        if self.resp.call("MONITOR") != "OK":
            raise RuntimeError("MONITOR refused")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            while True:
                line = self.resp.read()  # `1700000000.123456 [0 lua] "hget" "key" ...`
                source = line.split("[", 1)[1].split("]", 1)[0].split(" ", 1)[1]
                name = line.split('"', 2)[1].lower()
                with self.changed:
                    if name == "echo" and SYNC_MARKER in line:
                        self.markers.add(line.rsplit('"', 2)[1])
                        self.changed.notify_all()
                    else:
                        self.seen[("lua " if source == "lua" else "") + name] += 1

    def sync(self, counter: CommandCounter, timeout: float = 30.0) -> Counter[str]:
        """What MONITOR showed since the last sync (markers left out)."""
        self.sequence += 1
        marker = f"{SYNC_MARKER}-{self.sequence}"
        counter.resp.call("ECHO", marker)
        with self.changed:
            if not self.changed.wait_for(lambda: marker in self.markers, timeout):
                raise RuntimeError(f"MONITOR did not show {marker} within {timeout}s")
            seen, self.seen = self.seen, Counter()
        return seen

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.resp.sock.shutdown(socket.SHUT_RDWR)
        self.resp.close()
        self.thread.join(5)


@dataclass
class Count:
    key: str
    what: str
    units: int  # requests or sessions the counts are divided by
    commands: int
    in_scripts: int
    reads: int
    names: dict[str, int]

    @property
    def round_trips(self) -> int:
        return self.commands - self.in_scripts

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "what": self.what,
            "units": self.units,
            "commands": self.commands,
            "in_scripts": self.in_scripts,
            "round_trips": self.round_trips,
            "socket_reads": self.reads,
            "per_unit": self.round_trips / self.units if self.units else None,
            "names": self.names,
        }


@contextlib.contextmanager
def counting(counter: CommandCounter, monitor: Monitor, key: str, units: int, into: list[Count]) -> Iterator[None]:
    """Count what Redis ran meanwhile; the markers of `Monitor.sync` run outside the two readings."""
    monitor.sync(counter)
    commands_before, reads_before = counter.read()
    yield
    commands_after, reads_after = counter.read()
    seen = monitor.sync(counter)
    seen.pop("info", None)  # the counter's own (workers send no INFO)
    names = dict(sorted(seen.items()))
    in_scripts = sum(n for name, n in names.items() if name.startswith("lua "))
    commands = commands_after - commands_before - OWN_PER_COUNT
    reads = reads_after - reads_before - OWN_PER_COUNT
    into.append(Count(key, COUNTS[key].replace("BURST", str(BURST)), units, commands, in_scripts, reads, names))


def _open(client: httpx.Client, url: str) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    headers["mcp-protocol-version"] = LEGACY_VERSION
    response = client.post(url, headers=headers, content=initialize_body())
    response.raise_for_status()
    headers["mcp-session-id"] = response.headers["mcp-session-id"]
    client.post(url, headers=headers, content=INITIALIZED_BODY).raise_for_status()
    return headers


def _call(client: httpx.Client, url: str, headers: dict[str, str], request_id: int) -> None:
    params = '"params":{"name":"echo","arguments":{"text":"rt"}}'
    body = f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call",{params}}}'
    response = client.post(url, headers=headers, content=body)
    if response.status_code != 200 or '"rt"' not in response.text:
        raise RuntimeError(f"tools/call answered {response.status_code}: {response.text[:200]}")


COUNTS = {
    "held": "held session: a request on the worker that opened it",
    "first-on-worker": "a worker's first adoption (subscribes to the tenant)",
    "initialize": "initialize (records the session; no target)",
    "adopted-first": "adopted session: its first request on another worker",
    "adopted-later": "adopted session: later requests on that worker",
    "adopted-burst": "adopted session: BURST concurrent first requests on another worker",
}
BURST = 16  # concurrent first requests for one session, as a client's connections (or a proxy's) may send


def _burst(url: str, headers: dict[str, str]) -> None:
    """`BURST` first requests for one session at once, each on its own connection (threads at a barrier)."""
    barrier = threading.Barrier(BURST)
    failures: list[BaseException] = []

    def first_request(request_id: int) -> None:
        try:
            with httpx.Client(timeout=10) as client:
                barrier.wait(10)
                _call(client, url, headers, request_id)
        except BaseException as failure:  # reported by the caller's thread
            failures.append(failure)

    threads = [threading.Thread(target=first_request, args=(n + 1,)) for n in range(BURST)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def count_round_trips(redis_port: int, worker_a: str, worker_b: str, *, sessions: int, requests: int) -> list[Count]:
    """The Redis round trips of held and adopted sessions (see the module docstring)."""
    counts: list[Count] = []
    counter, monitor = CommandCounter("127.0.0.1", redis_port), Monitor("127.0.0.1", redis_port)
    try:
        with httpx.Client(timeout=10) as client:
            held = _open(client, worker_a)
            _call(client, worker_a, held, 1)  # the first call after initialize, out of the count
            with counting(counter, monitor, "held", requests, counts):
                for n in range(requests):
                    _call(client, worker_a, held, n + 2)
            # Worker B's first session of this tenant also subscribes to the tenant's bus channel.
            with counting(counter, monitor, "first-on-worker", 1, counts):
                _call(client, worker_b, held, requests + 2)
            with counting(counter, monitor, "initialize", sessions, counts):
                adopted = [_open(client, worker_a) for _ in range(sessions)]
            with counting(counter, monitor, "adopted-first", sessions, counts):
                for headers in adopted:
                    _call(client, worker_b, headers, 1)
            with counting(counter, monitor, "adopted-later", requests, counts):
                for n in range(requests):
                    _call(client, worker_b, adopted[n % sessions], n + 2)
            burst = _open(client, worker_a)
            with counting(counter, monitor, "adopted-burst", 1, counts):
                _burst(worker_b, burst)
            for headers in [held, *adopted, burst]:
                client.delete(worker_a, headers=headers)
    finally:
        monitor.close()
        counter.close()
    return counts


# -- the servers and the throughput runs -----------------------------------------------------------


def _tree_pids(pid: int) -> list[int]:
    """`pid` and its descendants (uvicorn's supervisor and its worker processes)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    queue += [int(child) for child in handle.read().split()]
    return found


def tree_cpu_seconds(pid: int) -> float:
    from .run import _cpu_seconds

    total = 0.0
    for member in _tree_pids(pid):
        with contextlib.suppress(OSError):
            total += _cpu_seconds(member)
    return total


class Workers:
    """One `benchmarks.apps` process per cell (uvicorn), each on its own port; the Redis cells share `redis_url`."""

    def __init__(self, base_port: int, server_cpu: int | None, redis_url: str, log_dir: Path) -> None:
        self.ports = {cell.name: base_port + i for i, cell in enumerate(CELLS)}
        self.server_cpu, self.redis_url, self.log_dir = server_cpu, redis_url, log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Workers:
        from .run import _pin, _wait_port

        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        try:
            for cell in CELLS:
                command = [
                    *(_pin(self.server_cpu) if cell.pinned else []),
                    sys.executable,
                    "-m",
                    "benchmarks.apps",
                    cell.variant,
                    "--server",
                    SERVER,
                    "--port",
                    str(self.ports[cell.name]),
                    *(["--redis-url", self.redis_url] if "redis" in cell.variant else []),
                    *(["--workers", str(cell.workers)] if cell.workers > 1 else []),
                ]
                with open(self.log(cell), "wb") as log:
                    self.procs[cell.name] = subprocess.Popen(
                        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log
                    )
            for cell in CELLS:
                _wait_port(self.ports[cell.name], self.procs[cell.name], self.log(cell))
                self._wait_workers(cell)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def log(self, cell: Cell) -> Path:
        return self.log_dir / f"bench-fleet-{cell.name}.log"

    def _wait_workers(self, cell: Cell, timeout: float = 60.0) -> None:
        """Several workers: until each has built its app (`benchmarks.apps` logs `BENCHWORKER` then)."""
        if cell.workers == 1:
            return
        deadline = time.monotonic() + timeout
        while self.log(cell).read_text(errors="replace").count("BENCHWORKER ") < cell.workers:
            if time.monotonic() > deadline or self.procs[cell.name].poll() is not None:
                raise RuntimeError(f"{cell.label}: workers did not start:\n{self.log(cell).read_text()[-2000:]}")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def url(self, cell: Cell) -> str:
        return f"http://127.0.0.1:{self.ports[cell.name]}/mcp"

    def pid(self, cell: Cell) -> int:
        proc = self.procs[cell.name]
        if proc.poll() is not None:
            raise RuntimeError(f"{cell.label} died (exit {proc.returncode}):\n{self.log(cell).read_text()[-2000:]}")
        return proc.pid


def _cpu_by_pid(pid: int) -> dict[int, float]:
    from .run import _cpu_seconds

    found = {}
    for member in _tree_pids(pid):
        with contextlib.suppress(OSError):
            found[member] = _cpu_seconds(member)
    return found


def measure_cell(
    workers: Workers,
    cell: Cell,
    spec: LoadSpec,
    counter: CommandCounter,
    *,
    engine: str,
    duration: float,
    connections: int,
    load_cpu: int | None,
) -> dict[str, Any]:
    """One run of legacy-json on `cell`: the load result, server CPU (all its processes), Redis commands."""
    from .run import _children_cpu

    pid = workers.pid(cell)
    commands_before, _ = counter.read()
    cpu_before, load_before = _cpu_by_pid(pid), _children_cpu()
    result = run_load(spec, engine=engine, duration=duration, connections=connections, cpu=load_cpu)
    cpu_after, load_after = _cpu_by_pid(pid), _children_cpu()
    commands_after, _ = counter.read()
    seconds = result["duration_s"] or 1.0
    spent = {member: cpu_after[member] - cpu_before.get(member, 0.0) for member in cpu_after}
    result["cpu_us_per_req"] = sum(spent.values()) / result["ok"] * 1e6 if result["ok"] else None
    # How evenly the kernel spread the connections: the busiest processes' (the workers') CPU shares.
    busiest = sorted(spent.values(), reverse=True)[: cell.workers]
    result["worker_cpu_shares"] = [round(100 * share / (sum(busiest) or 1.0)) for share in busiest]
    result["load_cpu_pct"] = (load_after - load_before) / seconds * 100
    result["redis_commands"] = commands_after - commands_before - OWN_PER_COUNT
    return result


def summarize_cell(runs: list[dict[str, Any]]) -> dict[str, Any]:
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
    return {
        "status": "ok",
        "rps": statistics.median(rps),
        "rps_min": min(rps),
        "rps_max": max(rps),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "cpu_us_per_req": statistics.median(cpu) if cpu else None,
        "load_cpu_pct": statistics.median(r["load_cpu_pct"] for r in runs),
        "requests": sum(r["ok"] for r in runs),
        "redis_commands": sum(r["redis_commands"] for r in runs),
        "worker_cpu_shares": runs[len(runs) // 2]["worker_cpu_shares"],
    }


@dataclass(frozen=True)
class Rounds:
    """How each cell is measured: the load, the rounds and the wait for a quiet machine."""

    engine: str
    duration: float
    rounds: int
    warmup: float
    connections: int
    load_cpu: int | None
    max_other_load: float
    quiet_timeout: float


def run_rounds(workers: Workers, redis_port: int, plan: Rounds) -> dict[str, list[dict[str, Any]]]:
    """A warm-up run of every cell (unless `plan.warmup` is 0), then the rounds, interleaved."""
    from .run import wait_quiet

    raw: dict[str, list[dict[str, Any]]] = {cell.name: [] for cell in CELLS}
    specs: dict[str, LoadSpec] = {}
    counter = CommandCounter("127.0.0.1", redis_port)
    try:
        # One session per cell for all its runs: on two workers, the warm-up makes the adoptions.
        for cell in CELLS:
            specs[cell.name] = make_spec(workers.url(cell), SCENARIO)[0]
        for round_no in range(0 if plan.warmup > 0 else 1, plan.rounds + 1):
            # Every other round backwards, so a drift of the machine's speed falls on both sides of a ratio.
            for cell in CELLS if round_no % 2 else CELLS[::-1]:
                if round_no and plan.max_other_load > 0:
                    wait_quiet(list(range(os.cpu_count() or 1)), plan.max_other_load, plan.quiet_timeout)
                result = measure_cell(
                    workers,
                    cell,
                    specs[cell.name],
                    counter,
                    engine=plan.engine,
                    duration=plan.duration if round_no else plan.warmup,
                    connections=plan.connections,
                    load_cpu=plan.load_cpu if cell.pinned else None,
                )
                if not round_no:
                    continue  # the warm-up (and, on two workers, the adoptions)
                result["round"] = round_no
                raw[cell.name].append(result)
                print(
                    f"  fleet {cell.label:28} round {round_no}: {result['rps']:8.0f} req/s  "
                    f"p99 {result['p99_ms']:6.1f} ms  Redis commands {result['redis_commands']}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for cell in CELLS:
            if cell.name in specs:
                close_session(workers.url(cell), specs[cell.name].headers)
        counter.close()
    return raw


def run_fleet(
    plan: Rounds, *, base_port: int, server_cpu: int | None, count_sessions: int, count_requests: int
) -> dict[str, Any]:
    """Start redis-server and the four cells, count round trips, run the rounds; the results with their tables."""
    from tests.kit.redis_server import RedisServer  # the standard library only, no pytest

    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as scratch:
        redis = RedisServer(Path(scratch))
        redis.start()
        try:
            assert redis.port is not None
            with Workers(base_port, server_cpu, redis.url, Path(scratch)) as workers:
                by_name = {cell.name: cell for cell in CELLS}
                counts = count_round_trips(
                    redis.port,
                    workers.url(by_name["redis"]),
                    workers.url(by_name["redis-1w"]),
                    sessions=count_sessions,
                    requests=count_requests,
                )
                raw = run_rounds(workers, redis.port, plan)
        finally:
            redis.close()
    cells = {name: summarize_cell(runs) for name, runs in raw.items()}
    found = fleet_verdicts(cells, counts, raw)
    document: dict[str, Any] = {
        "server": SERVER,
        "scenario": SCENARIO,
        "cells": cells,
        "runs": raw,
        "round_trips": [count.as_dict() for count in counts],
        "verdicts": [vars(v) for v in found],
        "ok": all(cell["status"] == "ok" for cell in cells.values()),
    }
    document["table_markdown"] = fleet_table(document)
    return document


def _rate(cells: dict[str, Any], name: str) -> float | None:
    cell = cells.get(name, {})
    return float(cell["rps"]) if cell.get("status") == "ok" and cell.get("rps") else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fleet_verdicts(
    cells: dict[str, Any], counts: list[Count], runs: dict[str, list[dict[str, Any]]] | None = None
) -> list[Verdict]:
    """Issue 13's benchmark targets: the two throughput ratios and the two round-trip counts.

    With the per-round `runs`, a ratio is paired per round (`benchmarks.paired`), as in the main
    runs; without them (an older results file), the quotient of the cells' medians."""
    found = []
    for name, over, under, minimum in (
        ("McpApp req/s, Redis / in-memory, one uvicorn worker", "redis", "memory", REDIS_OVER_MEMORY),
        ("McpApp req/s on Redis, two uvicorn workers / one (unpinned)", "redis-2w", "redis-1w", TWO_OVER_ONE),
    ):
        ratio = _ratio(_rate(cells, over), _rate(cells, under))
        if runs is not None and ratio is not None:
            ratio = paired_ratio(runs.get(over, []), runs.get(under, []))
        found.append(
            Verdict(name, SCENARIO, "lowlevel", f">= {minimum:g}x", ratio, None if ratio is None else ratio >= minimum)
        )
    for name, key, most in (
        ("Redis round trips per request, held session", "held", 0.0),
        ("Redis round trips, adopted session's first request", "adopted-first", 1.0),
        (f"Redis round trips, adopted session's {BURST} concurrent first requests", "adopted-burst", 1.0),
    ):
        count = next((c for c in counts if c.key == key), None)
        value = count.round_trips / count.units if count is not None and count.units else None
        goal = f"{'=' if most == 0 else '<='} {most:g}"
        found.append(
            Verdict(name, SCENARIO, "lowlevel", goal, value, None if value is None else value <= most, unit="")
        )
    return found


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}".replace(",", " ")


def fleet_table(document: dict[str, Any]) -> str:
    """The "Fleet (Redis)" section: throughput per cell, round trips per count, how it was measured."""
    lines = [
        "#### Fleet (Redis)",
        "",
        "| McpApp, legacy-json, uvicorn | req/s (min-max) | p50 / p99 ms | server CPU µs/req "
        "| load generator CPU % | workers' CPU shares % | Redis commands / req |",
        "|---|---|---|---|---|---|---|",
    ]
    for cell in CELLS:
        c = document["cells"].get(cell.name, {"status": "absent"})
        if c["status"] != "ok":
            shown = "ERRORS" if c["status"] == "errors" else "-"
            lines.append(f"| {cell.label} | {shown} | - | - | - | - | - |")
            continue
        shares = " / ".join(str(share) for share in c["worker_cpu_shares"]) if cell.workers > 1 else "-"
        per_request = c["redis_commands"] / c["requests"] if "redis" in cell.variant and c["requests"] else None
        lines.append(
            f"| {cell.label} | {_fmt(c['rps'])} ({_fmt(c['rps_min'])}-{_fmt(c['rps_max'])}) "
            f"| {c['p50_ms']:.1f} / {c['p99_ms']:.1f} | {_fmt(c['cpu_us_per_req'])} | {c['load_cpu_pct']:.0f} "
            f"| {shares} | {_fmt(per_request, 4) if per_request is not None else '-'} |"
        )
    lines += [
        "",
        "| Redis round trips | n | commands | in scripts | round trips | socket reads | per unit | commands seen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for count in document["round_trips"]:
        seen = ", ".join(f"{name} {n}" for name, n in count["names"].items()) or "none"
        lines.append(
            f"| {count['what']} | {count['units']} | {count['commands']} | {count['in_scripts']} "
            f"| {count['round_trips']} | {count['socket_reads']} | {_fmt(count['per_unit'], 2)} | {seen} |"
        )
    lines += [
        "",
        "- Fleet: in-memory vs Redis on one worker are pinned as the other rows (server core, load core)."
        " Two workers cannot share one core and a 2-core machine has no third for the load generator, so"
        " the two-workers / one-worker pair runs unpinned, wrk (one thread) unpinned too: the cells differ"
        " only in the worker count, and wrk's CPU share is taken from what the second worker could use.",
        "- Fleet: each run opens its session through the shared socket, on either worker; the other worker"
        " adopts it on the first request it gets (in the warm-up run; the cell keeps its session for all"
        " its runs), then both hold it: the measured rounds serve held sessions (the Redis commands"
        " column counts every command sent meanwhile, heartbeats included). The workers' CPU shares show"
        " how the kernel spread wrk's connections over the shared socket.",
        "- Round trips: one command, one pipeline or one script call. Commandstats counts each command a"
        " script runs (shown by MONITOR as `lua`) and each command of a pipeline: round trips = commands"
        " - in scripts; socket reads (`total_reads_processed`) would be fewer if commands were pipelined."
        " A worker's first adoption also subscribes to the tenant's bus channel (once per worker).",
    ]
    return "\n".join(lines)
