"""The documentation site builds with warnings as errors, and its API reference covers `__all__`.

The build is what `nox -s docs` runs: MkDocs + Material + mkdocstrings, `--strict`, so a broken
link or anchor, a page missing from the nav, or a docstring mkdocstrings cannot parse fails here.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

import asgi_mcp

ROOT: Final = Path(__file__).resolve().parents[2]
CONFIG: Final = ROOT / "mkdocs.yml"
API_PAGE: Final = ROOT / "docs" / "api.md"
DOCS_MODULES: Final = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
TIMEOUT: Final = 300.0


def _missing_docs_tools() -> list[str]:
    missing: list[str] = []
    for name in DOCS_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def test_docs_build_strict(tmp_path: Path) -> None:
    missing = _missing_docs_tools()
    if missing:
        pytest.skip(f"docs tools not installed ({', '.join(missing)}); `nox -s tests` installs them from TEST_DEPS")
    site = tmp_path / "site"
    args = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(CONFIG), "--site-dir", str(site)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    # An unrelated working directory: the build must not depend on where it is started from.
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed (exit {proc.returncode}):\n{output}"
    assert "WARNING" not in output, output
    assert (site / "index.html").is_file()
    assert (site / "api" / "index.html").is_file()


def test_api_reference_documents_exactly_the_public_names() -> None:
    documented = re.findall(r"^::: asgi_mcp\.(\w+)\s*$", API_PAGE.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert len(documented) == len(set(documented)), "a name is documented twice"
    assert set(documented) == set(asgi_mcp.__all__)
