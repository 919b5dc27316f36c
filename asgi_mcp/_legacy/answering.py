"""Answering one request of a legacy session on the POST that carries it: as one JSON response, or as
an SSE stream its handler writes to while it runs.

The handler runs in the POST's task (`_legacy.session`), shielded: in this era a dropped connection
is not a cancellation; `notifications/cancelled` and the session's end cancel it from inside.
"""

from __future__ import annotations

from types import TracebackType

from .._core.asgi import HttpRequest, Send, sends_bounded
from .._core.http import session_not_found
from .._core.jsonrpc import Message
from .._core.sse import SSE_HEADERS
from .._io.call_scope import lent_scope, send_settled
from .._io.loop import Loop
from .._io.response import KeepAlive, ResponseWriter
from .responses import answer_json
from .session import LegacySession, request_metadata

__all__ = ["OpenStreams", "RequestAnswerer"]


class OpenStreams:
    """How many SSE responses of the era are open (GET streams and streamed answers): in stats and
    telemetry. `with streams:` counts one for the block."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> None:
        self.count += 1

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.count -= 1


class RequestAnswerer:
    """Runs a session's request and writes its answer to the POST's response."""

    def __init__(self, *, loop: Loop, keepalive: KeepAlive, streams: OpenStreams, app: object) -> None:
        self._loop = loop
        self._keepalive = keepalive
        self._streams = streams
        self._app = app  # the ASGI app it answers for: whose server may lend it a scope (`answer`)

    async def answer(
        self,
        request: HttpRequest,
        message: Message,
        session: LegacySession,
        send: Send,
        *,
        json_mode: bool,
        enclosed: bool = False,
    ) -> None:
        """`enclosed`: the app runs the request inside a cancel scope of its own (a token's hold),
        which a scope the server lends would not shield it from."""
        assert message.id is not None and message.method is not None
        if not session.outbound.admit_exchange():
            raise session_not_found(message.id)
        stream = session.outbound.new_stream(json_only=json_mode)
        metadata, transport = request_metadata(request, session, stream, can_send=not json_mode)
        loop = self._loop
        # The handler's shield is a scope of its own, or the server's scope around this call where
        # the server lends it (nothing but the request's own cancellation and a hard stop cancels
        # that one), unless the app's own scope encloses the request: a cut hold must not reach the
        # handler either.
        lent = None if enclosed else lent_scope(request.scope, self._app, loop)
        if json_mode:
            # A JSON answer is only recorded, with no await to guard.
            admitted = session.dispatcher.admit(
                message.id, message.params, stream, metadata, transport, shield=True, scope=lent
            )
            await session.dispatcher.run_admitted(message.method, message.params, admitted)
            await send_settled(admitted.scope, loop, answer_json, stream.answer, send, message.id)
            return
        priming = await session.priming_frame(stream)
        if priming is not None and not session.outbound.admit_exchange():
            # Ended while the priming event was stored (DELETE, expiry, token removal): gone now.
            raise session_not_found(message.id)
        # The handler writes its frames straight to this response. Admitted before the first send:
        # a session ending meanwhile cancels it like any in flight. Its answer is sent (or stored)
        # after its scope, when nothing but the sending is left.
        admitted = session.dispatcher.admit(
            message.id, message.params, stream, metadata, transport, shield=True, scope=lent
        )
        writer = ResponseWriter(send, loop.cancel_scope, SSE_HEADERS, server_bounds_sends=sends_bounded(request.scope))
        stream.write_to(writer)
        self._keepalive.register(writer)
        try:
            with self._streams:
                if priming is not None:
                    # Shielded as well: once admitted, the request runs (and settles) whatever happens here.
                    with loop.cancel_scope(shield=True):
                        await writer.write(priming.encode())
                await session.dispatcher.run_admitted(message.method, message.params, admitted)
        finally:
            # The handler has settled. Its final frame detached the writer, unless the session's
            # end dropped that frame: then it is detached here, and the response ends below.
            if stream.writer is writer:
                stream.detach(writer)
            self._keepalive.unregister(writer)
        await send_settled(admitted.scope, loop, writer.end)
