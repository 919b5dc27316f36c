"""The modern-era (2026-07-28) wire: one POST is one exchange, no session.

Validation follows the spec's ladder (and the SDK's helpers for it, so both agree to the letter):
routing headers against the body (-32020), the per-request `_meta` envelope, the version (-32022),
`Mcp-Param-*` headers against the tool's schema; then the request runs through the SDK kernel's
single-exchange driver (`_kernel.serve_one`). The answer is JSON unless the handler streams notifications
or runs past the keep-alive interval, in which case the response commits to SSE. Closing the
response is cancellation: a disconnect cancels the handler.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import anyio
from mcp.server.connection import Connection
from mcp.server.runner import modern_error_data
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import NoBackChannelError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    find_invalid_x_mcp_header,
    validate_mcp_param_headers,
    x_mcp_header_map,
)
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext

from .._core.asgi import HttpRequest, Receive, Send, send_empty, send_json
from .._core.errors import HEADER_MISMATCH, ProtocolError
from .._core.jsonrpc import Message, RequestId, dumps, error_message, result_message
from .._core.sse import KEEPALIVE, SSE_HEADERS, encode_event
from .._io.loop import Loop
from .._io.response import ResponseWriter, wait_for_disconnect
from .._io.watch import LateWatch
from .._kernel.context import PeerCancellation, RequestObserver
from .._kernel.hosting import ServerHost
from .._kernel.runner import serve_one

__all__: list[str] = []

logger = logging.getLogger("asgi_mcp.modern")

_PARAM_PREFIX: Final = "mcp-param-"
_LIST_PAGE_CAP: Final = 100


@dataclass(eq=False, slots=True)
class ExchangeContext(PeerCancellation):
    """`DispatchContext` of one modern exchange: notifications go to the response, requests are refused."""

    transport: TransportContext
    request_id: RequestId
    message_metadata: ServerMessageMetadata
    progress_token: str | int | None = None
    # The response, for an exchange that may stream (None: a JSON answer, nowhere to notify).
    writer: ResponseWriter | None = None
    committed: bool = False  # the response's SSE headers went out
    clock: Callable[[], float] | None = None
    last_write: float = 0.0  # by `clock`: when the response last took a chunk

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
        if not self.committed:
            self.committed = True
            await writer.start(SSE_HEADERS)
        await writer.write(chunk)
        self.last_write = self.clock()

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        if self.progress_token is None:
            return
        params: dict[str, Any] = {"progressToken": self.progress_token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self.notify("notifications/progress", params)


class _InlineExchange:
    """The response side of a modern exchange that may stream, while its handler runs inline.

    Watched only once it has lasted (see `_watch`): then `watch` runs in a task of its own, where
    the client's disconnect cancels the handler and silence gets keep-alive comments.
    """

    __slots__ = ("dctx", "keepalive", "receive", "scope", "settled", "waiting", "watch_ticks")

    def __init__(self, dctx: ExchangeContext, receive: Receive, scope: anyio.CancelScope, keepalive: float) -> None:
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


class _RawHeaders(Mapping[str, str]):
    """Header lines as the SDK's `Mcp-Param-*` validator wants them: `items()` keeps repeats visible."""

    def __init__(self, request: HttpRequest) -> None:
        self._request = request

    def __getitem__(self, key: str) -> str:
        return self._request.headers[key]

    def __iter__(self) -> Any:
        return iter(self._request.headers)

    def __len__(self) -> int:
        return len(self._request.headers)

    def items(self) -> Any:
        return self._request.headers.raw_items()


class ModernEndpoint:
    """Serves 2026-07-28 POSTs for every tenant."""

    def __init__(
        self, *, json_response: bool, keepalive: float, tool_schema_ttl: float, loop: Loop, watch: LateWatch
    ) -> None:
        self._loop = loop
        self._watch = watch
        self._json_response = json_response
        self._keepalive = keepalive
        self._tool_schema_ttl = tool_schema_ttl

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
        if message.kind != "request":
            raise ProtocolError(
                400,
                "Invalid Request: clients do not send responses on this protocol version",
                reason="response POSTed on the modern wire",
            )
        assert message.id is not None and message.method is not None
        request_id, method = message.id, message.method
        if method == "subscriptions/listen" and not accepts_sse:
            raise ProtocolError(
                406,
                "Not Acceptable: subscriptions/listen answers with text/event-stream",
                request_id=request_id,
                reason="listen without text/event-stream",
            )
        duplicated = find_duplicated_routing_header(request.headers.raw_items())
        if duplicated is not None:
            raise ProtocolError(
                400, f"{duplicated} header appears more than once", code=HEADER_MISMATCH, request_id=request_id
            )
        verdict = classify_inbound_request(message.raw, headers=request.headers)
        if isinstance(verdict, InboundLadderRejection):
            raise _rejection(verdict, request_id)
        if method == "tools/call":
            rejection = await self._check_param_headers(request, message, host, verdict.protocol_version)
            if rejection is not None:
                raise _rejection(rejection, request_id)
        connection = Connection.from_envelope(
            verdict.protocol_version, verdict.client_info, verdict.client_capabilities
        )
        dctx = ExchangeContext(
            TransportContext(kind="streamable-http", can_send_request=False, headers=request.headers),
            request_id,
            ServerMessageMetadata(request_context=request, can_send_request=False),
            progress_token_from_params(message.params),
        )
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
        lasts gets a watcher (`_InlineExchange.watch`).
        """
        backend, clock = self._loop.backend, self._loop.clock
        dctx.writer = writer = ResponseWriter(send, backend)
        dctx.clock = clock
        dctx.last_write = clock()
        exchange = _InlineExchange(dctx, receive, backend.create_cancel_scope(), self._keepalive)
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
            await writer.end(encode_event(dumps(answer)))
        else:
            # Settled without streaming anything: a plain JSON answer, whose HTTP status can still
            # say what the error is (404 for an unknown method).
            await _send_answer(send, answer)
        return answer

    async def _check_param_headers(
        self, request: HttpRequest, message: Message, host: ServerHost, protocol_version: str
    ) -> InboundLadderRejection | None:
        params = message.params or {}
        name = params.get("name")
        arguments = params.get("arguments")
        if not isinstance(name, str) or (arguments is not None and not isinstance(arguments, dict)):
            return None  # the kernel answers malformed params itself
        args = cast("dict[str, Any]", arguments or {})
        if not args and not any(key.startswith(_PARAM_PREFIX) for key in request.headers):
            return None  # nothing to compare: no value can disagree with a header
        schema = await self._input_schema(request, host, name, protocol_version, message.raw)
        if schema is None:
            return None
        return validate_mcp_param_headers(schema, args, _RawHeaders(request))

    async def _input_schema(
        self, request: HttpRequest, host: ServerHost, name: str, protocol_version: str, raw: dict[str, Any]
    ) -> Any:
        """The tool's input schema: the server's own lookup if it has one, else its `tools/list`.

        The SDK lists tools on *every* tools/call to find it; here the listing is cached per server
        for `tool_schema_ttl` seconds (0 disables the cache), so the cost is paid once per interval.
        A listed schema that declares no `Mcp-Param-*` header comes back as None (nothing to check).
        """
        server = host.server
        if server.get_tool_input_schema is not None:
            try:
                return server.get_tool_input_schema(name)
            except Exception:
                logger.exception("get_tool_input_schema raised; Mcp-Param headers not validated")
                return None
        now = self._loop.clock()
        cached = host.tool_schemas
        if cached is None or cached[0] <= now:
            schemas = await self._list_schemas(request, host, protocol_version, raw)
            if schemas is None:
                return None
            cached = (now + self._tool_schema_ttl, schemas)
            if self._tool_schema_ttl > 0:
                host.tool_schemas = cached
        return cached[1].get(name)

    async def _list_schemas(
        self, request: HttpRequest, host: ServerHost, protocol_version: str, raw: dict[str, Any]
    ) -> dict[str, Any] | None:
        if host.server.get_request_handler("tools/list") is None:
            return None
        params = cast("dict[str, Any]", raw.get("params") or {})
        meta = dict(cast("dict[str, Any]", params.get("_meta") or {}))
        meta.pop("progressToken", None)
        schemas: dict[str, Any] = {}
        list_params: dict[str, Any] = {"_meta": meta}
        seen: set[str] = set()
        for _ in range(_LIST_PAGE_CAP):
            connection = Connection.from_envelope(
                protocol_version,
                meta.get("io.modelcontextprotocol/clientInfo"),
                meta.get("io.modelcontextprotocol/clientCapabilities"),
            )
            dctx = ExchangeContext(
                TransportContext(kind="streamable-http", can_send_request=False, headers=request.headers),
                "asgi-mcp-schema-lookup",
                ServerMessageMetadata(request_context=request, can_send_request=False),
            )
            try:
                result = await serve_one(host, dctx, "tools/list", list_params, connection)
            except Exception:
                # Fail open, as the SDK does: header validation must never break a working call.
                logger.exception("tools/list failed; Mcp-Param headers not validated")
                return None
            for tool in cast("list[Any]", result.get("tools", [])):
                if isinstance(tool, dict):
                    entry = cast("dict[str, Any]", tool)
                    name = entry.get("name")
                    if isinstance(name, str):
                        schema = entry.get("inputSchema")
                        # Decided once per listing rather than walking the schema on every call.
                        schemas[name] = schema if _declares_param_headers(schema) else None
            cursor = result.get("nextCursor")
            if not isinstance(cursor, str) or cursor in seen:
                return schemas
            seen.add(cursor)
            list_params = {"_meta": meta, "cursor": cursor}
        return schemas


def _declares_param_headers(schema: Any) -> bool:
    """Whether `validate_mcp_param_headers` can refuse any call against `schema`.

    It validates nothing for a schema with an invalid annotation, and with no annotation it has no
    header to compare (stray `Mcp-Param-*` headers are not its concern), so either way it passes.
    """
    return find_invalid_x_mcp_header(schema) is None and bool(x_mcp_header_map(schema))


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
    error = answer.get("error")
    code = cast("dict[str, Any]", error).get("code") if isinstance(error, dict) else None
    status = ERROR_CODE_HTTP_STATUS.get(code, 200) if isinstance(code, int) else 200
    await send_json(send, status, answer)


def _rejection(rejection: InboundLadderRejection, request_id: RequestId) -> ProtocolError:
    return ProtocolError(
        ERROR_CODE_HTTP_STATUS.get(rejection.code, 400),
        rejection.message,
        code=rejection.code,
        request_id=request_id,
        data=rejection.data,
        reason=rejection.message,
    )
