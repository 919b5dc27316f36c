"""House rules of the package, checked: a sans-IO core, a curated public surface, no framework."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import asgi_mcp

PACKAGE = Path(asgi_mcp.__file__).parent

# The protocol core: pure functions and state over headers, bytes, messages and `now`. Only the
# shell (_app, _legacy, _modern, _dispatch, _streams, ...) awaits anything.
SANS_IO_MODULES = (
    "_http",
    "_sse",
    "_jsonrpc",
    "_state",
    "_registry",
    "_security",
    "_cors",
    "_errors",
    "_tenancy",
)
IO_LIBRARIES = {"anyio", "asyncio", "trio", "socket", "time"}


def _imported_roots(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", SANS_IO_MODULES)
def test_core_module_does_no_io(module: str) -> None:
    assert not (_imported_roots(module) & IO_LIBRARIES), f"asgi_mcp.{module} must stay sans-IO"


def test_no_module_imports_starlette() -> None:
    for path in PACKAGE.glob("*.py"):
        assert "starlette" not in _imported_roots(path.stem), f"{path.name} imports starlette"


def test_public_names_are_exported_and_named_publicly() -> None:
    assert sorted(asgi_mcp.__all__) == sorted(set(asgi_mcp.__all__)), "duplicate names in __all__"
    for name in asgi_mcp.__all__:
        obj = getattr(asgi_mcp, name)
        if isinstance(obj, type):
            assert obj.__module__ == "asgi_mcp", f"{name} shows a private module in its repr"


def test_every_module_is_private() -> None:
    for info in pkgutil.iter_modules([str(PACKAGE)]):
        assert info.name.startswith("_"), f"asgi_mcp.{info.name} should be private behind __init__"
        if info.name != "__main__":  # `python -m asgi_mcp` runs the CLI on import
            importlib.import_module(f"asgi_mcp.{info.name}")
