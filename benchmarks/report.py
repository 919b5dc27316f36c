"""The benchmark's report: throughput table, the targets of issue 14, memory, and an SVG chart.

`benchmarks.run` renders its results with `render_markdown` and, with `--docs`, writes them into the
documentation with `write_docs`: the Markdown between `<!-- bench:begin -->` and `<!-- bench:end -->`
in docs/performance.md, the chart to docs/img/bench.svg (hand-written SVG, no plotting library). The
same from a saved results file:

    python -m benchmarks.report [benchmarks/results/latest.json] [--docs]

Targets of issue 14 (McpApp everywhere; each for every SDK server kind measured, `Server` and `MCPServer`):

* cross-server, in the scenarios legacy-sse, legacy-json and modern-json, McpApp's req/s on one server
  over McpApp's on another: built-in Trio (httptools) >= 4x hypercorn's Trio worker and >= 0.9x uvicorn
  (uvloop + httptools); built-in Trio with h11 only >= 2.5x hypercorn's Trio worker; built-in asyncio
  (httptools), on asyncio's own loop and on uvloop, >= 0.8x uvicorn;
* McpApp's p99 at the run's connection count (32 by default) on the built-in server (asyncio, uvloop
  and Trio) no worse than on uvicorn;
* McpApp over the SDK's own transport on uvicorn: >= 3x on legacy JSON (low-level `Server`), >= 2x on
  modern JSON (`MCPServer`).

A target whose cells the run did not measure (or measured with errors) reads "not measured".

Every ratio (the req/s targets, McpApp over the SDK, the table's McpApp/SDK and McpApp/floor
columns, the chart) is paired per round (`benchmarks.paired`): the median over rounds of the two
cells' quotient within each round, which `benchmarks.run` measures close together in time, not the
quotient of the cells' medians, which the machine's drift between rounds would move. The p99 target
stays on the cells' medians (p99 over the rounds, ours vs uvicorn's). A results file without the
per-run records (`runs`) falls back to the quotient of the medians.

With `--fleet` (`benchmarks.fleet`), the targets of issue 13 join the table (legacy JSON on Redis over
in-memory on one worker >= 0.9x; two workers over one >= 1.6x; Redis round trips: none per request on
the worker holding the session, at most one for an adopted session's first request), and the "Fleet
(Redis)" tables follow it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from .apps import SERVER_KINDS
from .paired import cell_ratio
from .run import KIND_LABEL, ROOT, SERVER_LABEL, impl_name, table

BEGIN_MARKER = "<!-- bench:begin -->"
END_MARKER = "<!-- bench:end -->"
# The fleet's tables (`--fleet`) have a section of their own: a fleet-only run leaves issue 14's in place.
FLEET_BEGIN_MARKER = "<!-- bench-fleet:begin -->"
FLEET_END_MARKER = "<!-- bench-fleet:end -->"
DOCS_PAGE = Path("docs") / "performance.md"
CHART = Path("docs") / "img" / "bench.svg"
ACCEPTANCE_SCENARIOS = ("legacy-sse", "legacy-json", "modern-json")
REFERENCE_SERVER = "uvicorn"  # the chart's 1.0


@dataclass(frozen=True)
class ServerTarget:
    """McpApp's req/s on `server` over McpApp's on `versus`, at least `minimum`, in each of `scenarios`."""

    server: str
    versus: str
    minimum: float
    scenarios: tuple[str, ...] = ACCEPTANCE_SCENARIOS


SERVER_TARGETS = (
    ServerTarget("builtin-trio", "hypercorn-trio", 4.0),
    ServerTarget("builtin-trio", "uvicorn", 0.9),
    ServerTarget("builtin-h11-trio", "hypercorn-trio", 2.5),
    ServerTarget("builtin", "uvicorn", 0.8),
    ServerTarget("builtin-uvloop", "uvicorn", 0.8),
)
P99_SERVERS = ("builtin-trio", "builtin", "builtin-uvloop")  # McpApp's p99 on these no worse than on uvicorn
# (server, scenario, SDK server kind, McpApp/SDK at least)
SDK_TARGETS = (("uvicorn", "legacy-json", "lowlevel", 3.0), ("uvicorn", "modern-json", "mcpserver", 2.0))


@dataclass(frozen=True)
class Verdict:
    """One target in one scenario for one SDK server kind: the measured figure, or None if not measured."""

    target: str
    scenario: str
    kind: str
    goal: str
    value: float | None
    met: bool | None
    reference: float | None = None  # p99: uvicorn's, shown next to ours
    unit: str = "x"  # after the value: "x" for a ratio, "" for a count per request


def _mcpapp(summary: dict[str, Any], server: str, scenario: str, kind: str, impl: str = "mcpapp") -> dict[str, Any]:
    cell: dict[str, Any] = summary.get(server, {}).get(scenario, {}).get(impl_name(impl, kind), {})
    return cell if cell.get("status") == "ok" else {}


def _kinds(summary: dict[str, Any]) -> list[str]:
    present = {impl for scenarios in summary.values() for cells in scenarios.values() for impl in cells}
    return [kind for kind in SERVER_KINDS if impl_name("mcpapp", kind) in present]


def verdicts(summary: dict[str, Any], runs: dict[str, Any] | None = None) -> list[Verdict]:
    """Every target against the run's summary (server -> scenario -> implementation -> cell).

    `runs` (same keys, then one record per round) pairs the ratios per round; without it they are
    quotients of the summary's medians.
    """
    kinds = _kinds(summary)
    found: list[Verdict] = []
    for target in SERVER_TARGETS:
        name = f"McpApp req/s, {SERVER_LABEL[target.server]} / {SERVER_LABEL[target.versus]}"
        for scenario in target.scenarios:
            for kind in kinds:
                mcpapp = impl_name("mcpapp", kind)
                ratio = cell_ratio(summary, runs, (target.server, scenario, mcpapp), (target.versus, scenario, mcpapp))
                met = None if ratio is None else ratio >= target.minimum
                found.append(Verdict(name, scenario, kind, f">= {target.minimum:g}x", ratio, met))
    for server in P99_SERVERS:
        for scenario in ACCEPTANCE_SCENARIOS:
            for kind in kinds:
                ours = _mcpapp(summary, server, scenario, kind).get("p99_ms")
                theirs = _mcpapp(summary, REFERENCE_SERVER, scenario, kind).get("p99_ms")
                met = None if ours is None or theirs is None else ours <= theirs
                name = f"McpApp p99 ms, {SERVER_LABEL[server]} vs {SERVER_LABEL[REFERENCE_SERVER]}"
                found.append(Verdict(name, scenario, kind, "<= uvicorn's", ours, met, theirs))
    for server, scenario, kind, minimum in SDK_TARGETS:
        ratio = cell_ratio(
            summary, runs, (server, scenario, impl_name("mcpapp", kind)), (server, scenario, impl_name("sdk", kind))
        )
        met = None if ratio is None else ratio >= minimum
        found.append(Verdict(f"McpApp / SDK, {SERVER_LABEL[server]}", scenario, kind, f">= {minimum:g}x", ratio, met))
    return found


def _fmt_verdict(v: Verdict) -> str:
    if v.met is None or v.value is None:
        return "not measured"
    figure = f"{v.value:.1f} / {v.reference:.1f}" if v.reference is not None else f"{v.value:.2f}{v.unit}"
    return f"{figure} **{'met' if v.met else 'not met'}**"


def targets_table(found: Sequence[Verdict]) -> str:
    """One row per target and SDK server kind, one column per scenario."""
    scenarios = list(dict.fromkeys(v.scenario for v in found))
    rows: dict[tuple[str, str, str], dict[str, Verdict]] = {}
    for v in found:
        rows.setdefault((v.target, v.kind, v.goal), {})[v.scenario] = v
    lines = [
        "| target | SDK server | goal | " + " | ".join(scenarios) + " |",
        "|---|---|---|" + "---|" * len(scenarios),
    ]
    for (target, kind, goal), cells in rows.items():
        shown = [_fmt_verdict(cells[sc]) if sc in cells else "" for sc in scenarios]
        lines.append(f"| {target} | {KIND_LABEL[kind]} | {goal} | " + " | ".join(shown) + " |")
    met = sum(1 for v in found if v.met)
    measured = sum(1 for v in found if v.met is not None)
    lines += ["", f"- Targets met: {met} of {measured} measured ({len(found) - measured} not measured in this run)."]
    return "\n".join(lines)


def environment_line(environment: dict[str, Any]) -> str:
    versions = environment.get("versions", {})
    shown = ", ".join(f"{name} {version}" for name, version in versions.items() if version and name != "asgi-mcp")
    code = environment.get("code") or {}
    head = (code.get("head") or "?")[:7] + (" (dirty)" if code.get("asgi_mcp_dirty") else "")
    return (
        f"Run of {environment.get('date', '?')}: Python {environment.get('python', '?')}, {shown}; "
        f"{environment.get('cpus', '?')} CPUs, load engine {environment.get('engine', '?')}, "
        f"{environment.get('rounds', '?')} rounds of {environment.get('duration_s', '?')} s, "
        f"{environment.get('connections', '?')} connections; code at `{head}`. "
        f"Command: `{environment.get('command', 'python -m benchmarks.run')}`."
    )


def render_markdown(document: dict[str, Any]) -> str:
    """Throughput, targets and memory tables of one run (what `benchmarks.run` prints)."""
    summary: dict[str, Any] = document.get("summary") or {}
    fleet: dict[str, Any] = document.get("fleet") or {}
    runs: dict[str, Any] | None = document.get("runs")
    found = verdicts(summary, runs) if summary else []
    found += [Verdict(**verdict) for verdict in fleet.get("verdicts", ())]  # issue 13's (`benchmarks.fleet`)
    parts: list[str] = [table(summary, runs)] if summary else []
    if found:
        parts.append(targets_table(found))
    for key in ("fleet", "footprint", "connections"):
        section = document.get(key)
        if section:
            parts.append(section["table_markdown"])
    return "\n\n".join(parts)


def docs_section(document: dict[str, Any] | None) -> str:
    """What goes between the markers: the chart, the run's environment and its tables (or a placeholder)."""
    if not document or not (document.get("summary") or document.get("connections")):
        return (
            "No run recorded here yet. `python -m benchmarks.run ... --docs` (see *Running it*) writes its"
            " tables here and its chart to `docs/img/bench.svg`.\n\n![Benchmark chart](img/bench.svg)"
        )
    environment = document.get("environment") or {}
    return "\n\n".join(
        [
            "![McpApp's throughput per server and scenario, relative to uvicorn; McpApp over the SDK](img/bench.svg)",
            environment_line(environment),
            render_markdown(document),
        ]
    )


def fleet_docs_section(document: dict[str, Any]) -> str:
    """What goes between the fleet markers: the run's environment, issue 13's targets, the fleet's tables."""
    fleet: dict[str, Any] = document["fleet"]
    found = [Verdict(**verdict) for verdict in fleet.get("verdicts", ())]
    environment_ = document.get("environment") or {}
    return "\n\n".join([environment_line(environment_), targets_table(found), fleet["table_markdown"]])


def replace_between_markers(
    page: str, body: str, begin_marker: str = BEGIN_MARKER, end_marker: str = END_MARKER
) -> str:
    begin, end = page.find(begin_marker), page.find(end_marker)
    if begin < 0 or end < begin:
        raise ValueError(f"the page lacks {begin_marker} ... {end_marker}")
    return page[: begin + len(begin_marker)] + "\n" + body.strip() + "\n" + page[end:]


def write_docs(document: dict[str, Any] | None, root: Path = ROOT) -> list[Path]:
    """Write the run into docs/performance.md (between the markers) and its chart; returns the paths written.

    A run with `--fleet` writes the fleet's section (between the fleet markers); one with nothing else
    (`--scenarios none --fleet`) leaves the main section and the chart as they were.
    """
    page_path, chart_path = root / DOCS_PAGE, root / CHART
    page = page_path.read_text()
    fleet = (document or {}).get("fleet")
    main = document is None or not fleet or bool(document.get("summary") or document.get("connections"))
    if main:
        page = replace_between_markers(page, docs_section(document and {**document, "fleet": None}))
    if fleet and document is not None:
        page = replace_between_markers(page, fleet_docs_section(document), FLEET_BEGIN_MARKER, FLEET_END_MARKER)
    page_path.write_text(page)
    if not main:
        return [page_path]
    chart_path.parent.mkdir(parents=True, exist_ok=True)
    chart_path.write_text(chart_svg((document or {}).get("summary") or {}, (document or {}).get("runs")))
    return [page_path, chart_path]


# -- the chart -------------------------------------------------------------------------------------

PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")
WIDTH, LABEL_W, BAR_W, ROW_H, GROUP_H, TITLE_H = 760, 250, 420, 15, 20, 30


@dataclass(frozen=True)
class Bar:
    label: str
    value: float | None  # None: not measured (drawn as a label only)
    color: str


def _panel(title: str, groups: Iterable[tuple[str, list[Bar]]], top: float) -> tuple[list[str], float]:
    """Horizontal bars grouped under headings, a dashed line at 1.0; returns the elements and the bottom."""
    groups = [(heading, bars) for heading, bars in groups if bars]
    values = [bar.value for _, bars in groups for bar in bars if bar.value is not None]
    scale = BAR_W / (max([1.0, *values]) * 1.08)
    out = [f'<text x="10" y="{top + 18:.0f}" class="title">{escape(title)}</text>']
    y = top + TITLE_H
    first = y
    for heading, bars in groups:
        out.append(f'<text x="10" y="{y + 14:.0f}" class="group">{escape(heading)}</text>')
        y += GROUP_H
        for bar in bars:
            out.append(f'<text x="{LABEL_W - 6}" y="{y + 11:.0f}" class="label">{escape(bar.label)}</text>')
            if bar.value is None:
                out.append(f'<text x="{LABEL_W + 4}" y="{y + 11:.0f}" class="value">not measured</text>')
            else:
                length = max(1.0, bar.value * scale)
                out.append(
                    f'<rect x="{LABEL_W}" y="{y + 2:.0f}" width="{length:.1f}" height="{ROW_H - 4}"'
                    f' fill="{bar.color}"/>'
                )
                out.append(
                    f'<text x="{LABEL_W + length + 4:.1f}" y="{y + 11:.0f}" class="value">{bar.value:.2f}</text>'
                )
            y += ROW_H
    one = LABEL_W + scale
    out.append(f'<line x1="{one:.1f}" y1="{first:.0f}" x2="{one:.1f}" y2="{y:.0f}" class="one"/>')
    out.append(f'<text x="{one + 3:.1f}" y="{first + 9:.0f}" class="value">1</text>')
    return out, y + 10


def _server_panels(
    summary: dict[str, Any], runs: dict[str, Any] | None
) -> list[tuple[str, list[tuple[str, list[Bar]]]]]:
    """Per SDK server kind: McpApp's rate on each server over its rate on the reference server, per scenario.

    Each bar is a paired ratio (`cell_ratio`); the reference server's own bar is 1 by definition.
    """
    servers = list(summary)
    reference = REFERENCE_SERVER if REFERENCE_SERVER in summary else (servers[0] if servers else "")
    color = {server: PALETTE[i % len(PALETTE)] for i, server in enumerate(servers)}
    scenarios = list(dict.fromkeys(sc for server in servers for sc in summary[server]))
    panels: list[tuple[str, list[tuple[str, list[Bar]]]]] = []
    for kind in SERVER_KINDS:
        groups: list[tuple[str, list[Bar]]] = []
        mcpapp = impl_name("mcpapp", kind)
        for scenario in scenarios:
            bars = [
                Bar(
                    SERVER_LABEL[server],
                    cell_ratio(summary, runs, (server, scenario, mcpapp), (reference, scenario, mcpapp)),
                    color[server],
                )
                for server in servers
                if mcpapp in summary[server].get(scenario, {})
            ]
            groups.append((scenario, bars))
        if any(bars for _, bars in groups):
            title = f"McpApp req/s per server, {SERVER_LABEL.get(reference, reference)} = 1 ({KIND_LABEL[kind]})"
            panels.append((title, groups))
    sdk_groups: list[tuple[str, list[Bar]]] = []
    for scenario in scenarios:
        bars = []
        for server in servers:
            for index, kind in enumerate(SERVER_KINDS):
                ours, theirs = _mcpapp(summary, server, scenario, kind), _mcpapp(summary, server, scenario, kind, "sdk")
                if ours and theirs:
                    label = f"{SERVER_LABEL[server]}, {KIND_LABEL[kind]}"
                    pair = (server, scenario, impl_name("mcpapp", kind)), (server, scenario, impl_name("sdk", kind))
                    bars.append(Bar(label, cell_ratio(summary, runs, *pair), PALETTE[index]))
        sdk_groups.append((scenario, bars))
    if any(bars for _, bars in sdk_groups):
        panels.append(("McpApp / the SDK's own transport, same server and SDK server", sdk_groups))
    return panels


def chart_svg(summary: dict[str, Any], runs: dict[str, Any] | None = None) -> str:
    """The chart of a run's summary (ratios paired per round with `runs`); with nothing measured, a placeholder."""
    style = (
        "<style>text{font-family:system-ui,sans-serif;font-size:11px;fill:#222}"
        ".title{font-size:13px;font-weight:600}.group{font-weight:600}.label{text-anchor:end}"
        ".value{fill:#444}.one{stroke:#888;stroke-dasharray:4 3}</style>"
    )
    body: list[str] = []
    y = 0.0
    for title, groups in _server_panels(summary, runs):
        elements, y = _panel(title, groups, y)
        body += elements
    if not body:
        body = [
            '<text x="10" y="24" class="title">No benchmark run recorded yet (python -m benchmarks.run --docs)</text>'
        ]
        y = 40.0
    height = int(y + 10)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"'
        ' role="img" aria-label="asgi_mcp benchmark ratios">'
    )
    background = f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>'
    return "\n".join([head, style, background, *body, "</svg>"]) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="?", default=ROOT / "benchmarks" / "results" / "latest.json")
    parser.add_argument("--docs", action="store_true", help="write docs/performance.md's bench section and the chart")
    args = parser.parse_args(argv)
    document = json.loads(args.results.read_text())
    print(render_markdown(document))
    if args.docs:
        for path in write_docs(document):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
