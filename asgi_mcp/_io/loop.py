"""The running event loop's services, resolved once per run instead of once per call.

anyio's module-level helpers (`anyio.CancelScope()`, `anyio.current_time()`,
`anyio.lowlevel.checkpoint_if_cancelled()`) look the running backend up on every call; on the
per-request path that lookup was about a tenth of a legacy request's server time under uvloop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import anyio.abc
import anyio.lowlevel

__all__: list[str] = []


@dataclass(frozen=True, slots=True)
class Loop:
    backend: type[anyio.abc.AsyncBackend]
    clock: Callable[[], float]  # what `anyio.current_time` returns

    @classmethod
    def current(cls) -> Loop:
        """The services of the running loop; valid for this run only."""
        backend = anyio.lowlevel.current_token().backend_class
        try:
            clock = asyncio.get_running_loop().time
        except RuntimeError:
            # Not asyncio: Trio, whose own clock function reads a test's mock clock too (anyio's
            # looks the backend up on every call).
            import trio

            clock = trio.current_time
        return cls(backend, clock)
