"""Paired ratios (`benchmarks.paired`) and the interleaved rounds of `benchmarks.run` that feed them.

The pure part runs on made-up per-round records: a drift that moves both cells of a round together,
with a transient that hits one cell in one round, must give the true ratio, where the quotient of the
two cells' medians does not. The end-to-end test runs the harness for a fraction of a second per cell
(its figures are noise; what must hold is the shape: every cell once per round, ratios paired).
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import paired, report, run
from benchmarks.apps import SERVER_KINDS, SERVERS
from benchmarks.load import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]
TRUE_RATIO = 2.0
# Round 1 fast, round 2 slow, round 3 in between: both cells of a round see the same factor.
DRIFT = (1.25, 0.75, 1.0)


def _run(rps: float, round_no: int, **extra: Any) -> dict[str, Any]:
    """A run record with the fields `benchmarks.run.summarize` reads."""
    fields = {"requests": int(rps), "ok": int(rps), "bad": 0, "socket_errors": 0, "p50_ms": 2.0, "p99_ms": 8.0}
    return {**fields, "round": round_no, "rps": rps, "cpu_us_per_req": 100.0, **extra}


def _drifted(base: float, transient: dict[int, float] | None = None, p99_ms: float = 8.0) -> list[dict[str, Any]]:
    """One run per round at `base` req/s times the round's drift (times a transient in some rounds)."""
    hit = transient or {}
    return [_run(base * factor * hit.get(r, 1.0), r, p99_ms=p99_ms + r) for r, factor in enumerate(DRIFT, start=1)]


def _cell(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A summary cell as `benchmarks.run.summarize` makes it."""
    return run.summarize(runs)


def test_a_drift_shared_within_rounds_gives_the_true_ratio_where_medians_do_not() -> None:
    # In round 3 another process took half of what the faster server got: one cell, one round.
    fast, slow = _drifted(1000 * TRUE_RATIO, transient={3: 0.5}), _drifted(1000)
    assert paired.round_quotients(fast, slow) == pytest.approx([TRUE_RATIO, TRUE_RATIO, TRUE_RATIO / 2])
    assert paired.paired_ratio(fast, slow) == pytest.approx(TRUE_RATIO)
    # The medians come from different rounds (fast's is its round 2, slow's its round 3), so their
    # quotient mixes one round's drift with another's.
    medians = _cell(fast)["rps"] / _cell(slow)["rps"]
    assert medians == pytest.approx(1500 / 1000)
    assert abs(medians - TRUE_RATIO) > 0.4


def test_the_verdicts_and_the_table_pair_per_round_when_the_runs_are_there() -> None:
    uvicorn = {"mcpapp": _drifted(1000), "sdk": _drifted(300)}
    builtin = {"mcpapp": _drifted(1000 * TRUE_RATIO, transient={3: 0.5}, p99_ms=5.0)}
    runs = {"builtin": {"legacy-json": builtin}, "uvicorn": {"legacy-json": uvicorn}}
    summary = {
        server: {sc: {impl: _cell(records) for impl, records in cells.items()} for sc, cells in scenarios.items()}
        for server, scenarios in runs.items()
    }
    found = {(v.target, v.scenario, v.kind): v for v in report.verdicts(summary, runs)}
    over_uvicorn = found[("McpApp req/s, built-in asyncio / uvicorn", "legacy-json", "lowlevel")]
    assert over_uvicorn.value == pytest.approx(TRUE_RATIO)
    over_sdk = found[("McpApp / SDK, uvicorn", "legacy-json", "lowlevel")]
    assert over_sdk.value == pytest.approx(1000 / 300)
    # Without the per-run records (an older results file) the ratio is the quotient of the medians.
    unpaired = {(v.target, v.scenario, v.kind): v for v in report.verdicts(summary)}
    assert unpaired[("McpApp req/s, built-in asyncio / uvicorn", "legacy-json", "lowlevel")].value == pytest.approx(1.5)
    # The p99 target stays on the cells' medians (p99 of 6, 7, 8 ms against 9, 10, 11).
    p99 = found[("McpApp p99 ms, built-in asyncio vs uvicorn", "legacy-json", "lowlevel")]
    assert (p99.value, p99.reference, p99.met) == (7.0, 10.0, True)
    rendered = report.render_markdown({"summary": summary, "runs": runs})
    assert "| uvicorn | legacy-json | Server | 1 000 (750-1 250) | 300 (225-375) | - | 3.33 | - |" in rendered
    assert "| McpApp req/s, built-in asyncio / uvicorn | Server | >= 0.8x | not measured | 2.00x **met** |" in rendered


def test_rounds_without_a_partner_or_with_errors_give_no_quotient() -> None:
    a = [_run(2000, 1), _run(2000, 2, bad=1), _run(2000, 3), {"rps": 2000, "ok": 1, "bad": 0, "socket_errors": 0}]
    b = [_run(1000, 1), _run(1000, 2), _run(500, 4)]
    assert paired.rates_by_round(a) == {1: 2000.0, 3: 2000.0}
    assert paired.round_quotients(a, b) == [2.0]  # round 2: a had errors; 3 and 4: one side only
    assert paired.paired_ratio(a, [_run(1000, 9)]) is None
    churn = [_run(900, 1, churns_per_s=300)]
    assert paired.paired_ratio(churn, [_run(450, 1, churns_per_s=100)]) == pytest.approx(3.0)  # churns/s, not req/s


def test_a_cell_with_errors_has_no_ratio_even_where_rounds_pair() -> None:
    good, broken = _drifted(1000), [*_drifted(1000)[:2], _run(1000, 3, bad=2)]
    summary = {"uvicorn": {"legacy-json": {"mcpapp": _cell(good), "sdk": _cell(broken)}}}
    runs = {"uvicorn": {"legacy-json": {"mcpapp": good, "sdk": broken}}}
    assert summary["uvicorn"]["legacy-json"]["sdk"]["status"] == "errors"
    cells = ("uvicorn", "legacy-json", "mcpapp"), ("uvicorn", "legacy-json", "sdk")
    assert paired.cell_ratio(summary, runs, *cells) is None
    assert paired.cell_ratio(summary, runs, cells[0], ("uvicorn", "legacy-json", "floor")) is None  # absent


def test_each_round_measures_every_cell_once_and_every_other_round_backwards() -> None:
    impls = {"builtin": ["mcpapp", "mcpapp-mcpserver"], "uvicorn": ["mcpapp", "sdk"]}
    first = run.round_order(["legacy-sse", "legacy-json"], impls, 1)
    assert first == [
        ("legacy-sse", "builtin", "mcpapp"),
        ("legacy-sse", "builtin", "mcpapp-mcpserver"),
        ("legacy-sse", "uvicorn", "mcpapp"),
        ("legacy-sse", "uvicorn", "sdk"),
        ("legacy-json", "builtin", "mcpapp"),
        ("legacy-json", "builtin", "mcpapp-mcpserver"),
        ("legacy-json", "uvicorn", "mcpapp"),
        ("legacy-json", "uvicorn", "sdk"),
    ]
    assert run.round_order(["legacy-sse", "legacy-json"], impls, 2) == first[::-1]
    assert run.round_order(["legacy-sse", "legacy-json"], impls, 3) == first


def test_port_blocks_leave_room_for_every_variant_and_the_later_runs() -> None:
    everything = run.impls_for("uvicorn", list(SERVER_KINDS), ["uvicorn"], ["uvicorn"])  # the same on every server
    variants = {run.variant_for(impl, scenario) for impl in everything for scenario in SCENARIOS}
    assert len(variants) <= run.PORTS_PER_SERVER
    throughput_end = run.PORTS_PER_SERVER * len(SERVERS)
    assert throughput_end <= run.FOOTPRINT_PORT_OFFSET < run.CONNECTIONS_PORT_OFFSET < run.FLEET_PORT_OFFSET


def _free_base_port(servers: list[str], per_server: int) -> int:
    """A `--base-port` whose port blocks for `servers` (their first `per_server` ports) were free a moment ago.

    Below Linux's ephemeral range, where only an explicit bind takes a port (see test_bench_fleet).
    """
    for base in random.sample(range(20_000, 32_000 - run.FLEET_PORT_OFFSET, 10), 200):
        ports = [
            base + run.PORTS_PER_SERVER * SERVERS.index(server) + i for server in servers for i in range(per_server)
        ]
        with contextlib.ExitStack() as probes:
            try:
                for port in ports:
                    probes.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return base
    raise RuntimeError("no free port blocks")


@pytest.mark.integration
def test_a_short_run_interleaves_the_servers_and_pairs_its_ratios(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    command = [
        sys.executable, "-m", "benchmarks.run",
        "--servers", "builtin,uvicorn", "--scenarios", "legacy-json", "--mcp-server", "lowlevel",
        "--sdk-servers", "uvicorn", "--floor-servers", "none",
        "--duration", "0.3", "--rounds", "2", "--warmup", "0", "--max-other-load", "0",
        "--base-port", str(_free_base_port(["builtin", "uvicorn"], 2)),
        "--output", str(output),
    ]  # fmt: skip
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr[-3000:]
    # Round by round, every cell once; the second round backwards.
    measured = re.findall(r"^ +(\S.*?) +legacy-json +(\S+) +round (\d):", completed.stderr, re.MULTILINE)
    first = [("built-in asyncio", "mcpapp", "1"), ("uvicorn", "mcpapp", "1"), ("uvicorn", "sdk", "1")]
    assert measured == first + [(server, impl, "2") for server, impl, _ in reversed(first)]
    document: dict[str, Any] = json.loads(output.read_text())
    assert document["complete"] is True
    runs = document["runs"]
    cells = [("builtin", "mcpapp"), ("uvicorn", "mcpapp"), ("uvicorn", "sdk")]
    for server, impl in cells:
        assert [r["round"] for r in runs[server]["legacy-json"][impl]] == [1, 2]
        assert document["summary"][server]["legacy-json"][impl]["status"] == "ok"
    rates = {cell: [r["rps"] for r in runs[cell[0]]["legacy-json"][cell[1]]] for cell in cells}
    expected = statistics.median(b / u for b, u in zip(rates[cells[0]], rates[cells[1]], strict=True))
    found = {(v.target, v.scenario, v.kind): v for v in report.verdicts(document["summary"], runs)}
    assert found[("McpApp req/s, built-in asyncio / uvicorn", "legacy-json", "lowlevel")].value == pytest.approx(
        expected
    )
    assert report.render_markdown(document) == document["table_markdown"]  # a saved run renders the same


def test_the_fleet_ratios_are_paired_per_round_too() -> None:
    from benchmarks import fleet

    fleet_fields = {"load_cpu_pct": 50.0, "redis_commands": 0, "worker_cpu_shares": None}
    runs = {
        "memory": _drifted(1000),
        "redis": _drifted(950, transient={3: 0.5}),
        "redis-1w": _drifted(1000),
        "redis-2w": _drifted(1000 * TRUE_RATIO),
    }
    runs = {name: [{**fleet_fields, **record} for record in records] for name, records in runs.items()}
    cells = {name: fleet.summarize_cell(records) for name, records in runs.items()}
    paired_verdicts = {v.target: v.value for v in fleet.fleet_verdicts(cells, [], runs)}
    assert paired_verdicts["McpApp req/s, Redis / in-memory, one uvicorn worker"] == pytest.approx(0.95)
    assert paired_verdicts["McpApp req/s on Redis, two uvicorn workers / one (unpinned)"] == pytest.approx(TRUE_RATIO)
    # Without the runs (an older results file): the quotient of the medians, which the transient moves.
    medians = {v.target: v.value for v in fleet.fleet_verdicts(cells, [])}
    assert medians["McpApp req/s, Redis / in-memory, one uvicorn worker"] != pytest.approx(0.95)
