"""Paired ratios: one cell's rate over another's, round by round, then the median of those quotients.

The machine's speed drifts (on a shared 2-core VM, +-25% over tens of seconds), so the quotient of
two cells' medians, each taken over rounds measured at different times, is partly drift. The
harness (`benchmarks.run`) measures every cell once per round, cells compared with each other close
together in time, so a quotient within one round sees the same drift on both sides; the median over
rounds of those quotients is the ratio reported. A round in which either cell had a bad response or
socket error, or no rate, gives no quotient.

Pure functions over the per-run records `benchmarks.run` stores (`runs` in its JSON: server ->
scenario -> implementation -> one record per round, each with its `round` number).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any


def run_rate(run: Mapping[str, Any]) -> float | None:
    """A run's rate (churns/s for session churn, else req/s), or None if it had errors or no rate."""
    if run.get("bad") or run.get("socket_errors") or not run.get("ok", 1):
        return None
    value = run.get("churns_per_s", run.get("rps"))
    return float(value) if value else None


def rates_by_round(runs: Iterable[Mapping[str, Any]]) -> dict[int, float]:
    """Round number -> rate, for the runs that have both (a run without a round number cannot be paired)."""
    found: dict[int, float] = {}
    for run in runs:
        rate, round_no = run_rate(run), run.get("round")
        if rate is not None and isinstance(round_no, int):
            found[round_no] = rate
    return found


def round_quotients(numerator: Iterable[Mapping[str, Any]], denominator: Iterable[Mapping[str, Any]]) -> list[float]:
    """The quotient of the two cells' rates in each round both were measured in, by round number."""
    above, below = rates_by_round(numerator), rates_by_round(denominator)
    return [above[r] / below[r] for r in sorted(above.keys() & below.keys())]


def paired_ratio(numerator: Iterable[Mapping[str, Any]], denominator: Iterable[Mapping[str, Any]]) -> float | None:
    """The median over rounds of the per-round quotients; None if no round has both cells."""
    quotients = round_quotients(numerator, denominator)
    return statistics.median(quotients) if quotients else None


Cell = tuple[str, str, str]  # (server, scenario, implementation), e.g. ("uvicorn", "legacy-json", "mcpapp")


def _ok_cell(summary: Mapping[str, Any], cell: Cell) -> Mapping[str, Any] | None:
    server, scenario, impl = cell
    found: Mapping[str, Any] | None = summary.get(server, {}).get(scenario, {}).get(impl)
    return found if found is not None and found.get("status") == "ok" else None


def cell_ratio(
    summary: Mapping[str, Any], runs: Mapping[str, Any] | None, numerator: Cell, denominator: Cell
) -> float | None:
    """One cell's rate over another's, paired per round; None unless both cells were measured without errors.

    `runs` None (a results file without per-run records) falls back to the quotient of the cells'
    median rates from `summary`: the best such a file allows, and no longer paired.
    """
    above, below = _ok_cell(summary, numerator), _ok_cell(summary, denominator)
    if above is None or below is None:
        return None
    if runs is None:
        rate_above, rate_below = run_rate(above), run_rate(below)
        return rate_above / rate_below if rate_above is not None and rate_below else None

    def records(cell: Cell) -> list[Mapping[str, Any]]:
        server, scenario, impl = cell
        found: list[Mapping[str, Any]] = runs.get(server, {}).get(scenario, {}).get(impl, [])
        return found

    return paired_ratio(records(numerator), records(denominator))
