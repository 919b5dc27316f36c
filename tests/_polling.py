"""Waiting on observable state without sleeping: bounded, checkpoint-driven polling."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel


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
