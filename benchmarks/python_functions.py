"""Instructions per Python function, from a callgrind dump of a Python 3.12+ process run with perf support.

Callgrind names C functions only; CPython's own frames all read `_PyEval_EvalFrameDefault`. With
`PYTHONPERFSUPPORT=1` (Python 3.12 and later), each Python function is entered through a small
trampoline of its own, and the process writes where each one is to `/tmp/perf-<pid>.map`. Callgrind
sees a trampoline as an unnamed address; this reads the map and prints the inclusive instructions
of each Python function, divided by `--per` (the requests in the dump's segment):

    PYTHONPERFSUPPORT=1 python3.12 -m benchmarks.instructions_server --python <a 3.12 venv's python> \\
        --tree after=. --scenario modern-json --server builtin-trio --keep-dumps /tmp/dumps
    python -m benchmarks.python_functions /tmp/dumps/<tree folder>-builtin-trio-modern-json-none-cg.out.4 --per 2500

The trampolines add instructions of their own to every call, so read the figures against each
other (one function against another, one tree against another), not against counts taken without
them. A recursive function is counted at its outermost level.
"""

from __future__ import annotations

import bisect
import re
import subprocess
from pathlib import Path
from typing import NamedTuple

from .cli import documented_parser

_PID = re.compile(r"^pid: (\d+)$", re.MULTILINE)
# An inclusive line of callgrind_annotate for an unnamed address, at the outermost recursion level.
_UNNAMED = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+\?\?\?:0x([0-9a-f]+) \[")


class Trampoline(NamedTuple):
    start: int
    size: int
    name: str


def read_perf_map(path: Path) -> list[Trampoline]:
    entries = []
    for line in path.read_text().splitlines():
        start, size, name = line.split(" ", 2)
        entries.append(Trampoline(int(start, 16), int(size, 16), name))
    return sorted(entries)


def python_function_costs(dump: Path, perf_map: Path | None = None) -> dict[str, int]:
    """Inclusive instructions by Python function (`py::qualname:file`) in the dump."""
    pid = _PID.search(dump.read_text(errors="replace")[:4000])
    if perf_map is None:
        if pid is None:
            raise SystemExit(f"{dump}: no pid line; pass --perf-map")
        perf_map = Path(f"/tmp/perf-{pid.group(1)}.map")
    trampolines = read_perf_map(perf_map)
    starts = [t.start for t in trampolines]
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    costs: dict[str, int] = {}
    for line in annotated.splitlines():
        match = _UNNAMED.match(line)
        if match is None:
            continue
        address = int(match.group(2), 16)
        index = bisect.bisect_right(starts, address) - 1
        if index < 0 or address >= trampolines[index].start + trampolines[index].size:
            continue
        name = trampolines[index].name
        costs[name] = costs.get(name, 0) + int(match.group(1).replace(",", ""))
    return costs


def main(argv: list[str] | None = None) -> None:
    parser = documented_parser("benchmarks.python_functions", __doc__)
    parser.add_argument("dump", type=Path, help="a callgrind dump (one segment of --keep-dumps)")
    parser.add_argument("--per", type=float, default=1.0, help="divide by this (the requests in the segment)")
    parser.add_argument("--perf-map", type=Path, help="the process's perf map (default: /tmp/perf-<its pid>.map)")
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--match", default="", help="only functions whose name contains this")
    args = parser.parse_args(argv)
    costs = python_function_costs(args.dump, args.perf_map)
    shown = [(name, cost) for name, cost in costs.items() if args.match in name]
    for name, cost in sorted(shown, key=lambda item: -item[1])[: args.top]:
        print(f"{cost / args.per:12,.0f}  {name}")


if __name__ == "__main__":
    main()
