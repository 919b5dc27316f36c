"""One HTTP/1.1 connection: requests read and answered in order, in the connection's own task.

Per connection there is one task and one cancel scope (`scope`), with no deadline: the connection
notes the tick at which its write or its wait for the next head expires, and the server's timeout
watch acts then (see `state.py` for why): an expired wait cancels the scope and ends the
connection, quietly when idle, with a 408 when part of a head had come; an expired write aborts the
socket, which fails the write. A graceful stop cancels the scope of an idle connection, a hard stop
every connection's. As with any keep-alive timeout, a request that arrives in the same instant may
find the connection closing; a client retries it on a new one.

While the app's call runs, nothing else cancels the scope, so it serves as the call's own cancel
scope: the app may cancel it (`REQUEST_CANCEL_EXTENSION`, `cycle.RequestCycle.cancel`) instead of
entering a scope of its own per request, which on Trio costs about a tenth of a small request. The
connection ends after such a call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc

from ..._core.asgi import DIRECT_JSON_EXTENSION, REQUEST_CANCEL_EXTENSION, SEND_TIMEOUT_EXTENSION
from .cycle import RequestCycle
from .errors import HttpRefusal
from .head import RequestHead, find_head
from .proxy import forwarded_client
from .response import plain_response
from .socket_stream import DirectSocketStream
from .state import NEVER

if TYPE_CHECKING:
    from .state import ServerState

__all__ = ["HttpConnection"]

SERVER_LOGGER: Final = "asgi_mcp.server"
_logger: Final = logging.getLogger(SERVER_LOGGER)
_READ_SIZE: Final = 65536
# Closing after a refusal or an unread body: read what the peer still sends for a moment, so that
# the kernel does not reset the connection before the peer has read our answer.
_LINGER_SECONDS: Final = 1.0
_LINGER_BYTES: Final = 256 * 1024
_STREAM_ERRORS: Final = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


class HttpConnection:
    def __init__(
        self,
        state: ServerState,
        stream: anyio.abc.ByteStream,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
        scheme: str,
        *,
        abort: Callable[[], None],
    ) -> None:
        self.state = state
        self.app = state.app
        self.config = state.config
        self.stream = stream
        self.client = client
        self.server = server
        self.scheme = scheme
        self.trusted_peer = self.config.trusts(client[0] if client is not None else None)
        # A plain socket's (not TLS): for direct writes (`write`).
        self.raw_socket = stream.raw_socket if isinstance(stream, DirectSocketStream) else None
        # The wait for a request after an answer, when the stream has one of its own (see `socket_stream.py`).
        self.receive_next: Callable[[int], Awaitable[bytes]] = getattr(stream, "receive_next", stream.receive)
        self.buffer = bytearray()
        self.eof = False
        self.lost = False  # a write failed: the peer is gone
        self.linger = False
        self.idle = False  # waiting for the next request with nothing buffered: shutdown closes it
        self.wait_expiry = NEVER  # the tick at which waiting for a head times out (NEVER: not waiting)
        self.wait_timed_out = False
        self.write_expiry = NEVER  # the tick at which the write in progress times out
        self.abort = abort  # the socket stream's (under TLS too): fails a write that the scope cannot reach
        self.scope = state.cancel_scope()

    def server_stopping(self) -> bool:
        return self.state.stopping

    def cancel_call(self) -> None:
        """The app's call cancelled by the app itself (`RequestCycle.cancel`): the connection's scope
        holds nothing else while the call runs."""
        self.scope.cancel()

    def stop_if_idle(self) -> None:
        if self.idle and self.wait_expiry != NEVER:
            self.scope.cancel()

    def expire(self, tick: int) -> None:
        """The server's timeout watch: a stalled write or a wait for a head ends the connection (a
        partial head is answered 408 on the way out, in `_close`).

        A stalled write is ended by aborting the socket, not by cancelling: the write fails, under
        a shield too (the server promises every send this bound, `SEND_TIMEOUT_EXTENSION`), and
        the app's call, which may outlive it, is not cancelled (see the module's docstring)."""
        if tick >= self.write_expiry:
            self.abort()
        elif tick >= self.wait_expiry:
            self.wait_timed_out = True
            self.scope.cancel()

    async def read_more(self, *, answered: bool = False) -> bool:
        """Append what arrives to the buffer; False at end of stream (or once the peer is gone).
        `answered`: the buffer is empty after an answer, so the peer has not sent anything yet."""
        if self.eof:
            return False
        try:
            data = await (self.receive_next if answered else self.stream.receive)(_READ_SIZE)
        except _STREAM_ERRORS:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    async def write(self, data: bytes, *, direct: bool = False) -> None:
        """Send, within the write timeout (which ends the whole connection); a lost peer is noted, not raised.

        A `direct` write (a response's first write, its head with the start of its body, or its
        last), with nothing pipelined behind it, goes straight to the socket when the socket takes
        it all: the stream would yield, with the request's objects alive, and a yield there is what
        drives the cycle collector under load. The connection yields anyway as it waits for its
        next request, and a streamed body's other writes yield. (The stream has no write in
        progress: each send returns only once the kernel has taken all of it.)
        """
        if direct and self.raw_socket is not None and not self.buffer:
            try:
                sent = self.raw_socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.lost = True
                return
            if sent == len(data):
                return
            data = data[sent:]  # the socket is full: the stream waits until it takes the rest
        state = self.state
        self.write_expiry = state.tick + state.write_ticks
        try:
            await self.stream.send(data)
        except _STREAM_ERRORS:
            self.lost = True
        finally:
            self.write_expiry = NEVER

    async def run(self) -> None:
        try:
            with self.scope:
                await self._serve()
        finally:
            await self._close()

    async def _serve(self) -> None:
        first = True
        while True:
            head = await self._next_head(first)
            if head is None:
                return
            first = False
            cycle = RequestCycle(self, head)
            await self._run_app(cycle, head)
            if cycle.reader_scope is not None:
                await cycle.release_reader()
            if not cycle.can_continue() or self.state.stopping:
                if not cycle.body.done or not cycle.response_complete:
                    self.linger = True
                return

    async def _next_head(self, first: bool) -> RequestHead | None:
        config, state = self.config, self.state
        buffer = self.buffer
        try:
            # After an answer the buffer is usually empty (nothing pipelined): go straight to the wait.
            end = find_head(buffer, config.max_request_line, config.max_header_bytes) if buffer else None
            if end is None:
                # Waiting here, not in a function of its own: the wait is where the task sleeps, and
                # each coroutine between the connection and the socket is resumed with it.
                # Nothing of a request yet: a stop closes the connection at once (a first request too).
                idle = self.idle = not buffer
                if idle and state.stopping:
                    return None
                # No cancel scope of its own (one per request costs more than the rest of the wait):
                # a timeout or a stop cancels the connection's scope (`expire`, `stop_if_idle`).
                self.wait_expiry = state.tick + (state.keepalive_ticks if idle and not first else state.headers_ticks)
                try:
                    answered = idle and not first
                    while await self.read_more(answered=answered):
                        answered = False
                        if self.idle:
                            self.idle = False
                            self.wait_expiry = state.tick + state.headers_ticks
                        end = find_head(buffer, config.max_request_line, config.max_header_bytes)
                        if end is not None:
                            break
                    else:
                        return None  # the peer closed; a partial head is dropped
                finally:
                    self.wait_expiry = NEVER
            head = bytes(buffer[:end])
            del buffer[:end]
            return state.parser.parse(head)
        except HttpRefusal as refusal:
            await self._refuse(refusal)
            return None

    def _scope_of(self, head: RequestHead, cycle: RequestCycle) -> dict[str, Any]:
        client, scheme = self.client, self.scheme
        if self.trusted_peer:
            client, scheme = forwarded_client(head.headers, client, scheme, self.config.trusts)
        root_path = self.config.root_path
        raw_path = head.raw_path
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": head.http_version,
            "server": self.server,
            "client": client,
            "scheme": scheme,
            "method": head.method,
            "root_path": root_path,
            "path": root_path + (_decode_path(raw_path) if b"%" in raw_path else raw_path.decode("ascii")),
            "raw_path": root_path.encode() + raw_path if root_path else raw_path,
            "query_string": head.query_string,
            "headers": head.headers,
            "extensions": {
                SEND_TIMEOUT_EXTENSION: self.state.send_timeout,
                REQUEST_CANCEL_EXTENSION: cycle,
                DIRECT_JSON_EXTENSION: cycle,
            },
        }
        if self.state.lifespan_state is not None:
            scope["state"] = self.state.lifespan_state.copy()
        return scope

    async def _run_app(self, cycle: RequestCycle, head: RequestHead) -> None:
        try:
            cycle.in_call = True
            try:
                await self.app(self._scope_of(head, cycle), cycle.receive, cycle.send)
            finally:
                cycle.in_call = False
        except Exception:
            if cycle.send_refused:
                # After `send` raised `ClientDisconnected` (ASGI 2.4): most likely that, or the
                # framework's version of it (Starlette's `ClientDisconnect`). Nobody to answer.
                _logger.debug("ASGI application ended with an exception after its client left", exc_info=True)
            else:
                _logger.exception("Exception in ASGI application")
            await self._answer_failure(cycle)
        else:
            if cycle.response_complete:
                return
            if not cycle.response_started:
                if cycle.disconnected or self.lost:
                    return  # the client went first: nobody to answer
                _logger.error("ASGI application returned without completing a response")
            await self._answer_failure(cycle)

    async def _answer_failure(self, cycle: RequestCycle) -> None:
        """The app failed, or returned, short of a complete response: a 500 if none of it went out,
        else the connection ends after what did. Either is in the access log."""
        cycle.keep_alive = False
        if cycle.response_complete:
            return
        if cycle.response_started:
            cycle.log(cycle.sent_bytes)
        elif not self.lost:
            cycle.status = 500
            cycle.pending_head = b""
            cycle.response_complete = True
            await self.write(plain_response(500, "Internal Server Error"))
            cycle.log(0)

    async def _refuse(self, refusal: HttpRefusal) -> None:
        self.linger = True
        if not self.lost:
            await self.write(plain_response(refusal.status, refusal.reason))

    async def _close(self) -> None:
        """A 408 for a head cut short by its timeout and a moment's linger, when due; then the socket
        is closed, under TLS too (without a close_notify, as anyio's forced close sends none)."""
        timed_out_in_head = self.wait_timed_out and bool(self.buffer) and not self.idle and not self.lost
        if timed_out_in_head or (self.linger and not self.lost and not self.eof):
            with anyio.CancelScope(shield=True):
                await self._part(timed_out_in_head)
        self.abort()

    async def _part(self, timed_out_in_head: bool) -> None:
        if timed_out_in_head:
            # Part of a head, then nothing for `headers_timeout` (idle connections close quietly).
            self.linger = True
            with anyio.move_on_after(_LINGER_SECONDS):
                try:
                    await self.stream.send(plain_response(408, "request header timeout"))
                except _STREAM_ERRORS:
                    self.lost = True
        if self.linger and not self.lost and not self.eof:
            with anyio.move_on_after(_LINGER_SECONDS):
                try:
                    await self.stream.send_eof()
                    drained = 0
                    while drained < _LINGER_BYTES:
                        drained += len(await self.stream.receive(_READ_SIZE))
                except (*_STREAM_ERRORS, NotImplementedError):
                    pass


def _decode_path(raw_path: bytes) -> str:
    """A path with percent-escapes, decoded (one without is its ASCII text, see `_scope_of`)."""
    from urllib.parse import unquote

    return unquote(raw_path.decode("ascii"))
