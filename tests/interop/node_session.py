"""A node client process that prints JSON lines (tests/interop/*.mjs) and, for the scripted clients,
reads its commands from stdin: what it printed so far, and waiting for a line of a kind.

    async with node_session(node_env, SESSION_CLIENT, url, "--token", token) as client:
        await client.command("call", tool="echo", args={"text": "x"})   # its lines, up to its "done"
        await client.seen(lambda e: e["type"] == "log", since=mark)      # the first such line from `mark` on
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.abc
from anyio.streams.text import TextReceiveStream
from node_env import NodeEnv

Event = dict[str, Any]
STOP_TIMEOUT: Final = 10.0  # for the process to exit once its stdin is closed


async def json_lines(stream: anyio.abc.ByteReceiveStream) -> AsyncIterator[Event]:
    """The JSON objects a client prints, one a line, as they come."""
    buffered = ""
    async for chunk in TextReceiveStream(stream):
        buffered += chunk
        *complete, buffered = buffered.split("\n")
        for line in complete:
            if line.strip():
                yield json.loads(line)


class NodeSession:
    """What a running client printed (`events`), and its commands (one JSON object a line on its stdin)."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.events: list[Event] = []
        self.stderr = ""
        self._changed = anyio.Event()
        self._ended = False
        self._sequence = 0

    async def read(self) -> None:
        assert self.process.stdout is not None
        try:
            async for event in json_lines(self.process.stdout):
                self.events.append(event)
                self._changed.set()
        finally:
            self._ended = True
            self._changed.set()

    async def read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for chunk in TextReceiveStream(self.process.stderr):
            self.stderr += chunk

    def of(self, kind: str, *, since: int = 0) -> list[Event]:
        return [e for e in self.events[since:] if e["type"] == kind]

    async def seen(self, predicate: Callable[[Event], bool], *, since: int = 0) -> Event:
        """The first line from index `since` on that `predicate` accepts, once it is printed."""
        checked = since
        while True:
            for event in self.events[checked:]:
                if predicate(event):
                    return event
            checked = len(self.events)
            if self._ended:
                raise AssertionError(f"the client ended without printing the line awaited:\n{self}")
            self._changed = anyio.Event()
            await self._changed.wait()

    async def command(self, op: str, **fields: Any) -> list[Event]:
        """Run one command; its lines (what the client printed meanwhile) up to its "done"."""
        self._sequence += 1
        sequence, mark = self._sequence, len(self.events)
        assert self.process.stdin is not None
        await self.process.stdin.send((json.dumps({"seq": sequence, "op": op, **fields}) + "\n").encode())
        end = await self.seen(lambda e: e["type"] in ("done", "failed") and e.get("seq") == sequence, since=mark)
        assert end["type"] == "done", f"{op} {fields} failed: {end}\n{self}"
        return self.events[mark : self.events.index(end)]

    def __str__(self) -> str:
        lines = "\n".join(json.dumps(e) for e in self.events)
        return f"exit {self.process.returncode}\n--- stdout\n{lines}\n--- stderr\n{self.stderr}"


@asynccontextmanager
async def node_session(env: NodeEnv, script: Path, *arguments: str) -> AsyncIterator[NodeSession]:
    """`node script arguments...`, its output read as it comes; on exit its stdin is closed and it is
    awaited (killed if it does not end within STOP_TIMEOUT)."""
    async with await anyio.open_process([env.node, str(script), *arguments], env=env.env()) as process:
        session = NodeSession(process)
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.read)
            tg.start_soon(session.read_stderr)
            try:
                yield session
            finally:
                assert process.stdin is not None
                await process.stdin.aclose()
                with anyio.move_on_after(STOP_TIMEOUT, shield=True) as waited:
                    await process.wait()
                if waited.cancelled_caught:
                    process.kill()
