"""`benchmarks.report`: the tables, targets and chart a benchmark run writes into the docs.

From a small fixed results file (tests/data/bench-results.json, shaped as `benchmarks.run` writes
it): no server, no timing. Three servers, two scenarios, both SDK server kinds, the SDK's transport
on uvicorn only, one cell with errors, memory per connection on two servers.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parents[1] / "data" / "bench-results.json"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(RESULTS.read_text())
    return loaded


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A copy of the real docs page (with its markers) under a scratch root."""
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / report.DOCS_PAGE, tmp_path / report.DOCS_PAGE)
    return tmp_path


def _verdict(found: list[report.Verdict], target: str, scenario: str, kind: str) -> report.Verdict:
    (match,) = [v for v in found if v.target.endswith(target) and v.scenario == scenario and v.kind == kind]
    return match


def test_cross_server_ratios_and_their_targets(document: dict[str, Any]) -> None:
    found = report.verdicts(document["summary"])
    over_hypercorn = _verdict(found, "built-in trio / hypercorn trio", "legacy-json", "lowlevel")
    assert over_hypercorn.value == pytest.approx(12000 / 2400)
    assert over_hypercorn.met is True
    mcpserver = _verdict(found, "built-in trio / hypercorn trio", "legacy-json", "mcpserver")
    assert mcpserver.value == pytest.approx(3.0)
    assert mcpserver.met is False
    # A cell with errors is never a figure: the ratio over it is not measured.
    assert _verdict(found, "built-in trio / hypercorn trio", "modern-json", "mcpserver").met is None
    assert _verdict(found, "built-in trio / uvicorn", "modern-json", "lowlevel").value == pytest.approx(10000 / 9800)
    # Servers the run left out: not measured, not failed.
    assert _verdict(found, "built-in asyncio / uvicorn", "legacy-json", "lowlevel").met is None
    p99 = _verdict(found, "built-in trio vs uvicorn", "modern-json", "mcpserver")
    assert (p99.value, p99.reference, p99.met) == (9.0, 8.0, False)
    sdk = _verdict(found, "McpApp / SDK, uvicorn", "modern-json", "mcpserver")
    assert sdk.value == pytest.approx(5200 / 2500)
    assert sdk.met is True


def test_markdown_reports_both_server_kinds_targets_and_memory(document: dict[str, Any]) -> None:
    rendered = report.render_markdown(document)
    assert "| built-in trio | legacy-json | Server | 12 000 (11 760-12 240) |" in rendered
    assert "| uvicorn | modern-json | MCPServer | 5 200 (5 096-5 304) | 2 500 (2 450-2 550) | - | 2.08 |" in rendered
    assert "| hypercorn trio | modern-json | MCPServer | ERRORS (3 bad, 0 socket) |" in rendered
    assert (
        "| McpApp req/s, built-in trio / hypercorn trio | MCPServer | >= 4x | not measured | 3.00x **not met** "
        "| not measured |" in rendered
    )
    assert "| McpApp p99 ms, built-in trio vs uvicorn | MCPServer | <= uvicorn's | not measured " in rendered
    assert "- Targets met: 11 of 13 measured (37 not measured in this run)." in rendered
    assert "| built-in trio | 4 100 | 15 300 |" in rendered


def test_docs_are_written_between_the_markers_only(document: dict[str, Any], site: Path) -> None:
    page = site / report.DOCS_PAGE
    before = page.read_text()
    head, tail = before.split(report.BEGIN_MARKER)[0], before.split(report.END_MARKER)[1]
    written = report.write_docs(document, site)
    assert written == [page, site / report.CHART]
    after = page.read_text()
    assert after.startswith(head + report.BEGIN_MARKER)
    assert after.endswith(report.END_MARKER + tail)
    section = after.split(report.BEGIN_MARKER)[1].split(report.END_MARKER)[0]
    assert "](img/bench.svg)" in section
    assert "code at `0123456`" in section
    assert "python -m benchmarks.run --servers builtin-trio" in section
    assert report.render_markdown(document) in section
    report.write_docs(document, site)  # a second run replaces the section, never stacks it
    assert page.read_text() == after


def test_the_chart_draws_each_measured_ratio(document: dict[str, Any], site: Path) -> None:
    report.write_docs(document, site)
    svg = ET.parse(site / report.CHART).getroot()
    assert svg.tag == f"{SVG}svg"
    texts = [element.text or "" for element in svg.iter(f"{SVG}text")]
    titles = [text for text in texts if text.startswith("McpApp")]
    assert titles == [
        "McpApp req/s per server, uvicorn = 1 (Server)",
        "McpApp req/s per server, uvicorn = 1 (MCPServer)",
        "McpApp / the SDK's own transport, same server and SDK server",
    ]
    # Relative to uvicorn: built-in trio legacy-json 12000/12500, hypercorn trio 2400/12500.
    assert {"0.96", "0.19", "1.00", "2.08", "3.12"} <= set(texts)
    assert "not measured" in texts  # hypercorn trio's MCPServer modern-json, whose cell had errors
    bars = [rect for rect in svg.iter(f"{SVG}rect") if rect.get("fill") != "#fff"]
    # 2 scenarios x (3 + 3 - 1 servers with figures) for the two server panels, 2 x 2 for McpApp / SDK.
    assert len(bars) == 2 * 3 + 2 * 3 - 1 + 4
    widths = {float(rect.get("width", "0")) for rect in bars}
    assert max(widths) <= report.BAR_W


def test_no_run_yet_gives_a_placeholder(site: Path) -> None:
    report.write_docs(None, site)
    assert "No run recorded here yet" in (site / report.DOCS_PAGE).read_text()
    svg = ET.parse(site / report.CHART).getroot()
    assert [t.text for t in svg.iter(f"{SVG}text")] == [
        "No benchmark run recorded yet (python -m benchmarks.run --docs)"
    ]


def test_a_page_without_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="bench:begin"):
        report.replace_between_markers("# Performance\n", "table")
