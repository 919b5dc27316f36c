"""Summarize one conformance run from the `checks.json` files under its `-o` output directory.

    python tests/conformance/summarize.py OUTPUT_DIR [--label LABEL]

The suite writes `<OUTPUT_DIR>/server-<scenario>-<timestamp>/checks.json`, a list of checks with a
`status` of SUCCESS, FAILURE, WARNING, INFO or SKIPPED. A scenario passes when none of its checks
failed (warnings are counted, not failed, as the suite itself does). Prints one summary line plus
one line per failed or warning check; exits 1 on any failure or warning, or when no results exist.
Standard library only, so CI can run it with any Python 3.
"""

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

_RESULT_DIR = re.compile(r"^(?:server-)?(?P<scenario>.+?)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")


def _scenario_name(result_dir: Path) -> str:
    match = _RESULT_DIR.match(result_dir.name)
    return match.group("scenario") if match else result_dir.name


def summarize(output_dir: Path, label: str) -> int:
    statuses: Counter[str] = Counter()
    scenarios: dict[str, bool] = {}
    problems: list[str] = []
    for checks_file in sorted(output_dir.glob("*/checks.json")):
        scenario = _scenario_name(checks_file.parent)
        checks = json.loads(checks_file.read_text(encoding="utf-8"))
        passed = True
        for check in checks:
            status = str(check.get("status", "UNKNOWN"))
            statuses[status] += 1
            if status in ("FAILURE", "WARNING"):
                passed = passed and status != "FAILURE"
                message = " ".join(str(check.get("errorMessage") or check.get("description") or "").split())
                problems.append(f"    {status:<7} {scenario} / {check.get('id')}: {message[:200]}")
        scenarios[scenario] = scenarios.get(scenario, True) and passed

    extra = ", ".join(
        f"{statuses[s]} {s.lower()}" for s in sorted(statuses) if s not in ("SUCCESS", "FAILURE", "WARNING")
    )
    print(
        f"{label}: scenarios {sum(scenarios.values())}/{len(scenarios)} passed; "
        f"checks {statuses['SUCCESS']} passed, {statuses['FAILURE']} failed, {statuses['WARNING']} warnings"
        + (f" ({extra})" if extra else "")
    )
    for line in problems:
        print(line)
    if not scenarios:
        print(f"    no checks.json found under {output_dir}")
        return 1
    return 1 if statuses["FAILURE"] or statuses["WARNING"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--label", default=None, help="name printed in front of the summary line")
    args = parser.parse_args(argv)
    return summarize(args.output_dir, args.label or args.output_dir.name)


if __name__ == "__main__":
    sys.exit(main())
