"""The SDK `Dispatcher` for one legacy session, fed directly by the session's HTTP requests.

The SDK's own transport pushes every message through memory streams into a `JSONRPCDispatcher`
that re-validates it with pydantic and routes responses back through a serial router. Here the
HTTP layer has already classified each message, so each request runs the server kernel
(`ServerRunner.on_request`) in the task of the HTTP request that carried it, and everything a
handler sends lands directly on the outbound stream it belongs to: its own POST stream for
request-scoped messages, the session's standalone stream for the rest. Same semantics as the SDK
dispatcher (concurrent requests, peer cancellation, server-to-client requests with timeouts, the
exception-to-wire boundary), one hop instead of four.

Requests in flight are held by identity (`_core.exchanges.InFlight`), each one's lifecycle is the
exchange table there; the client's id stays on every message bound to the request.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import anyio.abc
from mcp.shared.dispatcher import CallOptions, OnNotify, OnNotifyIntercept, OnRequest, coerce_request_id
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT, ErrorData

from .._core.errors import INTERNAL_ERROR, REQUEST_CANCELLED
from .._core.exchanges import TRANSITIONS as EXCHANGES
from .._core.exchanges import ExchangeAction, ExchangeInput, ExchangeState, InFlight, advance
from .._core.jsonrpc import INTERNAL_ERROR_MESSAGE, RequestId, error_message
from .._core.live_session import LiveAction, LiveInput, LiveState
from .._io.call_scope import lingers
from .._io.loop import CancelScope, CancelScopeFactory
from .._kernel.context import RequestObserver, progress_token
from .request_context import RequestContext
from .streams import OutboundStream, SessionStreams

__all__: list[str] = []

logger = logging.getLogger("asgi_mcp.dispatch")

_CLOSED: Final = LiveState.CLOSED
_SETTLED: Final = ExchangeState.SETTLED
_START: Final = ExchangeInput.START
_RETURNED: Final = ExchangeInput.RETURNED
_ABORTED: Final = ExchangeInput.ABORTED
_CANCEL: Final = ExchangeAction.CANCEL
_ANSWER_CLOSED: Final = ExchangeAction.ANSWER_CLOSED
_ANSWER_CANCELLED: Final = ExchangeAction.ANSWER_CANCELLED
_UNSHIELDED: Final = nullcontext()  # stateless, so shared


@dataclass(eq=False, slots=True)
class _PendingCall:
    done: anyio.Event = field(default_factory=anyio.Event)
    result: dict[str, Any] | None = None
    error: ErrorData | None = None


class SessionDispatcher:
    """Implements `mcp.shared.dispatcher.Dispatcher` for one session; see the module docstring."""

    def __init__(
        self,
        streams: SessionStreams,
        task_group: anyio.abc.TaskGroup,
        cancel_scope: CancelScopeFactory,
        *,
        observer: RequestObserver | None = None,
    ) -> None:
        # Where every message goes. The streams know nothing of the dispatcher: no cycle, no weak
        # reference, and a session is garbage once its table entry and its requests let go of it.
        self._streams = streams
        self.observer = observer
        # Notification handlers run here; requests run in the task of the HTTP request carrying them.
        self._task_group = task_group
        self._cancel_scope = cancel_scope  # the loop's (see `_io.loop`)
        self._on_request: OnRequest | None = None
        self._on_notify: OnNotify | None = None
        self._intercept: OnNotifyIntercept | None = None
        self._in_flight: InFlight[RequestContext] = InFlight()
        self._notifying: set[anyio.CancelScope] = set()
        self._pending: dict[RequestId, _PendingCall] = {}
        self._next_id = 0
        # In a fleet several workers hold the session: their server-to-client request ids are
        # "<worker>-<n>", so a client's answer reaching another worker names the one waiting for it.
        self.id_prefix = ""

    @property
    def closed(self) -> bool:
        return self._streams.state is _CLOSED

    def bind(
        self, on_request: OnRequest, on_notify: OnNotify, on_notify_intercept: OnNotifyIntercept | None = None
    ) -> None:
        """Connect the server kernel. A session needs no task of its own: it is this object, fed by
        the HTTP requests of the session, so an idle session costs only memory."""
        self._on_request, self._on_notify, self._intercept = on_request, on_notify, on_notify_intercept

    # -- the Dispatcher protocol: the server kernel drives these ---------------------------------

    async def run(
        self,
        on_request: OnRequest,
        on_notify: OnNotify,
        on_notify_intercept: OnNotifyIntercept | None = None,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """The protocol's entry, for drivers such as `serve_connection`; McpApp calls `bind` instead."""
        self.bind(on_request, on_notify, on_notify_intercept)
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            if self._streams.step(LiveInput.CLOSE) is LiveAction.TEAR_DOWN:
                self._streams.close()
            self.close()

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        return await self.call(method, params, opts, self._streams.standalone)

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = dict(params)
        await self._streams.emit(self._streams.standalone, message)

    async def emit(self, stream: OutboundStream, message: dict[str, Any], *, final: bool = False) -> None:
        await self._streams.emit(stream, message, final=final)

    # -- inbound: the HTTP layer calls these -----------------------------------------------------

    @property
    def running(self) -> bool:
        return self._on_request is not None and not self.closed

    async def run_request(
        self,
        request_id: RequestId,
        method: str,
        params: dict[str, Any] | None,
        stream: OutboundStream,
        metadata: ServerMessageMetadata,
        transport: TransportContext,
        *,
        shield: bool = False,
    ) -> None:
        """Run the request in the calling task; its answer lands on `stream` before this returns.

        No task per request: the HTTP request that carries it runs it, and a legacy-era disconnect
        is not a cancellation: `shield` makes the request's own scope the shield (one scope instead
        of two; fit only where what the handler sends cannot block for good, see `_legacy.endpoint`).
        The scope is registered, so the peer's `notifications/cancelled` and the session's end still
        cancel it. The answer is emitted after the scope, under the caller's cancellation.
        """
        await self.run_admitted(
            method, params, self.admit(request_id, params, stream, metadata, transport, shield=shield)
        )

    def admit(
        self,
        request_id: RequestId,
        params: dict[str, Any] | None,
        stream: OutboundStream,
        metadata: ServerMessageMetadata,
        transport: TransportContext,
        *,
        shield: bool = False,
        scope: CancelScope | None = None,
    ) -> RequestContext:
        """Register the request as in flight (from here on the session's end cancels it), to run
        with `run_admitted` once the caller has done its own awaits (an SSE response's headers).

        Its cancel scope: `scope` when the caller has one (the server's, `_io.call_scope`), else a
        new one, shielded if `shield`."""
        if self._streams.state is _CLOSED:
            raise MCPError(code=CONNECTION_CLOSED, message="Connection closed")
        dctx = RequestContext(
            transport,
            request_id,
            metadata,
            self,
            stream,
            _progress_token=progress_token(params),
            scope=scope if scope is not None else self._cancel_scope(shield=shield),
        )
        self._in_flight.admit(dctx, request_id)
        return dctx

    def close(self) -> None:
        """The session is ending: cancel every request and notification handler still running, and
        fail the server-to-client requests still waiting for an answer. Idempotent; never awaits.

        The kernel's handlers are dropped too: the kernel holds the connection, whose outbound is
        this dispatcher, so keeping them would leave the session's objects to the cycle collector.
        """
        self._on_request = self._on_notify = self._intercept = None
        for dctx in self._in_flight:
            if advance(dctx, ExchangeInput.SESSION_END) is _CANCEL:
                assert dctx.scope is not None
                dctx.scope.cancel()
        for scope in self._notifying:
            scope.cancel()
        for pending in self._pending.values():
            pending.done.set()  # result None: the waiter raises CONNECTION_CLOSED
        self._pending.clear()

    def cancel_by_peer(self, request_id: object) -> None:
        """The client's `notifications/cancelled`: it reaches the newest live request with that id."""
        if not isinstance(request_id, str | int) or isinstance(request_id, bool):
            return
        dctx = self._in_flight.newest(request_id)
        if dctx is not None and advance(dctx, ExchangeInput.PEER_CANCEL) is _CANCEL:
            dctx.mark_cancelled()
            assert dctx.scope is not None
            dctx.scope.cancel()

    def start_notification(
        self, method: str, params: dict[str, Any] | None, metadata: ServerMessageMetadata, transport: TransportContext
    ) -> None:
        if method == "notifications/cancelled":
            self.cancel_by_peer((params or {}).get("requestId"))
        if self.closed or (self._intercept is not None and self._intercept(method, params)):
            return
        dctx = RequestContext(transport, None, metadata, self, self._streams.standalone)  # type: ignore[arg-type]
        scope = anyio.CancelScope()
        self._notifying.add(scope)
        contextvars.copy_context().run(
            self._task_group.start_soon, self._handle_notification, method, params, dctx, scope
        )

    def resolve(
        self, response_id: RequestId | None, result: dict[str, Any] | None, error: dict[str, Any] | None
    ) -> bool:
        """Hand a client's answer to the server-to-client request waiting for it; False if none waits."""
        pending = self._pending.get(coerce_request_id(response_id)) if response_id is not None else None
        if pending is None or pending.done.is_set():
            return False
        if error is not None:
            pending.error = ErrorData(
                code=error.get("code", INTERNAL_ERROR) if isinstance(error.get("code"), int) else INTERNAL_ERROR,
                message=str(error.get("message", "")),
                data=error.get("data"),
            )
        else:
            pending.result = result if isinstance(result, dict) else {}
        pending.done.set()
        return True

    # -- internals -----------------------------------------------------------------------------

    async def call(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None, stream: OutboundStream
    ) -> dict[str, Any]:
        """A server-to-client request on `stream`; the client's answer arrives as a POST (see `resolve`)."""
        if self.closed:
            raise MCPError(code=CONNECTION_CLOSED, message="Connection closed")
        self._next_id += 1
        request_id: RequestId = f"{self.id_prefix}{self._next_id}" if self.id_prefix else self._next_id
        pending = _PendingCall()
        self._pending[request_id] = pending
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params:
            message["params"] = dict(params)
        timeout = (opts or {}).get("timeout")
        try:
            with anyio.fail_after(timeout) if timeout is not None else nullcontext():
                await self.emit(stream, message)
                await pending.done.wait()
        except TimeoutError:
            await self._courtesy_cancel(stream, request_id, f"timed out after {timeout}s")
            raise MCPError(code=REQUEST_TIMEOUT, message=f"Timed out waiting for {method}") from None
        finally:
            self._pending.pop(request_id, None)
        if pending.error is not None:
            raise MCPError.from_error_data(pending.error)
        if pending.result is None:
            raise MCPError(code=CONNECTION_CLOSED, message="Connection closed")
        return pending.result

    async def _courtesy_cancel(self, stream: OutboundStream, request_id: RequestId, reason: str) -> None:
        with anyio.move_on_after(1, shield=True):
            await self.emit(
                stream,
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": request_id, "reason": reason},
                },
            )

    async def run_admitted(self, method: str, params: dict[str, Any] | None, dctx: RequestContext) -> None:
        """Run an admitted request; its answer lands on its stream before this returns."""
        on_request = self._on_request
        started = time.perf_counter()
        outcome: dict[str, Any] | None = None
        # The exchange table, indexed inline (see `_core.states.TransitionTable`): this runs per request.
        dctx.state = EXCHANGES[dctx.state, _START][0]
        try:
            assert dctx.scope is not None
            with dctx.scope:
                try:
                    # None: admitted, then its session ended before it started; answered as closed below.
                    if on_request is not None:
                        result = await on_request(dctx, method, params)
                        outcome = {"jsonrpc": "2.0", "id": dctx.request_id, "result": result}  # `result_message`
                finally:
                    self._in_flight.release(dctx)
        except anyio.get_cancelled_exc_class():
            # Cancelled from outside (shutdown's deadline): nothing to answer on; it settles unanswered.
            advance(dctx, _ABORTED)
            raise
        except Exception as exc:
            error = handler_exception_to_error_data(exc)
            if error is None:
                # The SDK's dispatcher puts str(exc) on the wire; internals stay in the log here.
                logger.exception("handler for %r raised", method)
                outcome = error_message(dctx.request_id, INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE)
            else:
                outcome = error_message(dctx.request_id, error.code, error.message, error.data)
        dctx.state, action = EXCHANGES[dctx.state, _ABORTED if outcome is None else _RETURNED]
        if action is _ANSWER_CLOSED:
            # Cancelled because its session ended (DELETE, expiry, token removal, shutdown).
            outcome = error_message(dctx.request_id, CONNECTION_CLOSED, "Session closed")
        elif action is _ANSWER_CANCELLED:
            # Cancelled by the client: the stream still has to end, with the error that says why.
            outcome = error_message(dctx.request_id, REQUEST_CANCELLED, "Request cancelled")
        assert outcome is not None
        if self.observer is not None:
            self.observer(method, params, started, outcome)
        if not self._streams.record_answer(dctx.stream, outcome):
            # Cancelled through a scope its server lent, which stays cancelled: the answer goes shielded.
            with self._cancel_scope(shield=True) if lingers(dctx.scope) else _UNSHIELDED:
                await self._streams.emit(dctx.stream, outcome, final=True)

    async def _handle_notification(
        self, method: str, params: dict[str, Any] | None, dctx: RequestContext, scope: anyio.CancelScope
    ) -> None:
        on_notify = self._on_notify
        try:
            with scope:
                if on_notify is not None:  # None: the session ended before it started
                    await on_notify(dctx, method, params)
        except Exception:
            logger.exception("notification handler for %r raised", method)
        finally:
            self._notifying.discard(scope)
