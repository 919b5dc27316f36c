"""The modern-era (2026-07-28) wire: one POST is one exchange, no session.

Validation follows the spec's ladder (and the SDK's helpers for it, so both agree to the letter):
routing headers against the body (-32020), the per-request `_meta` envelope, the version (-32022)
(`admission`), `Mcp-Param-*` headers against the tool's schema (`param_headers`); then the request
runs through the SDK kernel's single-exchange driver (`_kernel.serve_one`) with an `ExchangeContext`
(`exchange`) and the connection its envelope describes (`_kernel.envelope`, validated only if read).
The answer is JSON unless the handler streams notifications or runs past the keep-alive interval,
in which case the response commits to SSE. Closing the response is cancellation: a disconnect
cancels the handler.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from mcp.server.connection import Connection
from mcp.server.runner import modern_error_data
from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS
from mcp.shared.message import ServerMessageMetadata

from .._core.asgi import HttpRequest, Receive, Send, send_empty, send_json_bytes
from .._core.errors import ProtocolError
from .._core.jsonrpc import Message, error_message, result_message, written_answer
from .._core.sse import SSE_HEADERS, encode_event
from .._io.loop import Loop
from .._io.response import ResponseWriter
from .._io.watch import LateWatch
from .._kernel.context import RequestObserver, progress_token
from .._kernel.envelope import EnvelopeConnection, ReadyEvent
from .._kernel.hosting import ServerHost
from .._kernel.runner import serve_one
from .admission import admit, rejection
from .exchange import ExchangeContext, InlineExchange
from .param_headers import ParamHeaderCheck

__all__: list[str] = []


class ModernEndpoint:
    """Serves 2026-07-28 POSTs for every tenant."""

    def __init__(
        self,
        *,
        json_response: bool,
        keepalive: float,
        tool_schema_ttl: float,
        loop: Loop,
        watch: LateWatch,
        before_listen: Callable[[ServerHost], Awaitable[None]] | None = None,
    ) -> None:
        self._loop = loop
        # With a fleet: a listen stream starts once its tenant's events from other workers reach it.
        self._before_listen = before_listen
        self._watch = watch
        self._json_response = json_response
        self._keepalive = keepalive
        self._param_headers = ParamHeaderCheck(ttl=tool_schema_ttl, clock=loop.clock)
        self._ready = ReadyEvent()  # every exchange's connection is born ready

    async def post(
        self,
        request: HttpRequest,
        message: Message,
        host: ServerHost,
        receive: Receive,
        send: Send,
        *,
        accepts_json: bool,
        accepts_sse: bool,
        observe: RequestObserver | None = None,
    ) -> None:
        if not accepts_json or (not self._json_response and not accepts_sse):
            raise ProtocolError(406, "Not Acceptable", reason="Accept lacks application/json or text/event-stream")
        if message.kind == "notification":
            # The 2026-07-28 wire defines no client notifications over HTTP (cancelling is closing
            # the response); they are acknowledged and dropped, as the SDK does.
            await send_empty(send, 202)
            return
        version, client_info, client_capabilities = admit(request, message, accepts_sse=accepts_sse)
        assert message.id is not None and message.method is not None
        request_id, method = message.id, message.method
        if method == "tools/call":
            refused = await self._param_headers.check(request, message, host, version)
            if refused is not None:
                raise rejection(refused, request_id)
        connection = EnvelopeConnection(version, client_info, client_capabilities, self._ready.get())
        dctx = ExchangeContext(
            request.headers,
            request_id,
            ServerMessageMetadata(request_context=request, can_send_request=False),
            progress_token(message.params),
        )
        if self._before_listen is not None and method == "subscriptions/listen":
            await self._before_listen(host)
        started = time.perf_counter()
        if self._json_response and method != "subscriptions/listen":
            # A listen answer *is* a stream of notifications, so it always takes the SSE path.
            answer = await _run(host, dctx, method, message.params, connection)
            if observe is not None:
                observe(method, message.params, started, answer)
            await _send_answer(send, answer)
            return
        streamed = await self._stream(host, dctx, method, message.params, connection, receive, send)
        if observe is not None and streamed is not None:
            observe(method, message.params, started, streamed)

    async def _stream(
        self,
        host: ServerHost,
        dctx: ExchangeContext,
        method: str,
        params: dict[str, Any] | None,
        connection: Connection,
        receive: Receive,
        send: Send,
    ) -> dict[str, Any] | None:
        """Run the exchange; returns its answer, or None when the client left before it settled.

        The handler runs in this task and writes its notifications straight to the response
        (`ResponseWriter`; the first commits it to SSE). An exchange that ends within the watch
        period, nearly all of them, costs no task, no buffer and no wait on `receive()`; one that
        lasts gets a watcher (`InlineExchange.watch`).
        """
        loop = self._loop
        clock = loop.clock
        dctx.writer = writer = ResponseWriter(send, loop.cancel_scope, SSE_HEADERS)
        dctx.clock = clock
        dctx.last_write = clock()
        exchange = InlineExchange(dctx, receive, loop.cancel_scope(), self._keepalive)
        answer: dict[str, Any] | None = None
        self._watch.add(exchange)
        try:
            with exchange.scope:
                answer = await _run(host, dctx, method, params, connection)
        finally:
            exchange.settle()
            self._watch.discard(exchange)
        if answer is None:
            return None  # the client left: its watcher cancelled the handler
        if dctx.committed:
            await writer.end(encode_event(written_answer(answer)[1].decode()))
        else:
            # Settled without streaming anything: a plain JSON answer, whose HTTP status can still
            # say what the error is (404 for an unknown method).
            await _send_answer(send, answer)
        return answer


async def _run(
    host: ServerHost, dctx: ExchangeContext, method: str, params: dict[str, Any] | None, connection: Connection
) -> dict[str, Any]:
    """The JSON-RPC answer for one request: its result, or its error with no internals on the wire."""
    try:
        result = await serve_one(host, dctx, method, params, connection)
    except Exception as exc:
        error = modern_error_data(exc)
        return error_message(dctx.request_id, error.code, error.message, error.data)
    return result_message(dctx.request_id, result)


async def _send_answer(send: Send, answer: dict[str, Any]) -> None:
    answer, body = written_answer(answer)
    error = answer.get("error")
    code = cast("dict[str, Any]", error).get("code") if isinstance(error, dict) else None
    status = ERROR_CODE_HTTP_STATUS.get(code, 200) if isinstance(code, int) else 200
    await send_json_bytes(send, status, body)
