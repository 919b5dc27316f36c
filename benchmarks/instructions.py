"""Instructions per request under callgrind: a speed comparison that other load cannot disturb.

Wall-clock timings on a shared machine move 15-35% from run to run; the number of instructions a
request executes does not depend on what else runs. For each `asgi.*` path of `benchmarks.micro`
(one `tools/call` through an app's ASGI callable, in memory, no socket) this runs the path under
`valgrind --tool=callgrind` in each source tree given, and prints instructions per request, before
and after, and their ratio.

How a path is counted: one process per tree, started with `--dump-before=getppid`; the child (this
file run as a script, so that `asgi_mcp` and `benchmarks.apps` come from the tree under test) takes
the paths one after the other: it starts the app's lifespan, opens the scenario (legacy: initialize +
initialized), runs `--warmup` requests, calls `os.getppid()` (callgrind writes a dump and zeroes its
counters), runs `--n1` requests, dumps, runs `--n2` requests, dumps. Then

    instructions per request = (Ir(n2 segment) - Ir(n1 segment)) / (n2 - n1)

which cancels whatever a segment costs once (the dump call, a collection that happens to straddle a
boundary). The garbage collector stays on, as in `benchmarks.micro`; `PYTHONHASHSEED=0` makes the
runs repeatable. The SDK's own paths serve as a control: the `mcp` package is the same in both trees,
so their ratio should read 1.000.

    python -m benchmarks.instructions --tree before=/tmp/before --tree after=. \\
        --python /tmp/venv-int/bin/python [--filter legacy-json] [--n1 200 --n2 1000]
    python -m benchmarks.instructions --tree after=. --list

Each tree's own `benchmarks/apps.py` builds its apps (its own `build_app(variant)`); a path whose
variant a tree does not know reads n/a. Valgrind is single-threaded and slows Python about 50x: a
tree takes about a minute to start and 10-30 s per path; run one comparison at a time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# The asgi.* paths of benchmarks.micro (name, benchmarks.apps variant, scenario). Kept here rather than
# imported: the child runs against older trees whose micro.py may not have the same imports.
PATHS: tuple[tuple[str, str, str], ...] = (
    ("asgi.floor (harness + trivial app)", "floor", "legacy-json"),
    ("asgi.mcpapp legacy-json tools/call", "mcpapp-json", "legacy-json"),
    ("asgi.mcpapp modern-json tools/call", "mcpapp-json", "modern-json"),
    ("asgi.mcpapp legacy-sse tools/call", "mcpapp-sse", "legacy-sse"),
    ("asgi.mcpapp-limited legacy-json tools/call", "mcpapp-json-limited", "legacy-json"),
    ("asgi.mcpapp-limited modern-json tools/call", "mcpapp-json-limited", "modern-json"),
    ("asgi.sdk legacy-json tools/call", "sdk-json", "legacy-json"),
    ("asgi.sdk modern-json tools/call", "sdk-json", "modern-json"),
    ("asgi.sdk legacy-sse tools/call", "sdk-sse", "legacy-sse"),
    ("asgi.mcpapp-mcpserver legacy-json tools/call", "mcpapp-json-mcpserver", "legacy-json"),
    ("asgi.mcpapp-mcpserver modern-json tools/call", "mcpapp-json-mcpserver", "modern-json"),
    ("asgi.sdk-mcpserver legacy-json tools/call", "sdk-json-mcpserver", "legacy-json"),
    ("asgi.sdk-mcpserver modern-json tools/call", "sdk-json-mcpserver", "modern-json"),
)
TOTALS = re.compile(r"^(?:summary|totals): (\d+)", re.MULTILINE)


# -- the child: runs inside valgrind, with the tree under test first on sys.path ---------------------------


def child(paths: list[tuple[str, str]], warmup: int, n1: int, n2: int) -> None:
    """Every path in one process (valgrind's start-up, ~1 minute, is paid once): three dumps per path
    the tree knows; the paths it does not know are named on stderr (`SKIP i`) and get no dumps."""
    import anyio

    import asgi_mcp
    from benchmarks import apps
    from benchmarks.load import ACCEPT, LEGACY_VERSION, MODERN_VERSION, PAYLOAD, tools_call_body
    from benchmarks.profile_legacy import request

    print(f"asgi_mcp from {asgi_mcp.__file__}", file=sys.stderr, flush=True)
    known = set(getattr(apps, "VARIANTS", ())) | set(getattr(apps, "MCPSERVER_VARIANTS", ()))

    async def one(variant: str, scenario: str) -> None:
        prefix, suffix = tools_call_body(scenario.startswith("modern"))
        app = apps.build_app(variant)
        to_app, app_receive = anyio.create_memory_object_stream[dict[str, Any]](4)
        app_send, from_app = anyio.create_memory_object_stream[dict[str, Any]](4)
        async with anyio.create_task_group() as tg:
            lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
            tg.start_soon(app, lifespan, app_receive.receive, app_send.send)
            await to_app.send({"type": "lifespan.startup"})
            assert (await from_app.receive())["type"] == "lifespan.startup.complete"
            headers = await _open(request, app, scenario, ACCEPT, LEGACY_VERSION, MODERN_VERSION)
            ids = itertools.count(1)

            async def run(count: int) -> None:
                for _ in range(count):
                    status, _, body = await request(app, headers, f"{prefix}{next(ids)}{suffix}".encode())
                    if status != 200 or PAYLOAD.encode() not in body or b'"error"' in body:
                        raise SystemExit(f"bad answer: {status} {body[:200]!r}")

            await run(warmup)
            os.getppid()  # callgrind dumps here (--dump-before=getppid): set-up and warm-up end
            await run(n1)
            os.getppid()
            await run(n2)
            os.getppid()
            await to_app.send({"type": "lifespan.shutdown"})
            await from_app.receive()
            tg.cancel_scope.cancel()

    for index, (variant, scenario) in enumerate(paths):
        if variant not in known:
            print(f"SKIP {index}", file=sys.stderr, flush=True)
            continue
        anyio.run(one, variant, scenario)


async def _open(request: Any, app: Any, scenario: str, accept: str, legacy: str, modern: str) -> list[Any]:
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json"), (b"accept", accept.encode())]
    if scenario.startswith("modern"):
        routing = [(b"mcp-protocol-version", modern.encode()), (b"mcp-method", b"tools/call"), (b"mcp-name", b"echo")]
        return [*headers, *routing]
    headers.append((b"mcp-protocol-version", legacy.encode()))
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": legacy, "capabilities": {}, "clientInfo": {"name": "m", "version": "1"}},
    }
    status, answer, _ = await request(app, headers, json.dumps(init).encode())
    assert status == 200, status
    if b"mcp-session-id" in answer:  # the floor has no sessions
        headers.append((b"mcp-session-id", answer[b"mcp-session-id"]))
    status, _, _ = await request(app, headers, b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert status in (200, 202), status
    return headers


# -- the parent: one callgrind run per path and tree ------------------------------------------------------


def callgrind_segments(prefix: Path) -> list[int]:
    """Ir of each dump, in dump order (`prefix.1`, `prefix.2`, ...; `prefix` itself is the exit's)."""
    parts = sorted(prefix.parent.glob(prefix.name + ".*"), key=lambda p: int(p.suffix[1:]))
    return [int(TOTALS.findall(p.read_text())[-1]) for p in parts]


def count(tree: Path, python: str, paths: list[tuple[str, str]], args: argparse.Namespace) -> list[float | None]:
    """Instructions per request of each path in `tree` (None where the tree lacks the variant)."""
    with tempfile.TemporaryDirectory(prefix="instructions-") as scratch:
        out = Path(scratch) / "cg.out"
        command = ["valgrind", "--tool=callgrind", "--dump-before=getppid", f"--callgrind-out-file={out}"]
        command += [python, str(Path(__file__).resolve()), "--child", str(args.warmup), str(args.n1), str(args.n2)]
        command += [f"{variant}:{scenario}" for variant, scenario in paths]
        env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{tree} failed:\n{done.stderr[-3000:]}")
        lines = done.stderr.splitlines()
        origin = next((line for line in lines if line.startswith("asgi_mcp from ")), "")
        if not origin.removeprefix("asgi_mcp from ").startswith(str(tree)):
            raise SystemExit(f"{tree}: the child imported the wrong package ({origin!r})")
        skipped = {int(line.split()[1]) for line in lines if line.startswith("SKIP ")}
        segments = callgrind_segments(out)
    if len(segments) != 3 * (len(paths) - len(skipped)):
        raise SystemExit(f"{tree}: {len(segments)} dumps for {len(paths) - len(skipped)} paths")
    counts: list[float | None] = []
    for index in range(len(paths)):
        if index in skipped:
            counts.append(None)
            continue
        _, first, second = segments[:3]
        segments = segments[3:]
        counts.append((second - first) / (args.n2 - args.n1))
    return counts


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        warmup, n1, n2 = (int(x) for x in sys.argv[2:5])
        paths = [(item.partition(":")[0], item.partition(":")[2]) for item in sys.argv[5:]]
        sys.path.pop(0)  # this file's folder: `benchmarks` must come from PYTHONPATH, the tree under test
        child(paths, warmup, n1, n2)
        return
    # Imported here, not at the top: the file also runs as a script inside valgrind, with an
    # older tree's `benchmarks` on the path.
    from benchmarks.cli import documented_parser

    parser = documented_parser("benchmarks.instructions", __doc__)
    parser.add_argument("--tree", action="append", required=True, metavar="LABEL=PATH", help="a source tree (1 or 2)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter (its site-packages: the deps)")
    parser.add_argument("--filter", action="append", default=[], metavar="SUBSTRING", help="only paths with it")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--n1", type=int, default=200)
    parser.add_argument("--n2", type=int, default=1000)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the counts there")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.n1 < args.n2:
        raise SystemExit("need 0 < --n1 < --n2")
    trees = [(label, Path(path).resolve()) for label, _, path in (t.partition("=") for t in args.tree)]
    paths = [p for p in PATHS if not args.filter or any(f.lower() in p[0].lower() for f in args.filter)]
    if args.list:
        print("\n".join(name for name, _, _ in paths))
        return
    width = max(len(name) for name, _, _ in paths)
    labels = [label for label, _ in trees]
    print(f"instructions per request ({args.n2} - {args.n1} requests), {args.python}")
    ratio_header = "    ratio" if len(trees) == 2 else ""
    print(f"{'path':<{width}} " + " ".join(f"{label:>12}" for label in labels) + ratio_header)
    per_tree = [count(tree, args.python, [(v, sc) for _, v, sc in paths], args) for _, tree in trees]
    rows: list[dict[str, Any]] = []
    for index, (name, _, _) in enumerate(paths):
        values = [counts[index] for counts in per_tree]
        cells = [f"{v:>12,.0f}" if v is not None else f"{'n/a':>12}" for v in values]
        ratio = ""
        if len(values) == 2 and values[0] and values[1]:
            ratio = f"{values[1] / values[0]:9.3f}"
        print(f"{name:<{width}} " + " ".join(cells) + ratio, flush=True)
        rows.append({"path": name, **dict(zip(labels, values, strict=True))})
    if args.json is not None:
        args.json.write_text(json.dumps({"trees": {k: str(v) for k, v in trees}, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
