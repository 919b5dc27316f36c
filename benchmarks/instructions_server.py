"""Server instructions per request under callgrind: a real ASGI server, a fixed number of requests.

`benchmarks.instructions` counts one request through the ASGI callable in memory; this counts what a
served request costs the whole server process (the HTTP server, the event loop, the app, the garbage
collector), which is what the wrk run's "server CPU per request" measures, but in instructions, so
that other load on the machine does not move it.

The server of `benchmarks.apps` (`VARIANT --server SERVER`, from the tree under test) runs under
`valgrind --tool=callgrind --dump-before=getppid`; a small wrapper (this file run as a script) adds a
SIGUSR2 handler that calls `os.getppid()`, so each SIGUSR2 writes a dump and zeroes the counters. A
client outside valgrind (asyncio, raw HTTP/1.1, `--connections` keep-alive connections) opens one
legacy session (or none, modern), sends `--warmup` requests, then:

    SIGUSR2 | idle --idle seconds | SIGUSR2 | n1 requests | SIGUSR2 | n2 requests | SIGUSR2

Under valgrind a request takes ~50x longer, so anything that runs per unit of time (timers, tickers)
weighs ~50x more per request than under wrk; the idle segment measures that rate, and

    per request = (Ir(n2) - Ir(n1) - idle_rate * (t(n2) - t(n1))) / (n2 - n1)

The same slowdown would change what an SSE answer does: its head waits for the first frame only
`asgi_mcp._io.response.HEAD_DELAY` (50 ms), less than a request takes under valgrind, so every head
would go alone, which at full speed almost none does. The server process sets that delay to
`--head-delay` (5 s by default) for the path wrk measures; `--head-delay 0` keeps the tree's own.

`--cache-sim` adds callgrind's cache simulation (about twice as slow): data reads and writes and
first- and last-level misses per request, for a difference that is not in the instruction count.

`--ablate` changes one thing in the server process to size its share (all trees):

    gc-freeze     gc.freeze() after the app is built (the harness's --gc-freeze)
    gc-off        gc.disable(): what the cycle collector costs
    gc-threshold  gc.set_threshold(10_000, 50, 50): fewer young collections

    python -m benchmarks.instructions_server --tree before=/tmp/before --tree after=. \\
        --python /tmp/venv-int/bin/python [--variant mcpapp-json] [--scenario legacy-json] [--ablate gc-off]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ABLATIONS = ("gc-freeze", "gc-off", "gc-threshold")


# -- the wrapper: runs inside valgrind, the tree under test first on sys.path -------------------------------


def wrapper(argv: list[str]) -> None:
    import gc

    ablations = [a for a in os.environ.get("BENCH_ABLATE", "").split(",") if a]
    signal.signal(signal.SIGUSR2, lambda *_: os.getppid())  # callgrind dumps before getppid
    if "gc-off" in ablations:
        gc.disable()
    if "gc-threshold" in ablations:
        gc.set_threshold(10_000, 50, 50)
    if "gc-freeze" in ablations:
        argv = [*argv, "--gc-freeze"]
    import asgi_mcp
    from asgi_mcp._io import response
    from benchmarks import apps

    head_delay = float(os.environ.get("BENCH_HEAD_DELAY", "0"))
    if head_delay > 0 and hasattr(response, "HEAD_DELAY"):  # (trees before the lazy head have none)
        response.HEAD_DELAY = head_delay  # type: ignore[misc]

    print(f"asgi_mcp from {asgi_mcp.__file__}", file=sys.stderr, flush=True)
    apps.main(argv)


# -- the client ----------------------------------------------------------------------------------------------

ACCEPT = "application/json, text/event-stream"
LEGACY, MODERN = "2025-11-25", "2026-07-28"
PAYLOAD = "bench-payload"


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.reader, self.writer, self.port = reader, writer, port

    async def post(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        lines = ["POST /mcp HTTP/1.1", f"host: 127.0.0.1:{self.port}", f"content-length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
        if "content-length" in fields:
            return status, fields, await self.reader.readexactly(int(fields["content-length"]))
        chunks: list[bytes] = []
        while True:  # chunked
            size = int((await self.reader.readline()).strip(), 16)
            chunk = await self.reader.readexactly(size + 2)
            if size == 0:
                return status, fields, b"".join(chunks)
            chunks.append(chunk[:-2])


def tools_call(request_id: int, modern: bool, *, progress: bool = False) -> bytes:
    params: dict[str, Any] = {"name": "echo", "arguments": {"text": PAYLOAD}}
    if modern:
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        if progress:  # the echo tool reports progress: an SSE answer, the notification then the result
            params["_meta"]["progressToken"] = "bench"
    message = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
    return json.dumps(message, separators=(",", ":")).encode()


async def open_headers(port: int, scenario: str) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": ACCEPT}
    if scenario.startswith("modern"):
        return {**headers, "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "echo"}
    headers["mcp-protocol-version"] = LEGACY
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = Connection(reader, writer, port)
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "b", "version": "1"}},
    }
    status, fields, body = await conn.post(headers, json.dumps(init).encode())
    assert status == 200, (status, body)
    if "mcp-session-id" in fields:
        headers["mcp-session-id"] = fields["mcp-session-id"]
    status, _, _ = await conn.post(headers, b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert status in (200, 202), status
    writer.close()
    return headers


class Load:
    """`connections` keep-alive connections sending tools/call with fresh ids until `count` are answered."""

    def __init__(self, port: int, headers: dict[str, str], scenario: str, connections: int) -> None:
        self.port, self.headers, self.connections = port, headers, connections
        self.modern, self.progress = scenario.startswith("modern"), scenario == "modern-sse"
        self.next_id = 1
        self.conns: list[Connection] = []

    async def connect(self) -> None:
        """New connections (servers close idle ones: uvicorn after 5 s); made in every segment, so it cancels."""
        for conn in self.conns:
            conn.writer.close()
        self.conns = []
        for _ in range(self.connections):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.conns.append(Connection(reader, writer, self.port))

    async def run(self, count: int) -> None:
        remaining = [count]

        async def worker(conn: Connection) -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                request_id, self.next_id = self.next_id, self.next_id + 1
                call = tools_call(request_id, self.modern, progress=self.progress)
                status, _, body = await conn.post(self.headers, call)
                unreported = self.progress and b"notifications/progress" not in body
                if status != 200 or PAYLOAD.encode() not in body or b'"error"' in body or unreported:
                    raise RuntimeError(f"bad answer {status} {body[:200]!r}")

        await asyncio.gather(*(worker(c) for c in self.conns))


# -- the parent ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    per_request: float
    idle_per_second: float
    n1_seconds: float
    n2_seconds: float
    raw_per_request: float  # without the per-second correction
    # --cache-sim: per request (n2 - n1 segments, no per-second correction), by callgrind event name
    events: dict[str, float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dump_events(prefix: Path) -> tuple[list[str], list[list[int]]]:
    """The event names and each dump's totals, in dump order (`prefix.1`, `prefix.2`, ...)."""
    parts = sorted(prefix.parent.glob(prefix.name + ".*"), key=lambda p: int(p.suffix[1:]))
    names: list[str] = []
    totals: list[list[int]] = []
    for part in parts:
        text = part.read_text()
        names = re.findall(r"^events: (.*)$", text, re.MULTILINE)[-1].split()
        totals.append([int(x) for x in re.findall(r"^(?:summary|totals): (.*)$", text, re.MULTILINE)[-1].split()])
    return names, totals


async def wait_for_dumps(prefix: Path, count: int) -> None:
    while len(list(prefix.parent.glob(prefix.name + ".*"))) < count:  # noqa: ASYNC110 - a file, no event to wait on
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)


async def drive(proc: subprocess.Popen[bytes], port: int, prefix: Path, args: argparse.Namespace) -> list[float]:
    deadline = time.monotonic() + 1200
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start") from None
            await asyncio.sleep(0.5)
    headers = await open_headers(port, args.scenario)
    load = Load(port, headers, args.scenario, args.connections)
    await load.connect()
    await load.run(args.warmup)
    times: list[float] = []
    proc.send_signal(signal.SIGUSR2)
    await wait_for_dumps(prefix, 1)
    started = time.monotonic()
    await asyncio.sleep(args.idle)
    proc.send_signal(signal.SIGUSR2)
    await wait_for_dumps(prefix, 2)
    times.append(time.monotonic() - started)
    for n in (args.n1, args.n2):
        started = time.monotonic()
        await load.connect()
        await load.run(n)
        proc.send_signal(signal.SIGUSR2)
        await wait_for_dumps(prefix, 3 + len(times) - 1)
        times.append(time.monotonic() - started)
    for conn in load.conns:
        conn.writer.close()
    return times


def measure(tree: Path, args: argparse.Namespace, ablate: str) -> Measure:
    with tempfile.TemporaryDirectory(prefix="instructions-server-") as scratch:
        prefix = Path(scratch) / "cg.out"
        port = free_port()
        command = ["valgrind", "--tool=callgrind", "--dump-before=getppid", f"--callgrind-out-file={prefix}"]
        command += ["--cache-sim=yes"] if args.cache_sim else []
        command += [args.python, str(Path(__file__).resolve()), "--wrapper", args.variant]
        command += ["--server", args.server, "--port", str(port)]
        env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0", "BENCH_ABLATE": ablate}
        env["BENCH_HEAD_DELAY"] = str(args.head_delay)
        log = open(Path(scratch) / "stderr", "w+b")  # noqa: SIM115 - read after the process ends
        proc = subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            times = asyncio.run(drive(proc, port, prefix, args))
        except RuntimeError as error:
            log.seek(0)
            raise SystemExit(f"{tree}: {error}\n{log.read().decode(errors='replace')[-3000:]}") from error
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.seek(0)
        stderr = log.read().decode(errors="replace")
        origin = next((x for x in stderr.splitlines() if x.startswith("asgi_mcp from ")), "")
        if not origin.removeprefix("asgi_mcp from ").startswith(str(tree)):
            raise SystemExit(f"{tree}: wrong package ({origin!r}):\n{stderr[-2000:]}")
        names, totals = dump_events(prefix)
        if args.keep_dumps:
            keep = Path(args.keep_dumps)
            keep.mkdir(parents=True, exist_ok=True)
            for dump in Path(scratch).glob("cg.out*"):
                shutil.copy(dump, keep / f"{tree.name}-{args.server}-{args.scenario}-{ablate or 'none'}-{dump.name}")
    segments = [row[0] for row in totals]  # Ir first
    _, idle, n1, n2 = segments[:4]
    events = {name: (totals[3][i] - totals[2][i]) / (args.n2 - args.n1) for i, name in enumerate(names)}
    rate = idle / times[0]
    per_request = (n2 - n1 - rate * (times[2] - times[1])) / (args.n2 - args.n1)
    raw = (n2 - n1) / (args.n2 - args.n1)
    return Measure(per_request, rate, times[1], times[2], raw, events)


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--wrapper":
        sys.path.pop(0)  # this file's folder: `benchmarks` comes from PYTHONPATH, the tree under test
        wrapper(sys.argv[2:])
        return
    # Imported here, not at the top: the file also runs as a script inside valgrind, with an
    # older tree's `benchmarks` on the path.
    from benchmarks.cli import documented_parser

    parser = documented_parser("benchmarks.instructions_server", __doc__)
    parser.add_argument("--tree", action="append", required=True, metavar="LABEL=PATH")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--variant", default="mcpapp-json")
    parser.add_argument(
        "--scenario",
        default="legacy-json",
        choices=("legacy-json", "modern-json", "modern-sse"),
        help="the request sent; the variant picks the answer (mcpapp-sse: an SSE stream, which modern-sse needs)",
    )
    parser.add_argument("--server", default="uvicorn")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of the idle segment")
    parser.add_argument("--n1", type=int, default=500)
    parser.add_argument("--n2", type=int, default=2500)
    parser.add_argument("--ablate", action="append", default=[], choices=("none", *ABLATIONS))
    parser.add_argument(
        "--head-delay",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long an SSE head waits for its first frame in the server (0: the tree's own, 50 ms)",
    )
    parser.add_argument(
        "--cache-sim", action="store_true", help="also simulate the caches: misses per request (I1, D1, last level)"
    )
    parser.add_argument(
        "--keep-dumps",
        metavar="DIR",
        help="copy callgrind's dumps here: <tree folder>-<server>-<scenario>-<ablation>-cg.out.N (.4: n2)",
    )
    args = parser.parse_args(argv)
    trees = [(label, Path(path).resolve()) for label, _, path in (t.partition("=") for t in args.tree)]
    print(f"{args.variant} {args.scenario} on {args.server}, {args.connections} connections, {args.n2} - {args.n1}")
    columns = f"{'Ir/request':>12} {'raw':>12} {'idle Ir/s':>12} {'t(n1) s':>8} {'t(n2) s':>8}"
    print(f"{'tree':<10} {'ablation':<14} {columns}")
    for ablate in args.ablate or ["none"]:
        for label, tree in trees:
            m = measure(tree, args, "" if ablate == "none" else ablate)
            print(
                f"{label:<10} {ablate:<14} {m.per_request:>12,.0f} {m.raw_per_request:>12,.0f} "
                f"{m.idle_per_second:>12,.0f} {m.n1_seconds:>8.1f} {m.n2_seconds:>8.1f}",
                flush=True,
            )
            if args.cache_sim:
                print("           " + ", ".join(f"{k} {v:,.0f}" for k, v in m.events.items()), flush=True)


if __name__ == "__main__":
    main()
