"""One 2026-07-28 exchange as the kernel and the response see it.

`ExchangeContext` is the kernel's `DispatchContext` for one modern request: notifications go straight
to the response (committing it to SSE), server-to-client requests are refused (there is no back
channel). `InlineExchange` is the response side of an exchange whose handler runs inline: watched only
once it has lasted, when the client's disconnect cancels it and silence gets keep-alive comments.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import NoBackChannelError
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext

from .._core.asgi import Receive
from .._core.http import Headers
from .._core.jsonrpc import RequestId, dumps
from .._core.sse import KEEPALIVE, encode_event
from .._io.loop import CancelScope
from .._io.response import ResponseWriter, wait_for_disconnect
from .._kernel.context import PeerCancellation, progress_params

__all__: list[str] = []


@dataclass(eq=False, slots=True)
class ExchangeContext(PeerCancellation):
    """`DispatchContext` of one modern exchange: notifications go to the response, requests are refused."""

    headers: Headers  # the request's: `transport` carries them, made only when a handler asks for it
    request_id: RequestId
    message_metadata: ServerMessageMetadata
    progress_token: str | int | None = None
    _transport: TransportContext | None = None
    # The response, for an exchange that may stream (None: a JSON answer, nowhere to notify).
    writer: ResponseWriter | None = None
    committed: bool = False  # the response is SSE: a chunk was written (its head went with the first)
    clock: Callable[[], float] | None = None
    last_write: float = 0.0  # by `clock`: when the response last took a chunk

    @property
    def transport(self) -> TransportContext:
        # Read only by handlers (`ctx.transport`, `ctx.headers`), so not made for every request.
        transport = self._transport
        if transport is None:
            transport = self._transport = TransportContext(
                kind="streamable-http", can_send_request=False, headers=self.headers
            )
        return transport

    @property
    def can_send_request(self) -> bool:
        return False

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None) -> None:
        if self.writer is None:
            return  # JSON answer: there is nowhere to put a notification
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = dict(params)
        await self.write(encode_event(dumps(message)))

    async def write(self, chunk: bytes) -> None:
        """Straight to the response, committing it to SSE first. A response that has ended (answered,
        or its client gone) takes nothing more: the writer drops the chunk."""
        writer = self.writer
        assert writer is not None and self.clock is not None
        self.committed = True  # the writer sends the SSE head with this first chunk
        await writer.write(chunk)
        self.last_write = self.clock()

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        if self.progress_token is not None:
            await self.notify("notifications/progress", progress_params(self.progress_token, progress, total, message))


class InlineExchange:
    """The response side of a modern exchange that may stream, while its handler runs inline.

    Watched only once it has lasted (see `ModernEndpoint._stream`): then `watch` runs in a task of its own, where
    the client's disconnect cancels the handler and silence gets keep-alive comments.
    """

    __slots__ = ("dctx", "keepalive", "receive", "scope", "settled", "waiting", "watch_ticks")

    def __init__(self, dctx: ExchangeContext, receive: Receive, scope: CancelScope, keepalive: float) -> None:
        self.dctx = dctx
        self.receive = receive
        self.scope = scope  # the handler's: cancelled when the client leaves
        self.keepalive = keepalive
        self.settled = False
        self.waiting: anyio.CancelScope | None = None
        self.watch_ticks = 0

    async def watch(self) -> None:
        dctx = self.dctx
        assert dctx.clock is not None
        while not self.settled:
            with anyio.CancelScope(deadline=dctx.last_write + self.keepalive) as self.waiting:
                # A broken receive channel says the same as a disconnect: the client is gone.
                with contextlib.suppress(Exception):
                    await wait_for_disconnect(self.receive)
                # Closing the response stream is cancellation (2026-07-28): stop the handler.
                dctx.mark_cancelled()
                self.scope.cancel()
                return
            self.waiting = None
            if not self.settled and dctx.clock() >= dctx.last_write + self.keepalive:
                await dctx.write(KEEPALIVE)  # the interval passed in silence

    def settle(self) -> None:
        """The handler is done: the watcher (if any) stops waiting and writes nothing more."""
        self.settled = True
        if self.waiting is not None:
            self.waiting.cancel()
