"""The fleet benchmark (`python -m benchmarks.run --fleet`) runs end to end, for a fraction of a second per cell.

The harness starts its own redis-server and four uvicorn processes (in-memory and Redis on one worker,
Redis on one worker and on two sharing a socket), counts Redis round trips and runs each cell once.
Throughput here is noise; what must hold is that every cell answers correctly and the counts, which are
exact, meet issue 13's targets: no round trip for a held session, one for an adopted session's first
request. Without redis-server this fails under CI (as every Redis test does) and skips elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report
from benchmarks.run import FLEET_PORT_OFFSET

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _free_base_port() -> int:
    """A `--base-port` whose four fleet ports (base + FLEET_PORT_OFFSET ...) were free a moment ago.

    Below Linux's ephemeral range (32768 up), where other tests' port-0 listeners and every outgoing
    connection take their ports: only an explicit bind takes one here.
    """
    for first in random.sample(range(20_000, 32_000, 4), 200):
        with contextlib.ExitStack() as probes:
            try:
                for port in range(first, first + 4):
                    probes.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return first - FLEET_PORT_OFFSET
    raise RuntimeError("no four free ports in a row")


@pytest.fixture(scope="module")
def fleet_run(require_redis_server: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    output = tmp_path_factory.mktemp("bench-fleet") / "latest.json"
    command = [
        sys.executable, "-m", "benchmarks.run",
        "--scenarios", "none", "--fleet",
        "--duration", "0.5", "--rounds", "1", "--warmup", "0", "--max-other-load", "0",
        "--count-sessions", "5", "--count-requests", "10",
        "--base-port", str(_free_base_port()),
        "--output", str(output),
    ]  # fmt: skip
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr[-3000:]
    document: dict[str, Any] = json.loads(output.read_text())
    return document


def test_every_cell_answers_and_the_round_trips_are_counted(fleet_run: dict[str, Any]) -> None:
    fleet = fleet_run["fleet"]
    assert fleet["ok"] is True
    assert set(fleet["cells"]) == {"memory", "redis", "redis-1w", "redis-2w"}
    for cell in fleet["cells"].values():
        assert cell["status"] == "ok"
        assert cell["requests"] > 0
    assert len(fleet["cells"]["redis-2w"]["worker_cpu_shares"]) == 2
    counts = {count["key"]: count for count in fleet["round_trips"]}
    assert (counts["held"]["units"], counts["held"]["round_trips"]) == (10, 0)
    first = counts["adopted-first"]
    assert (first["units"], first["round_trips"], first["socket_reads"]) == (5, 5, 5)
    assert counts["adopted-later"]["round_trips"] == 0
    # One session, 16 first requests at once: they share one directory lookup.
    assert counts["adopted-burst"]["round_trips"] == 1
    # Recording a session is one script call: its inner commands are counted by Redis, but not as round trips.
    recorded = counts["initialize"]
    assert recorded["names"]["evalsha"] == 5
    assert recorded["in_scripts"] > 0
    assert recorded["round_trips"] == recorded["commands"] - recorded["in_scripts"] == 5
    met = {v["target"]: v["met"] for v in fleet["verdicts"]}
    assert met["Redis round trips per request, held session"] is True
    assert met["Redis round trips, adopted session's first request"] is True
    assert met["Redis round trips, adopted session's 16 concurrent first requests"] is True
    assert all(v["met"] is not None for v in fleet["verdicts"])  # every target measured


def test_the_fleet_section_is_written_apart_from_the_main_one(fleet_run: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / report.DOCS_PAGE, tmp_path / report.DOCS_PAGE)
    page = tmp_path / report.DOCS_PAGE
    before = page.read_text()
    main_section = before.split(report.BEGIN_MARKER)[1].split(report.END_MARKER)[0]
    assert report.write_docs(fleet_run, tmp_path) == [page]  # a fleet-only run leaves the chart alone
    after = page.read_text()
    assert after.split(report.BEGIN_MARKER)[1].split(report.END_MARKER)[0] == main_section
    fleet_section = after.split(report.FLEET_BEGIN_MARKER)[1].split(report.FLEET_END_MARKER)[0]
    assert "#### Fleet (Redis)" in fleet_section
    assert "| McpApp req/s, Redis / in-memory, one uvicorn worker | Server | >= 0.9x |" in fleet_section
    assert "python -m benchmarks.run --scenarios none --fleet" in fleet_section
    report.write_docs(fleet_run, tmp_path)  # a second run replaces the section, never stacks it
    assert page.read_text() == after
