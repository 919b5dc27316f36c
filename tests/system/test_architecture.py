"""The layer rules, as import-linter contracts in pyproject.toml: they hold, and they can fail.

`./dev lint` runs the same contracts. The second test copies the package, breaks one rule in the
copy (the sans-IO core importing anyio) and checks that the contracts catch it, so a contract that
silently stopped matching anything would show here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import asgi_mcp

ROOT = Path(asgi_mcp.__file__).parent.parent
LINT_IMPORTS = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
]


def _lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LINT_IMPORTS, "--config", str(project / "pyproject.toml"), "--no-cache"],
        cwd=project,
        env={"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_layer_contracts_hold() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("_core/http.py", "import anyio", "The core is sans-IO"),
        ("_legacy/endpoint.py", "from .._modern import endpoint as _modern", "Layers"),
        ("_core/sse.py", "from .. import _app", "Layers"),
        ("_app/app.py", "import hypercorn", "Only the serving layer imports a server"),
        ("_legacy/endpoint.py", "import coredis", "Only the Redis stores import coredis"),
        ("_stores/redis/event_store.py", "from ..._app import app as _app", "Layers"),
    ],
)
def test_breaking_a_rule_fails(tmp_path: Path, module: str, line: str, contract: str) -> None:
    shutil.copytree(ROOT / "asgi_mcp", tmp_path / "asgi_mcp", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "asgi_mcp" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    broken = result.stdout[result.stdout.index("Broken contracts") :]
    assert contract in broken, result.stdout
