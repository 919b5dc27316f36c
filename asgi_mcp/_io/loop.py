"""The running event loop's services, resolved once per run instead of once per call.

anyio's module-level helpers (`anyio.CancelScope()`, `anyio.current_time()`,
`anyio.lowlevel.checkpoint_if_cancelled()`) look the running backend up on every call; on the
per-request path that lookup was about a tenth of a legacy request's server time under uvloop.

On Trio the request path's cancel scopes are Trio's own: anyio's wraps one in an object of its
own (about 11,000 instructions a scope, and an SSE answer takes two), and the request path needs
nothing of it that Trio's lacks (`CancelScope`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import anyio
import anyio.abc
import anyio.lowlevel

__all__: list[str] = []


class CancelScope(Protocol):
    """What the request path uses of a cancel scope; anyio's and Trio's both have it."""

    @property
    def cancel_called(self) -> bool: ...

    def cancel(self) -> None: ...

    def __enter__(self) -> object: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None, /
    ) -> bool: ...  # (True: it caught its own cancellation; type checkers must know it can)


class CancelScopeFactory(Protocol):
    def __call__(self, *, shield: bool = ...) -> CancelScope: ...


@dataclass(frozen=True, slots=True)
class Loop:
    backend: type[anyio.abc.AsyncBackend]
    clock: Callable[[], float]  # what `anyio.current_time` returns
    cancel_scope: CancelScopeFactory  # for the request path (see the module's docstring)
    cancelled: type[BaseException]  # the backend's cancellation exception
    trio: bool = False  # the loop is Trio's (else asyncio's)

    @classmethod
    def current(cls) -> Loop:
        """The services of the running loop; valid for this run only."""
        backend = anyio.lowlevel.current_token().backend_class
        try:
            clock = asyncio.get_running_loop().time
        except RuntimeError:
            # Not asyncio: Trio. Its run's clock itself (a test's mock clock too), read without
            # `trio.current_time`'s lookup of the run on every call (anyio's looks the backend up too).
            import trio

            clock = trio.lowlevel.current_clock().current_time
            return cls(backend, clock, trio.CancelScope, trio.Cancelled, trio=True)
        return cls(backend, clock, backend.create_cancel_scope, asyncio.CancelledError)
