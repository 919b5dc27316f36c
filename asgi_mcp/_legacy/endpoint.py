"""The legacy-era (2024-11-05 ... 2025-11-25) session transport: initialize, POST, GET, DELETE, resumability.

One `LegacySession` per `Mcp-Session-Id`: the SDK server kernel (`ServerRunner`) bound to a
`SessionDispatcher`, fed directly by each HTTP request of the session. A session has no task of its
own: a request runs in the task of the POST that carries it, so an idle session is only memory.
The session table (`_registry.SessionTable`) decides admission, ownership and expiry; sessions end
only through `LegacyEndpoint.end_session`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import anyio
import anyio.abc
from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner, aclose_shielded
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext

from .._core.asgi import HttpRequest, Receive, Send, send_empty, send_json
from .._core.errors import INVALID_REQUEST, ProtocolError
from .._core.http import FIRST_PRIMING_VERSION, check_session_id, is_visible_ascii, missing_session, session_not_found
from .._core.jsonrpc import Message, dumps, error_message
from .._core.session_table import SessionEntry, SessionTable
from .._core.sse import SSE_HEADERS, encode_event
from .._core.states import SessionState
from .._io.loop import Loop
from .._io.streams import Frame, KeepAlive, OutboundStream, ResponseWriter, pump, wait_for_disconnect
from .._kernel.dispatch import RequestObserver, SessionDispatcher
from .._kernel.hosting import ServerHost
from .._kernel.runner import has_teardown, kernel_handlers
from .._ports.replay import EventLog, ReplayedEvent

__all__: list[str] = []


SESSION_HEADER: Final = b"mcp-session-id"
CONNECTION_CLOSED: Final = -32000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the credential a session is bound to, and the tenant whose server serves it."""

    owner: str
    tenant_id: str | None
    host: Callable[[], Awaitable[ServerHost]]


class LegacySession:
    """One session: its server kernel and its outbound streams. No task: its requests run it."""

    def __init__(
        self,
        session_id: str,
        host: ServerHost,
        task_group: anyio.abc.TaskGroup,
        loop: Loop,
        *,
        events: EventLog | None,
        retry_ms: int | None,
        observer: RequestObserver | None,
    ) -> None:
        self.session_id = session_id
        self.host = host
        self._task_group = task_group
        self._events = events
        self._retry_ms = retry_ms
        self.tag = EventLog.new_tag()
        self.dispatcher = SessionDispatcher(self, task_group, loop.backend, observer=observer)
        self.connection = Connection.for_loop(self.dispatcher, session_id=session_id)
        self.dispatcher.bind(*kernel_handlers(ServerRunner(host.server, self.connection, host.state)))
        self.standalone = OutboundStream(f"{self.tag}/get")
        self.streams: dict[str, OutboundStream] = {}
        self._streams_opened = 0
        self.get_connected = False
        self.closed = False

    @property
    def protocol_version(self) -> str:
        return self.connection.protocol_version

    def close(self) -> None:
        """Cancel the session's handlers and end every attached connection. Idempotent; never awaits."""
        if self.closed:
            return
        self.closed = True
        self.dispatcher.close()
        self.standalone.detach()
        for stream in self.streams.values():
            stream.detach()
        self.streams.clear()
        if self._events is not None:
            self._events.forget(self.tag)
        # Per-connection cleanup the handlers registered (`Connection.exit_stack`), shielded and bounded.
        if has_teardown(self.connection):
            self._task_group.start_soon(aclose_shielded, self.connection)

    def new_stream(self, *, json_only: bool) -> OutboundStream:
        if json_only:
            # Carries only its answer, to the request that runs it: nothing to store, replay or
            # reconnect to, so it needs no id and no place among the session's streams.
            return OutboundStream("", json_only=True)
        # Stream ids name events in the store: unguessable then; without a store a counter will do.
        if self._events is not None:
            suffix = secrets.token_urlsafe(6)
        else:
            self._streams_opened += 1
            suffix = str(self._streams_opened)
        stream = OutboundStream(f"{self.tag}/{suffix}", json_only=json_only)
        self.streams[stream.store_id] = stream
        return stream

    async def emit(self, stream: OutboundStream, message: dict[str, Any], *, final: bool = False) -> None:
        """Send one message on `stream`: stored first (for replay), then delivered if a client is attached."""
        if stream.json_only:
            if final:
                # Answered by the request that ran it (inline), once the handler returns.
                stream.answer = Frame(None, dumps(message), True)
                stream.finished = True
            return
        data = dumps(message)
        event_id = None
        if self._events is not None and not stream.json_only and not self.closed:
            event_id = await self._events.store(stream.store_id, message, data)
        if final:
            stream.finished = True
        try:
            await stream.deliver(Frame(event_id, data, final))
        finally:
            # Forgotten only once delivered: a session closing while the final frame waits (its
            # send is a checkpoint) must still find the stream and end its connection.
            if final:
                self.streams.pop(stream.store_id, None)

    @property
    def resumable(self) -> bool:
        """Whether its streams can be resumed (SEP-1699): an event store, and a negotiated version of
        2025-11-25 or later. The negotiated version decides, not the request's header: clients send
        stale headers."""
        return self._events is not None and self.protocol_version >= FIRST_PRIMING_VERSION

    async def priming_frame(self, stream: OutboundStream) -> Frame | None:
        """The SEP-1699 priming event, for resumable sessions (see `resumable`)."""
        if not self.resumable:
            return None
        assert self._events is not None
        event_id = await self._events.store(stream.store_id, None, None)
        return Frame(event_id, "", False, self._retry_ms)

    async def replay(self, last_event_id: str) -> tuple[str, list[ReplayedEvent]] | None:
        if self._events is None:
            return None
        return await self._events.replay(last_event_id, self.tag)


SessionHook = Callable[[SessionEntry[LegacySession], str], None]


class LegacyEndpoint:
    """Serves the session-era wire for every tenant; holds the session table."""

    def __init__(
        self,
        *,
        table: SessionTable[LegacySession],
        task_group: anyio.abc.TaskGroup,
        json_response: bool,
        events: EventLog | None,
        retry_ms: int | None,
        keepalive: KeepAlive,
        loop: Loop,
        observer_for: Callable[[SessionEntry[LegacySession]], RequestObserver | None] | None = None,
        on_created: Callable[[SessionEntry[LegacySession]], None] | None = None,
        on_ended: SessionHook | None = None,
        wake: Callable[[float | None], None] | None = None,
    ) -> None:
        self.table = table
        self._tg = task_group
        self._json_response = json_response
        self._events = events
        self._retry_ms = retry_ms
        self.keepalive = keepalive
        self._loop = loop
        self._observer_for = observer_for
        self._on_created = on_created
        self._on_ended = on_ended
        self._wake = wake
        self.open_streams = 0

    # -- lifecycle --------------------------------------------------------------------------------

    def end_session(self, session_id: str, reason: str) -> bool:
        """The one place a session ends, whatever the cause. Idempotent; returns whether it was live."""
        live = self.table.get(session_id)
        # Only a session announced by `on_created` (it got past OPENING) is announced as ended.
        announced = live is not None and live.state is not SessionState.OPENING
        entry = self.table.remove(session_id)
        if entry is None:
            return False
        entry.value.close()
        entry.value.host.release()
        if self._on_ended is not None and announced:
            self._on_ended(entry, reason)
        return True

    def wake(self, deadline: float | None = None) -> None:
        """A deadline was queued (or drains began): the reaper looks again if it would wake later."""
        if self._wake is not None:
            self._wake(deadline)

    def finish_exchange(self, entry: SessionEntry[LegacySession]) -> None:
        """An exchange of the session ended; a session draining for a removed tenant may end with it."""
        if self.table.end(entry, self._loop.clock()):
            self.end_session(entry.session_id, "token_removed")
        elif entry.queued_deadline is not None:
            self.wake(entry.queued_deadline)

    def count_for(self, tenant_id: str) -> int:
        return self.table.count_for(tenant_id)

    def follow_tenant(self, tenant_id: str, *, close: bool, deadline: float, end_when_idle: bool, reason: str) -> None:
        """End the tenant's sessions now (`close`), or drain them until `deadline` (see `TenantSessions`)."""
        ends: list[str] = []
        for entry in self.table:
            if entry.tenant_id != tenant_id:
                continue
            # An opening session has not answered initialize yet: nothing to drain, it just ends.
            ends_now = close or entry.state is SessionState.OPENING
            if ends_now or self.table.drain(entry, deadline, end_when_idle=end_when_idle):
                ends.append(entry.session_id)
        for session_id in ends:
            self.end_session(session_id, reason)
        self.wake(deadline)

    def end_all(self, reason: str) -> None:
        for entry in self.table:
            self.end_session(entry.session_id, reason)

    def reap(self, now: float) -> int:
        expired = self.table.expired(now)
        for entry in expired:
            # A draining session past its drain deadline did not end for being idle (it may be busy).
            drained = entry.drain_deadline is not None and entry.drain_deadline <= now
            self.end_session(entry.session_id, "drain_timeout" if drained else "idle_timeout")
        return len(expired)

    # -- HTTP methods -----------------------------------------------------------------------------

    async def post(
        self, request: HttpRequest, message: Message, principal: Principal, send: Send, *, accepts_sse: bool
    ) -> None:
        json_mode = self._json_response
        if not json_mode and not accepts_sse:
            raise ProtocolError(
                406,
                "Not Acceptable: client must accept both application/json and text/event-stream",
                reason="Accept lacks text/event-stream",
            )
        if message.kind == "request" and message.method == "initialize":
            await self._initialize(request, message, principal, send, json_mode=json_mode)
            return
        if message.method == "initialize":
            raise ProtocolError(400, "initialize must be a request", reason="initialize sent as a notification")
        entry = self._session_for(request, principal, message.id if message.kind == "request" else None)
        session = entry.value
        self.table.begin(entry)
        try:
            if message.kind == "request":
                assert message.id is not None and message.method is not None
                await self._answer(request, message, session, send, json_mode=json_mode)
                return
            if message.kind == "notification":
                assert message.method is not None
                metadata = ServerMessageMetadata(request_context=request, can_send_request=False)
                transport = TransportContext(kind="streamable-http", can_send_request=False, headers=request.headers)
                session.dispatcher.start_notification(message.method, message.params, metadata, transport)
            else:
                raw = message.raw
                session.dispatcher.resolve(message.id, raw.get("result"), raw.get("error"))
            await send_empty(send, 202)
        finally:
            self.finish_exchange(entry)

    async def get(self, request: HttpRequest, principal: Principal, receive: Receive, send: Send) -> None:
        entry = self._session_for(request, principal, None)
        session = entry.value
        last_event_id = request.headers.get("last-event-id")
        target: OutboundStream | None = session.standalone
        replayed: list[ReplayedEvent] = []
        if last_event_id is not None:
            if not is_visible_ascii(last_event_id, max_length=512):
                raise ProtocolError(
                    400, "Bad Request: malformed Last-Event-ID header", reason="malformed Last-Event-ID"
                )
            found = await session.replay(last_event_id)
            if found is not None:
                stream_id, replayed = found
                if stream_id != session.standalone.store_id:
                    # A request's stream: live if its handler is still running, else replay only.
                    target = session.streams.get(stream_id)
        standalone = target is session.standalone
        if standalone:
            if session.get_connected:
                raise ProtocolError(
                    409,
                    "Conflict: only one standalone SSE stream is allowed per session",
                    reason="second concurrent GET stream",
                )
            session.get_connected = True
        self.table.begin(entry)
        self.open_streams += 1
        try:
            frames = target.attach() if target is not None and not target.finished else None
            if frames is not None and last_event_id is not None and replayed:
                # Read again now that the connection is attached: anything stored in between is
                # either in this replay or queued on the connection, never lost (duplicates are skipped).
                found = await session.replay(last_event_id)
                replayed = found[1] if found is not None else replayed
            headers = [*SSE_HEADERS, (SESSION_HEADER, session.session_id.encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for event in replayed:
                body = encode_event(event.data, event="message" if event.data else None, event_id=event.event_id)
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if frames is None:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            assert target is not None
            priming = await session.priming_frame(target)
            if priming is not None:
                body = encode_event("", event=None, event_id=priming.event_id, retry_ms=priming.retry_ms)
                await send({"type": "http.response.body", "body": body, "more_body": True})
            skip = frozenset(event.event_id for event in replayed)
            ending = False

            async def send_body(message: Any) -> None:
                nonlocal ending
                ending = ending or not message.get("more_body", False)
                await send(message)

            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    await wait_for_disconnect(receive)
                    # The disconnect that completing the response causes is no reason to cancel:
                    # hypercorn (Trio) delivers it while still inside the final send, and a send
                    # cancelled there leaves its keep-alive connection half-recycled until shutdown.
                    if not ending:
                        tg.cancel_scope.cancel()

                tg.start_soon(watch)
                await pump(frames, send_body, keepalive=self.keepalive.interval, skip=skip)
                tg.cancel_scope.cancel()
        finally:
            if target is not None:
                target.detach()
            if standalone:
                session.get_connected = False
            self.open_streams -= 1
            self.finish_exchange(entry)

    async def delete(self, request: HttpRequest, principal: Principal, send: Send) -> None:
        entry = self._session_for(request, principal, None)
        self.end_session(entry.session_id, "deleted")
        await send_empty(send, 200)

    # -- internals --------------------------------------------------------------------------------

    def _session_for(
        self, request: HttpRequest, principal: Principal, request_id: str | int | None
    ) -> SessionEntry[LegacySession]:
        raw = request.headers.get("mcp-session-id")
        if raw is None:
            raise missing_session()
        entry = self.table.lookup(check_session_id(raw), principal.owner)
        if entry is None:
            raise session_not_found(request_id)
        return entry

    @staticmethod
    def _metadata(
        request: HttpRequest, session: LegacySession, stream: OutboundStream, *, can_send: bool
    ) -> tuple[ServerMessageMetadata, TransportContext]:
        transport = TransportContext(kind="streamable-http", can_send_request=can_send, headers=request.headers)
        if not (can_send and session.resumable):
            # As the SDK's transport: a stream may be closed for polling (SEP-1699) only when the
            # client can resume it. Otherwise the closing would take the answer away with it.
            return ServerMessageMetadata(request_context=request, can_send_request=can_send), transport

        async def close_sse_stream() -> None:
            await stream.close_connection()

        async def close_standalone_sse_stream() -> None:
            session.standalone.detach()

        metadata = ServerMessageMetadata(
            request_context=request,
            close_sse_stream=close_sse_stream,
            close_standalone_sse_stream=close_standalone_sse_stream,
            can_send_request=can_send,
        )
        return metadata, transport

    async def _answer(
        self, request: HttpRequest, message: Message, session: LegacySession, send: Send, *, json_mode: bool
    ) -> None:
        assert message.id is not None and message.method is not None
        if session.closed:
            raise session_not_found(message.id)
        stream = session.new_stream(json_only=json_mode)
        metadata, transport = self._metadata(request, session, stream, can_send=not json_mode)
        if json_mode:
            # Shielded: in this era a dropped connection is not a cancellation (the handler still
            # finishes); `notifications/cancelled` and the session's end cancel it from inside. The
            # request's scope is the shield: a JSON answer is only recorded, with no await to guard.
            await session.dispatcher.run_request(
                message.id, message.method, message.params, stream, metadata, transport, shield=True
            )
            # A request cancelled meanwhile (its server is cancelling it) writes nothing more.
            await self._loop.backend.checkpoint_if_cancelled()
            await _answer_json(stream.answer, send, message.id)
            return
        priming = await session.priming_frame(stream)
        if session.closed:
            # Ended while the priming event was stored (DELETE, expiry, token removal): gone now.
            raise session_not_found(message.id)
        # The handler runs here, in the request's task, writing its frames straight to this response.
        # Admitted before the first send: a session ending meanwhile cancels it like any in flight.
        admitted = session.dispatcher.admit(message.id, message.params, stream, metadata, transport)
        writer = ResponseWriter(send, self._loop.backend)
        stream.write_to(writer)
        self.keepalive.register(writer)
        self.open_streams += 1
        try:
            # Shielded, as for JSON answers: a dropped connection does not cancel the handler.
            with self._loop.backend.create_cancel_scope(shield=True):
                await writer.start(SSE_HEADERS)
                if priming is not None:
                    await writer.write(priming.encode())
                await session.dispatcher.run_admitted(message.method, message.params, admitted)
        finally:
            # The handler has settled. Its final frame detached the writer, unless the session's
            # end dropped that frame: then it is detached here, and the response ends below.
            if stream.writer is writer:
                stream.detach()
            self.keepalive.unregister(writer)
            self.open_streams -= 1
        await self._loop.backend.checkpoint_if_cancelled()
        await writer.end()

    async def _initialize(
        self, request: HttpRequest, message: Message, principal: Principal, send: Send, *, json_mode: bool
    ) -> None:
        assert message.id is not None
        host = await principal.host()
        session_id = secrets.token_urlsafe(24)
        session = LegacySession(
            session_id, host, self._tg, self._loop, events=self._events, retry_ms=self._retry_ms, observer=None
        )
        entry = self.table.open(
            session_id, owner=principal.owner, tenant_id=principal.tenant_id, value=session, now=self._loop.clock()
        )
        host.sessions += 1
        if self._observer_for is not None:
            session.dispatcher.observer = self._observer_for(entry)
        try:
            stream = session.new_stream(json_only=True)
            metadata, transport = self._metadata(request, session, stream, can_send=False)
            await session.dispatcher.run_request(message.id, "initialize", message.params, stream, metadata, transport)
            frame = stream.answer
            answer = json.loads(frame.data) if frame is not None else None
            if session.closed:
                # Ended while opening (its token was removed or updated): an answer may have come
                # first, but there is no session left to activate.
                answer = None
            if answer is None or "error" in answer:
                # A refused opening request leaves nothing behind.
                self.end_session(session_id, "initialize_failed")
                error = answer or error_message(message.id, CONNECTION_CLOSED, "Session closed")
                code = error["error"].get("code")
                status = 400 if code in (INVALID_REQUEST, -32602, -32700) else 200
                await send_json(send, status, error)
                return
            self.table.activate(entry)
            if self._on_created is not None:
                self._on_created(entry)
            headers = [(SESSION_HEADER, session_id.encode())]
            if json_mode:
                await _send_json_text(send, frame.data if frame is not None else "", headers)
            else:
                body = encode_event(frame.data if frame is not None else "")
                await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})
                await send({"type": "http.response.body", "body": body, "more_body": False})
        except BaseException:
            self.end_session(session_id, "initialize_failed")
            raise
        finally:
            self.finish_exchange(entry)


async def _answer_json(frame: Frame | None, send: Send, request_id: str | int) -> None:
    if frame is None:
        # The session ended under the request (DELETE from another connection, shutdown).
        await send_json(send, 200, error_message(request_id, CONNECTION_CLOSED, "Session closed"))
        return
    await _send_json_text(send, frame.data)


async def _send_json_text(send: Send, data: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = data.encode()
    response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if headers:
        response_headers.extend(headers)
    await send({"type": "http.response.start", "status": 200, "headers": response_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
