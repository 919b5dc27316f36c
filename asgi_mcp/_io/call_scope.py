"""A request's cancel scope when its server lends one: the scope around the app's whole call.

A legacy request runs in a cancel scope of its own, so that the client's `notifications/cancelled`
and the end of its session can cancel it. On Trio entering and leaving one costs about 49,000
instructions (anyio's on asyncio about 31,000), a tenth of a small request on the built-in server.
That server runs the app's call in the connection's scope, which nothing else cancels meanwhile,
and lends it (`_core.asgi.REQUEST_CANCEL_EXTENSION`): `ServerCallScope` stands where the request's
own scope would, with nothing to enter.

The difference: a scope of its own is done with once left, while the server's stays cancelled until
the app's call returns. So whatever the request still sends after it was cancelled this way goes
out shielded (`lingers`), and the server closes the connection after the answer.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, cast

from .._core.asgi import Scope, request_canceller
from .loop import Loop

if sys.version_info < (3, 11):  # pragma: no cover - anyio brings the backport there
    from exceptiongroup import BaseExceptionGroup

__all__ = ["ServerCallScope", "lent_scope", "lingers", "send_settled"]


class ServerCallScope:
    """The `_io.loop.CancelScope` of a request whose server lends the scope of the app's call."""

    __slots__ = ("_cancel", "_cancelled_exc", "cancel_called")

    def __init__(self, cancel: Callable[[], None], cancelled_exc: type[BaseException]) -> None:
        self._cancel = cancel
        self._cancelled_exc = cancelled_exc  # the backend's (`Loop.cancelled`)
        self.cancel_called = False

    def cancel(self) -> None:
        if not self.cancel_called:
            self.cancel_called = True
            self._cancel()

    def __enter__(self) -> ServerCallScope:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None, /
    ) -> bool:
        """Stops its own cancellation, as a scope of its own would: the cancellation exception, alone
        or as every exception of a group (a task group inside the handler)."""
        if not self.cancel_called or exc is None:
            return False
        if isinstance(exc, BaseExceptionGroup):
            group = cast("BaseExceptionGroup[BaseException]", exc)
            return group.split(self._cancelled_exc)[1] is None
        return isinstance(exc, self._cancelled_exc)


def lingers(scope: object) -> bool:
    """Whether the cancellation of a request's scope outlives the scope: one lent by the server and
    cancelled. What the request sends after it must then be shielded."""
    return isinstance(scope, ServerCallScope) and scope.cancel_called


def lent_scope(scope: Scope, app: object, loop: Loop) -> ServerCallScope | None:
    """The scope a request of `app` may use instead of its own, when its server lends one to `app`
    (`_core.asgi.request_canceller`)."""
    cancel = request_canceller(scope, app)
    return ServerCallScope(cancel, loop.cancelled) if cancel is not None else None


async def send_settled(scope: object, loop: Loop, send: Callable[..., Awaitable[None]], *args: Any) -> None:
    """`send(*args)`, for a request whose handler has settled in `scope`. A request its server is
    cancelling sends nothing more, unless it was cancelled through a lent scope: that one stays
    cancelled, and the request's answer goes out shielded."""
    if lingers(scope):
        with loop.cancel_scope(shield=True):
            await send(*args)
        return
    await loop.backend.checkpoint_if_cancelled()
    await send(*args)
