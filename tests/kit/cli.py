"""Run the `asgi-mcp` command as a subprocess: read its output as it comes, stop it with SIGINT."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.abc

REPO: Final = Path(__file__).resolve().parents[2]
URL: Final = re.compile(r"http://127\.0\.0\.1:(\d+)(/[^\s)]*)")
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 15.0


def command() -> list[str]:
    """The installed `asgi-mcp` script next to this interpreter, else `python -m asgi_mcp`."""
    script = Path(sys.executable).parent / "asgi-mcp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "asgi_mcp"]


class CliRun:
    """The output of a running `asgi-mcp` process, collected as it arrives."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.stdout = ""
        self.stderr = ""
        self.closed = False
        self._changed = anyio.Event()

    async def collect(self, stream: anyio.abc.ByteReceiveStream, which: str) -> None:
        async for chunk in stream:
            setattr(self, which, getattr(self, which) + chunk.decode(errors="replace"))
            self._notify()
        if which == "stdout":
            self.closed = True
            self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def wait_for(self, predicate: Callable[[str], bool], *, within: float = START_TIMEOUT) -> None:
        """Until `predicate(stdout)` holds; fails if the process closed its output first."""
        with anyio.fail_after(within):
            while not predicate(self.stdout):
                assert not self.closed, f"asgi-mcp ended early:\n{self}"
                await self._changed.wait()

    async def url(self) -> str:
        await self.wait_for(lambda out: URL.search(out) is not None)
        match = URL.search(self.stdout)
        assert match is not None
        return match.group(0)

    async def stop(self) -> int:
        """SIGINT, as Ctrl-C sends; returns the exit status."""
        self.process.send_signal(signal.SIGINT)
        with anyio.fail_after(STOP_TIMEOUT):
            return await self.process.wait()

    def json_blocks(self) -> list[Any]:
        """Every JSON object printed at the start of a line (the demo's client configurations)."""
        decoder = json.JSONDecoder()
        blocks: list[Any] = []
        text = self.stdout
        for match in re.finditer(r"^\{", text, flags=re.MULTILINE):
            value, _ = decoder.raw_decode(text, match.start())
            blocks.append(value)
        return blocks

    def __str__(self) -> str:
        return f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


@asynccontextmanager
async def running_cli(args: Sequence[str], *, cwd: Path = REPO) -> AsyncIterator[CliRun]:
    process = await anyio.open_process(
        [*command(), *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    run = CliRun(process)
    try:
        async with process, anyio.create_task_group() as tg:
            assert process.stdout is not None
            assert process.stderr is not None
            tg.start_soon(run.collect, process.stdout, "stdout")
            tg.start_soon(run.collect, process.stderr, "stderr")
            try:
                yield run
            finally:
                if process.returncode is None:
                    process.kill()
    except BaseException:
        # Whatever failed, show what the process said.
        sys.stderr.write(str(run))
        raise
