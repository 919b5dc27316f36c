"""A task outside every task group, and the identity of the running event loop.

The one-call server runs in a task of its own so that any task of the event loop can stop it: no
cancel scope of the server is ever entered by one task and left by another. anyio offers no such
task by design; these two functions are the only places that reach past it to asyncio or Trio.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable

from .hypercorn import running_backend

__all__: list[str] = []

# asyncio keeps only weak references to tasks: these are held until they end.
_detached: set[asyncio.Task[None]] = set()


def current_event_loop() -> object:
    """The running asyncio loop or Trio run (its token); None outside both."""
    if running_backend() == "trio":
        import trio

        return trio.lowlevel.current_trio_token()
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def spawn_detached(task: Callable[[], Awaitable[None]], *, name: str) -> None:
    """Run `task` in the current event loop, outside the caller's task groups and cancel scopes.

    It is cancelled when the event loop ends, as any task is. Under Trio it is a system task, whose
    exceptions would crash the run: `task` must let none through but cancellation.
    """
    if running_backend() == "trio":
        import trio

        trio.lowlevel.spawn_system_task(task, name=name, context=contextvars.copy_context())
        return
    detached = asyncio.get_running_loop().create_task(_coroutine_of(task), name=name)
    _detached.add(detached)
    detached.add_done_callback(_detached.discard)


async def _coroutine_of(task: Callable[[], Awaitable[None]]) -> None:
    await task()
