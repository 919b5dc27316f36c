"""Child processes of the tests (the `asgi-mcp` command, granian, the fleet's workers): their output read
as it comes, waiting for what they print, stopping them with SIGINT or killing them; whatever is left
running is killed when the test leaves them."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, NoReturn

import anyio
import anyio.abc
import pytest

REPO: Final = Path(__file__).resolve().parents[2]
URL: Final = re.compile(r"http://127\.0\.0\.1:(\d+)(/[^\s)]*)")
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 15.0


def not_installed(missing: str, *, how: str = ".ci/run installs it") -> NoReturn:
    """A program a test needs is `missing`: skipped on a developer machine, a failure under CI (`CI` set),
    which must have it (`how` says how it gets it)."""
    if os.environ.get("CI"):
        pytest.fail(f"{missing}; CI must have it ({how})")
    pytest.skip(missing)


class ProcessRun:
    """The output of a running child process, collected as it arrives (stderr into `stdout` when merged)."""

    def __init__(self, name: str, process: anyio.abc.Process, *, own_group: bool) -> None:
        self.name = name
        self.process = process
        self.own_group = own_group
        self.stdout = ""
        self.stderr = ""
        self.closed = False
        self._changed = anyio.Event()

    async def collect(self, stream: anyio.abc.ByteReceiveStream, which: str) -> None:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):  # closed on the way out
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
                assert not self.closed, f"{self.name} ended early:\n{self}"
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

    def kill(self) -> None:
        """SIGKILL; to the whole process group when it has one of its own (a server's serving children
        would outlive their parent, listening, after the test)."""
        with contextlib.suppress(ProcessLookupError):
            if self.own_group:
                os.killpg(self.process.pid, signal.SIGKILL)
            else:
                self.process.kill()

    async def crash(self) -> None:
        """SIGKILL, and wait until it is gone (its port refuses connections from then on)."""
        self.kill()
        await self.process.wait()

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
        return f"--- {self.name} stdout\n{self.stdout}\n--- {self.name} stderr\n{self.stderr}"


@asynccontextmanager
async def running_process(
    name: str,
    command: Sequence[str],
    *,
    cwd: Path = REPO,
    env: Mapping[str, str] | None = None,
    merge_stderr: bool = False,
    own_group: bool = False,
) -> AsyncIterator[ProcessRun]:
    """`command` started, its output collected; on the way out it is killed (its process group with
    `own_group`) if still running, and awaited. If anything failed, what it printed goes to stderr."""
    process = await anyio.open_process(
        list(command),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        start_new_session=own_group,
    )
    run = ProcessRun(name, process, own_group=own_group)
    try:
        async with process, anyio.create_task_group() as tg:
            assert process.stdout is not None
            tg.start_soon(run.collect, process.stdout, "stdout")
            if process.stderr is not None:
                tg.start_soon(run.collect, process.stderr, "stderr")
            try:
                yield run
            finally:
                if own_group or process.returncode is None:
                    run.kill()
    except BaseException:
        sys.stderr.write(str(run))
        raise
