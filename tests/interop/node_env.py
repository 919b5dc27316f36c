"""Pinned Node.js packages for the interop tests, installed once into a user cache.

    from node_env import ensure_node_env
    env = ensure_node_env()          # installs on first use, offline afterwards
    env.node, env.node_modules, env.sdk, env.inspector_cli

The packages go to ``${ASGI_MCP_NODE_CACHE:-~/.cache/asgi-mcp-node}/interop`` with
``npm install --no-audit --no-fund``. A later call finds every pinned ``package.json`` at its
pinned version and runs no npm at all, so it works offline. Installs are serialized with a file
lock, so parallel test processes do not race. A missing ``node``/``npm`` raises `NodeUnavailable`
with a clear message (tests turn it into a skip or a failure as they see fit).

Run as a script to install (or just print) the paths: ``python tests/interop/node_env.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["PACKAGES", "NodeEnv", "NodeUnavailable", "cache_dir", "ensure_node_env"]

# Exact versions: the interop expectations were verified against these.
PACKAGES: Final[Mapping[str, str]] = {
    "@modelcontextprotocol/sdk": "1.32.2",
    "@modelcontextprotocol/inspector-cli": "1.0.3",
}
NPM_INSTALL_TIMEOUT: Final = 600.0


class NodeUnavailable(RuntimeError):
    """Node.js or npm is missing, or the pinned packages could not be installed."""


@dataclass(frozen=True)
class NodeEnv:
    root: Path  # the cache folder holding package.json and node_modules/
    node: str  # absolute path of the node executable
    node_modules: Path
    sdk: Path  # node_modules/@modelcontextprotocol/sdk
    inspector_cli: Path  # build/index.js (the package's `bin` is a launcher that needs a target)

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for `node tests/interop/client.mjs`: tells it where the SDK lives."""
        out = dict(os.environ if base is None else base)
        out["ASGI_MCP_NODE_MODULES"] = str(self.node_modules)
        return out


def cache_dir() -> Path:
    base = os.environ.get("ASGI_MCP_NODE_CACHE") or "~/.cache/asgi-mcp-node"
    return Path(base).expanduser() / "interop"


def _installed_version(node_modules: Path, name: str) -> str | None:
    try:
        manifest = json.loads((node_modules / name / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    version = manifest.get("version") if isinstance(manifest, dict) else None
    return version if isinstance(version, str) else None


def _missing(node_modules: Path) -> list[str]:
    return [
        f"{name}@{version}" for name, version in PACKAGES.items() if _installed_version(node_modules, name) != version
    ]


@contextmanager
def _install_lock(root: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, installs are still idempotent
        yield
        return
    with open(root / ".install.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _which(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise NodeUnavailable(
            f"{tool!r} was not found on PATH: the interop tests need Node.js (>= 18) and npm "
            f"(e.g. `apt-get install nodejs npm`)"
        )
    return path


def ensure_node_env() -> NodeEnv:
    """Install the pinned packages once (no-op when present) and return their paths."""
    node = _which("node")
    root = cache_dir()
    node_modules = root / "node_modules"
    if _missing(node_modules):
        npm = _which("npm")
        root.mkdir(parents=True, exist_ok=True)
        with _install_lock(root):
            missing = _missing(node_modules)  # another process may have installed meanwhile
            if missing:
                manifest = root / "package.json"
                if not manifest.exists():
                    manifest.write_text(
                        json.dumps({"name": "asgi-mcp-interop", "private": True, "type": "module"}, indent=2) + "\n",
                        encoding="utf-8",
                    )
                cmd = [npm, "install", "--no-audit", "--no-fund", "--save-exact", *missing]
                try:
                    proc = subprocess.run(
                        cmd, cwd=root, capture_output=True, text=True, timeout=NPM_INSTALL_TIMEOUT, check=False
                    )
                except subprocess.TimeoutExpired as exc:
                    msg = f"`{' '.join(cmd)}` timed out after {NPM_INSTALL_TIMEOUT:.0f}s in {root}"
                    raise NodeUnavailable(msg) from exc
                still = _missing(node_modules)
                if proc.returncode != 0 or still:
                    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
                    raise NodeUnavailable(
                        f"`{' '.join(cmd)}` in {root} failed (exit {proc.returncode}); still missing: "
                        f"{', '.join(still) or 'none'}\n{tail}"
                    )
    inspector = node_modules / "@modelcontextprotocol" / "inspector-cli" / "build" / "index.js"
    return NodeEnv(
        root=root,
        node=node,
        node_modules=node_modules,
        sdk=node_modules / "@modelcontextprotocol" / "sdk",
        inspector_cli=inspector,
    )


if __name__ == "__main__":
    try:
        found = ensure_node_env()
    except NodeUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    for field in ("root", "node", "node_modules", "sdk", "inspector_cli"):
        print(f"{field}: {getattr(found, field)}")
