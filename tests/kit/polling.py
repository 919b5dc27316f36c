"""Waiting on observable state without sleeping: bounded, checkpoint-driven polling, and a recorder of
the app's lifecycle events that waits for them the same way."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import anyio
import anyio.lowlevel

from asgi_mcp import McpApp
from asgi_mcp._ops.lifecycle import EVENT_NAMES


async def wait_until(predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Yield to every other task until `predicate()` holds; fail after `timeout` seconds."""
    with anyio.fail_after(timeout):
        while not predicate():
            # Let every other task run until it blocks. A task that never looks blocked (uvicorn's
            # 0.1 s tick can phase-lock with asyncio's own 0.1 s re-check) must not stall the poll,
            # hence the short bound on each round.
            with anyio.move_on_after(0.05):
                await anyio.wait_all_tasks_blocked()
            await anyio.lowlevel.checkpoint()


async def let_time_pass(seconds: float) -> None:
    """Keep the event loop turning until `seconds` of clock time went by (timers fire meanwhile)."""
    deadline = anyio.current_time() + seconds
    await wait_until(lambda: anyio.current_time() >= deadline, timeout=seconds + 5.0)


class Recorder:
    """Records every event of the app (sync listeners, delivered by the hub's workers)."""

    def __init__(self, app: McpApp, names: Iterable[str] = EVENT_NAMES) -> None:
        self.events: list[Any] = []
        for name in names:
            app.on(name, self.events.append)  # type: ignore[arg-type]

    def of(self, name: str) -> list[Any]:
        return [event for event in self.events if event.name == name]

    async def wait_for(self, name: str, count: int = 1, **fields: Any) -> list[Any]:
        def matching() -> list[Any]:
            return [e for e in self.of(name) if all(getattr(e, k) == v for k, v in fields.items())]

        await wait_until(lambda: len(matching()) >= count)
        return matching()
