"""The legacy-era (2024-11-05 ... 2025-11-25) HTTP handlers: initialize, POST, GET, DELETE, resumability,
and the session lifecycle that goes with them.

The session table (`_core.session_table.SessionTable`) decides admission, ownership and expiry; sessions
end only through `LegacyEndpoint.end_session`. A request runs in the task of the POST that carries it
(`_legacy.answering`), and its answer is written by that POST, in one direction: handler,
dispatcher, stream, response. The raw ASGI writes are in `_legacy.responses`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

import anyio.abc
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from pydantic import ValidationError

from .._auth.principal import Principal
from .._core.asgi import (
    HttpRequest,
    Receive,
    Send,
    send_empty,
    send_json,
    send_json_bytes,
)
from .._core.errors import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, ProtocolError
from .._core.http import check_session_id, is_visible_ascii, missing_session, session_not_found
from .._core.jsonrpc import Message, error_message
from .._core.live_session import LiveAction, LiveInput
from .._core.session_table import SessionEntry, SessionTable
from .._core.states import SessionState
from .._io.loop import Loop
from .._io.response import KeepAlive
from .._kernel.context import RequestObserver
from .._kernel.hosting import ServerHost
from .._ports.replay import EventLog, ReplayedEvent
from .answering import OpenStreams, RequestAnswerer
from .fleet import SessionFleet
from .responses import CONNECTION_CLOSED, SESSION_HEADER, send_sse_once, send_stream
from .session import LegacySession, request_metadata
from .streams import OutboundStream

# `Principal` and `LegacySession` are imported from here by the app.
__all__ = ["LegacyEndpoint", "LegacySession", "Principal"]

_REFUSE_GONE = LiveAction.REFUSE_GONE

SessionHook = Callable[[SessionEntry[LegacySession], str], None]
Entry = SessionEntry[LegacySession]
RequestId = str | int | None


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
        app: object = None,
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
        self.streams = OpenStreams()
        self._answerer = RequestAnswerer(loop=loop, keepalive=keepalive, streams=self.streams, app=app)
        # Set by the app when the sessions are shared by a fleet (`_legacy.fleet`).
        self.fleet: SessionFleet | None = None

    @property
    def open_streams(self) -> int:
        """SSE responses open: GET streams and streamed answers."""
        return self.streams.count

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
        if self.fleet is not None:
            self.fleet.ended(entry, reason, announced=announced)
        return True

    def wake(self, deadline: float | None = None) -> None:
        """A deadline was queued (or drains began): the reaper looks again if it would wake later."""
        if self._wake is not None:
            self._wake(deadline)

    def finish_exchange(self, entry: SessionEntry[LegacySession]) -> None:
        """An exchange ended (a session draining for a removed tenant may end with it); the reaper hears
        of a deadline queued now, never again of one it already knows."""
        queued = entry.queued_deadline
        if self.table.end(entry, self._loop.clock()):
            self.end_session(entry.session_id, "token_removed")
        elif entry.queued_deadline != queued:
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
        self,
        request: HttpRequest,
        message: Message,
        principal: Principal,
        send: Send,
        *,
        accepts_sse: bool,
        enclosed: bool = False,
    ) -> None:
        """One message of a session. `enclosed`: the app runs it inside a cancel scope of its own (a
        token's hold), which a scope the server lends would not shield it from (`RequestAnswerer`)."""
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
        request_id = message.id if message.kind == "request" else None
        entry = self._session_for(request, principal, request_id) or await self._adopt(request, principal, request_id)
        session = entry.value
        self.table.begin(entry)
        try:
            if message.kind == "request":
                assert message.id is not None and message.method is not None
                await self._answerer.answer(request, message, session, send, json_mode=json_mode, enclosed=enclosed)
                return
            if message.kind == "notification":
                assert message.method is not None
                metadata = ServerMessageMetadata(request_context=request, can_send_request=False)
                transport = TransportContext(kind="streamable-http", can_send_request=False, headers=request.headers)
                session.dispatcher.start_notification(message.method, message.params, metadata, transport)
            else:
                raw = message.raw
                resolved = session.dispatcher.resolve(message.id, raw.get("result"), raw.get("error"))
                if not resolved and self.fleet is not None:
                    await self.fleet.forward_answer(entry, raw)  # the request it answers waits elsewhere
            await send_empty(send, 202)
        finally:
            self.finish_exchange(entry)

    async def get(self, request: HttpRequest, principal: Principal, receive: Receive, send: Send) -> None:
        entry = self._session_for(request, principal, None) or await self._adopt(request, principal, None)
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
                    target = session.outbound.by_id.get(stream_id)
        standalone = target is session.standalone
        if standalone:
            action = session.outbound.step(LiveInput.LISTEN)
            if action is LiveAction.REFUSE_CONFLICT:
                raise ProtocolError(
                    409,
                    "Conflict: only one standalone SSE stream is allowed per session",
                    reason="second concurrent GET stream",
                )
            if action is _REFUSE_GONE:
                raise session_not_found(None)  # ended while its events were read
        self.table.begin(entry)
        attached = None
        try:
            with self.streams:  # counted in stats while open
                attached = target.attach() if target is not None else None
                priming = None
                if attached is not None:
                    if last_event_id is not None and replayed:
                        # Read again now that the connection is attached: anything stored in between is
                        # either in this replay or queued on the connection, never lost (duplicates are skipped).
                        found = await session.replay(last_event_id)
                        replayed = found[1] if found is not None else replayed
                    assert target is not None
                    priming = await session.priming_frame(target)
                await send_stream(
                    send,
                    receive,
                    session_id=session.session_id,
                    replayed=replayed,
                    priming=priming,
                    frames=attached[1] if attached is not None else None,
                    keepalive=self.keepalive.interval,
                )
        finally:
            if target is not None and attached is not None:
                target.detach(attached[0])
            if standalone:
                session.outbound.step(LiveInput.UNLISTEN)
            self.finish_exchange(entry)

    async def delete(self, request: HttpRequest, principal: Principal, send: Send) -> None:
        entry = self._session_for(request, principal, None) or await self._adopt(request, principal, None)
        if self.fleet is not None:
            # Forgotten before the answer: no worker adopts it again, and every copy ends.
            await self.fleet.end_everywhere(entry.session_id, entry.owner, entry.tenant_id)
        self.end_session(entry.session_id, "deleted")
        await send_empty(send, 200)

    # -- internals --------------------------------------------------------------------------------

    def _session_for(
        self, request: HttpRequest, principal: Principal, request_id: str | int | None
    ) -> SessionEntry[LegacySession] | None:
        """The session if this worker holds it; else None in a fleet (see `_adopt`), 404 otherwise."""
        raw = request.headers.get("mcp-session-id")
        if raw is None:
            raise missing_session()
        entry = self.table.lookup(raw, principal.owner)  # found: an id issued here, so only a miss is checked
        if entry is None and check_session_id(raw) and self.fleet is None:  # (malformed: 400, not 404)
            raise session_not_found(request_id)
        return entry

    async def _adopt(self, request: HttpRequest, principal: Principal, request_id: RequestId) -> Entry:
        """A session another worker opened: rebuilt here from its record if the caller owns it exactly,
        else 404 (never 403: a session id proves nothing)."""
        fleet = self.fleet
        session_id = request.headers.get("mcp-session-id") or ""
        if fleet is None or self.table.get(session_id) is not None:
            raise session_not_found(request_id)  # held here, by another principal (or ending)
        async with fleet.adoption(session_id) as record:
            if record is None or not fleet.owns(record, principal.owner, principal.tenant_id):
                raise session_not_found(request_id)
            with fleet.bounded("session directory"):
                await fleet.listen(principal.tenant_id)
            host = await principal.host()
            held = self.table.get(session_id)  # adopted meanwhile, by a concurrent request of this owner
            if held is not None:
                return self._session_for(request, principal, request_id) or _not_found(request_id)
            session = self._new_session(session_id, host, record.stream_tag or None)  # its events stay its own
            try:
                session.restore(record.protocol_version, record.initialize_params)
            except ValidationError:
                raise session_not_found(request_id) from None
            entry = self._admit(session, principal)
            fleet.join(entry)
            self.table.activate(entry)
        if self._on_created is not None:
            self._on_created(entry)
        self.finish_exchange(entry)  # opening counted as an exchange
        return entry

    def _new_session(self, session_id: str, host: ServerHost, tag: str | None) -> LegacySession:
        events, retry_ms = self._events, self._retry_ms
        return LegacySession(
            session_id, host, self._tg, self._loop, events=events, retry_ms=retry_ms, observer=None, tag=tag
        )

    def _admit(self, session: LegacySession, principal: Principal) -> SessionEntry[LegacySession]:
        owner, tenant_id, now = principal.owner, principal.tenant_id, self._loop.clock()
        entry = self.table.open(session.session_id, owner=owner, tenant_id=tenant_id, value=session, now=now)
        session.host.sessions += 1
        if self._observer_for is not None:
            session.dispatcher.observer = self._observer_for(entry)
        return entry

    async def _initialize(
        self, request: HttpRequest, message: Message, principal: Principal, send: Send, *, json_mode: bool
    ) -> None:
        assert message.id is not None
        host = await principal.host()
        session_id = secrets.token_urlsafe(24)
        session = self._new_session(session_id, host, None)
        entry = self._admit(session, principal)
        try:
            if self.fleet is not None:
                await self.fleet.reserve(entry)  # the tenant's session cap, counted across the fleet
            stream = session.outbound.new_stream(json_only=True)
            metadata, transport = request_metadata(request, session, stream, can_send=False)
            await session.dispatcher.run_request(message.id, "initialize", message.params, stream, metadata, transport)
            body = stream.answer
            answer = json.loads(body) if body is not None else None
            if session.closed:
                # Ended while opening (its token was removed or updated): an answer may have come
                # first, but there is no session left to activate.
                answer = None
            if answer is None or "error" in answer:
                # A refused opening request leaves nothing behind.
                self.end_session(session_id, "initialize_failed")
                error = answer or error_message(message.id, CONNECTION_CLOSED, "Session closed")
                code = error["error"].get("code")
                status = 400 if code in (INVALID_REQUEST, INVALID_PARAMS, PARSE_ERROR) else 200
                await send_json(send, status, error)
                return
            if self.fleet is not None:
                await self.fleet.record(entry, message.params)  # before the answer leaves
                self.fleet.join(entry)
            self.table.activate(entry)
            if self._on_created is not None:
                self._on_created(entry)
            headers = [(SESSION_HEADER, session_id.encode())]
            assert body is not None  # an answer came, without an error
            if json_mode:
                await send_json_bytes(send, 200, body, headers)
            else:
                await send_sse_once(send, body.decode(), headers)
        except BaseException:
            self.end_session(session_id, "initialize_failed")
            raise
        finally:
            self.finish_exchange(entry)


def _not_found(request_id: RequestId) -> Entry:
    raise session_not_found(request_id)
