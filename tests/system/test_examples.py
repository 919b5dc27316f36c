"""Every example runs standalone (on asyncio and on Trio), exercises itself, and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

pytestmark = pytest.mark.integration

EXAMPLES_DIR: Final = Path(__file__).resolve().parents[2] / "examples"
EXAMPLES: Final = (
    "simple_multi_tenant.py",
    "runtime_token_management.py",
    "role_based_access.py",
    "enterprise_onboarding.py",
)
TIMEOUT: Final = 120.0


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("example", EXAMPLES)
def test_example_runs_and_exits_zero(example: str, backend: str, tmp_path: Path) -> None:
    args = [sys.executable, str(EXAMPLES_DIR / example), *(["--trio"] if backend == "trio" else [])]
    # An unrelated working directory: the example must not depend on where it is started from.
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
