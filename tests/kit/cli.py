"""Run the `asgi-mcp` command as a subprocess: read its output as it comes, stop it with SIGINT."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from .processes import REPO, ProcessRun, running_process

__all__ = ["REPO", "command", "running_cli"]


def command() -> list[str]:
    """The installed `asgi-mcp` script next to this interpreter, else `python -m asgi_mcp`."""
    script = Path(sys.executable).parent / "asgi-mcp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "asgi_mcp"]


@asynccontextmanager
async def running_cli(args: Sequence[str], *, cwd: Path = REPO) -> AsyncIterator[ProcessRun]:
    async with running_process("asgi-mcp", [*command(), *args], cwd=cwd) as run:
        yield run
