"""House rules of the package, checked: a curated public surface, private layers, no framework.

The layer rules themselves (a sans-IO core, eras independent, ...) are import-linter contracts:
tests/system/test_architecture.py.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import asgi_mcp

PACKAGE = Path(asgi_mcp.__file__).parent


def test_public_names_are_exported_and_named_publicly() -> None:
    assert sorted(asgi_mcp.__all__) == sorted(set(asgi_mcp.__all__)), "duplicate names in __all__"
    for name in asgi_mcp.__all__:
        obj = getattr(asgi_mcp, name)
        if isinstance(obj, type):
            assert obj.__module__ == "asgi_mcp", f"{name} shows a private module in its repr"


def test_every_module_is_private() -> None:
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="asgi_mcp."):
        top = info.name.split(".")[1]
        assert top.startswith("_"), f"{info.name} should be private behind __init__"
        if info.name != "asgi_mcp.__main__":  # `python -m asgi_mcp` runs the CLI on import
            importlib.import_module(info.name)
